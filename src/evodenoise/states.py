"""Binary states, packed: 64 latents per int64 word.

A set K_n of S states for each of N patches is an (N, S, W) int64 tensor with
W = ceil(H / 64); duplicates are found by sorting packed words, not by Python sets.
"""

from __future__ import annotations

import torch

WORD = 64


def n_words(n_latents: int) -> int:
    return -(-n_latents // WORD)


_CONSTS: dict = {}


def const_arange(n: int, device, dtype=torch.int64) -> torch.Tensor:
    """arange(n), made once per (n, device, dtype) in eager mode: no small tensor per call."""
    if torch.compiler.is_compiling():
        return torch.arange(n, device=device, dtype=dtype)
    key = (n, str(device), dtype)
    if key not in _CONSTS:
        _CONSTS[key] = torch.arange(n, device=device, dtype=dtype)
    return _CONSTS[key]


def pack(s: torch.Tensor) -> torch.Tensor:
    """Binary states (..., H) (any dtype, values 0/1) -> packed (..., W) int64.

    Built byte by byte (uint8 shifts) and reinterpreted as int64 words; the byte order is
    the machine's, which only matters for :func:`unpack`, its exact inverse.
    """
    h = s.shape[-1]
    w = n_words(h)
    bits = s.to(torch.uint8)
    if w * WORD != h:
        bits = torch.nn.functional.pad(bits, (0, w * WORD - h))
    bits = bits.reshape(*s.shape[:-1], w * 8, 8) << const_arange(8, s.device, torch.uint8)
    return bits.sum(-1, dtype=torch.uint8).view(torch.int64)


def cached_const(key, make):
    """A constant tensor made once per key in eager mode (no small tensor per call)."""
    if torch.compiler.is_compiling():
        return make()
    if key not in _CONSTS:
        _CONSTS[key] = make()
    return _CONSTS[key]


def row_ids(b: int, device) -> torch.Tensor:
    """arange(b) as a column (b, 1): the first index of a per-row gather x[row_ids(b), idx]."""
    return cached_const(("rows", b, str(device)), lambda: torch.arange(b, device=device)[:, None])


def unpack(packed: torch.Tensor, n_latents: int, dtype=torch.float32) -> torch.Tensor:
    """Packed (..., W) int64 -> states (..., H) of ``dtype``: one word against its H one-bit
    masks, more words by shifts of each byte."""
    if packed.shape[-1] == 1:
        masks = cached_const(
            ("masks", n_latents, str(packed.device)),
            lambda: 1 << torch.arange(n_latents, device=packed.device),
        )
        return ((packed & masks) != 0).to(dtype)
    by = packed.contiguous().view(torch.uint8)  # (..., W·8)
    bits = (by.unsqueeze(-1) >> const_arange(8, packed.device, torch.uint8)) & 1  # (..., W·8, 8)
    return bits.flatten(-2)[..., :n_latents].to(dtype)


def duplicate_mask(packed: torch.Tensor) -> torch.Tensor:
    """(B, M, W) packed states -> (B, M) bool, True for every repeat of an earlier-sorted state.

    Exactly one copy of each distinct state per row is left unmarked.
    """
    b, m, w = packed.shape
    if w == 1:
        key, order = torch.sort(packed[..., 0], dim=1, stable=True)
        same_as_prev = key == key.roll(1, 1)  # (B, M); column 0 compares with the last
    else:  # lexicographic sort over the words: stable sorts from the last word to the first
        order = const_arange(m, packed.device).expand(b, m)
        for k in reversed(range(w)):
            _, idx = torch.sort(torch.gather(packed[..., k], 1, order), dim=1, stable=True)
            order = torch.gather(order, 1, idx)
        key = torch.gather(packed, 1, order[..., None].expand(b, m, w))
        same_as_prev = (key == key.roll(1, 1)).all(-1)
    # the first of a run is no repeat (column 0 of a sorted row: its own run's first)
    later = cached_const(
        ("later", m, str(packed.device)), lambda: const_arange(m, packed.device) > 0
    )
    dup_sorted = same_as_prev & later
    return dup_sorted.scatter(1, order, dup_sorted)  # back to the original order


def init_states(
    n: int, n_states: int, n_latents: int, gen: torch.Generator, device, chunk: int = 4096
) -> torch.Tensor:
    """S distinct random sparse states for each of n points: packed (n, S, W).

    Each state starts with up to two active latents at random positions (one when they
    coincide); repeats within a row are redrawn as dense random states (bit probability
    doubling up to 1/2) until no row has any. Points are drawn in chunks, so memory beyond the
    result stays O(chunk·S·H).
    """
    out = torch.empty(n, n_states, n_words(n_latents), dtype=torch.int64, device=device)
    for c in range(0, n, chunk):
        m = min(chunk, n - c)
        pos = torch.randint(0, n_latents, (m, n_states, 2), generator=gen, device=device)
        s = torch.zeros(m, n_states, n_latents, dtype=torch.uint8, device=device)
        s.scatter_(2, pos, 1)
        part = pack(s)
        p = 2.0 / n_latents
        while (dup := duplicate_mask(part)).any():
            p = min(0.5, 2 * p)
            k = int(dup.sum())
            part[dup] = pack(torch.rand(k, n_latents, generator=gen, device=device) < p)
        out[c : c + m] = part
    return out
