"""The evolutionary E-step: improve each data point's set K_n of S distinct binary states.

Everything is batched over data points (no Python loop over points or states). States are
stored packed, 64 latents per int64 word, so K for all patches is (N, S, W) with
W = ceil(H / 64), and duplicates are found by sorting packed words, not by Python sets.

One E-step on a batch of points (DESIGN.md §1):
1. re-score K_n under the current parameters;
2. for each generation: select parents from the current population (per data point), make
   children by mutation, score them; the children are the next generation's population;
3. drop every candidate that duplicates another (children among themselves and against K_n);
4. keep the S best of K_n ∪ children by log-joint: no point's free energy can go down.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Config
from .model import Model

WORD = 64


def n_words(n_latents: int) -> int:
    return -(-n_latents // WORD)


_TABLES: dict = {}


def _byte_table(device) -> torch.Tensor:
    """(256, 8) float table: the bits of each byte value, least significant first."""
    key = ("bits", str(device))
    if key not in _TABLES:
        v = torch.arange(256, device=device)
        _TABLES[key] = ((v[:, None] >> torch.arange(8, device=device)) & 1).float()
    return _TABLES[key]


def _bit_weights(device) -> torch.Tensor:
    """(8,) uint8 powers of two, cached per device (no host-to-device copy per call)."""
    key = ("weights", str(device))
    if key not in _TABLES:
        _TABLES[key] = (torch.ones(8, dtype=torch.uint8, device=device)
                        << torch.arange(8, dtype=torch.uint8, device=device))
    return _TABLES[key]


def pack(s: torch.Tensor) -> torch.Tensor:
    """Binary states (..., H) (any dtype, values 0/1) -> packed (..., W) int64.

    Built byte by byte (uint8 arithmetic) and reinterpreted as int64 words; the byte order is
    the machine's, which only matters for :func:`unpack`, its exact inverse.
    """
    h = s.shape[-1]
    w = n_words(h)
    bits = s.to(torch.uint8)
    if w * WORD != h:
        bits = torch.nn.functional.pad(bits, (0, w * WORD - h))
    bits = bits.reshape(*s.shape[:-1], w * 8, 8)
    return (bits * _bit_weights(s.device)).sum(-1, dtype=torch.uint8).view(torch.int64)


def unpack(packed: torch.Tensor, n_latents: int, dtype=torch.float32) -> torch.Tensor:
    """Packed (..., W) int64 -> states (..., H) of ``dtype`` (one table look-up per byte)."""
    by = packed.contiguous().view(torch.uint8).int()  # (..., W·8)
    bits = torch.nn.functional.embedding(by, _byte_table(packed.device)).flatten(-2)
    return bits[..., :n_latents].to(dtype)


def flip_bits(packed: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Packed states (..., W) with one bit each flipped: bits (...) -> (..., W)."""
    one = torch.ones((), dtype=torch.int64, device=packed.device)
    word = bits // WORD
    mask = one << (bits % WORD)
    out = packed.clone()
    out.scatter_(-1, word[..., None], torch.gather(packed, -1, word[..., None]) ^ mask[..., None])
    return out


def get_bits(packed: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Values (0/1, int64) of bit ``bits`` (...) of packed states (..., W)."""
    word = torch.gather(packed, -1, (bits // WORD)[..., None])[..., 0]
    return (word >> (bits % WORD)) & 1


def duplicate_mask(packed: torch.Tensor) -> torch.Tensor:
    """(B, M, W) packed states -> (B, M) bool, True for every repeat of an earlier-sorted state.

    Exactly one copy of each distinct state per row is left unmarked.
    """
    b, m, w = packed.shape
    order = torch.arange(m, device=packed.device).expand(b, m)
    # Lexicographic sort over the words: stable sorts from the last word to the first.
    for k in reversed(range(w)):
        key = torch.gather(packed[..., k], 1, order)
        _, idx = torch.sort(key, dim=1, stable=True)
        order = torch.gather(order, 1, idx)
    sorted_words = torch.gather(packed, 1, order[..., None].expand(b, m, w))
    same_as_prev = (sorted_words[:, 1:] == sorted_words[:, :-1]).all(-1)  # (B, M-1)
    dup_sorted = torch.cat([torch.zeros_like(same_as_prev[:, :1]), same_as_prev], dim=1)
    dup = torch.empty_like(dup_sorted)
    dup.scatter_(1, order, dup_sorted)
    return dup


def init_states(n: int, n_states: int, n_latents: int, gen: torch.Generator, device,
                chunk: int = 4096) -> torch.Tensor:
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
        out[c:c + m] = part
    return out


@dataclass
class EStepOut:
    """The new K (packed, sorted by log-joint, best first) with its scores.

    ``log_joint`` and ``sqerr`` are (B, S); ``f`` is each point's free-energy term
    logsumexp_s log p(y_n, s) (B,).
    """

    states: torch.Tensor
    log_joint: torch.Tensor
    sqerr: torch.Tensor

    @property
    def q(self) -> torch.Tensor:
        return torch.softmax(self.log_joint, dim=1)

    @property
    def f(self) -> torch.Tensor:
        return torch.logsumexp(self.log_joint, dim=1)


@dataclass
class _Population:
    """Packed states (B, M, W) with first-layer pre-activations (B, M, width_1), log-priors and
    log-joints (B, M)."""

    states: torch.Tensor
    a: torch.Tensor
    prior: torch.Tensor
    lj: torch.Tensor

    def take(self, idx: torch.Tensor) -> "_Population":
        return _Population(_take(self.states, idx), _take(self.a, idx), _take(self.prior, idx),
                           _take(self.lj, idx))


def _select_parents(lj: torch.Tensor, n_parents: int, mode: str, gen: torch.Generator):
    """Parent indices (B, P) into a population with log-joints lj (B, M), per data point."""
    if mode == "best":
        return torch.topk(lj, n_parents, dim=1).indices
    if mode == "uniform":
        r = torch.rand(lj.shape, generator=gen, device=lj.device)
        return torch.topk(r, n_parents, dim=1).indices
    # Fitness-proportional without replacement, normalised per data point; fitness is the
    # log-joint shifted so the row's worst member has weight 1 (all weights positive).
    fitness = lj - lj.min(dim=1, keepdim=True).values + 1.0
    return torch.multinomial(fitness, n_parents, replacement=False, generator=gen)


def distinct_bits(shape: tuple[int, ...], n_latents: int, k: int, gen: torch.Generator,
                  device) -> torch.Tensor:
    """k distinct random latent indices for each entry of ``shape``: (*shape, k).

    Floyd's algorithm (a uniformly random k-subset from k draws): for j = H−k … H−1 draw t in
    [0, j] and take j instead when t was already taken. k draws instead of H, no sort.
    """
    taken: list[torch.Tensor] = []
    for j in range(n_latents - k, n_latents):
        t = torch.randint(0, j + 1, shape, generator=gen, device=device)
        if taken:
            seen = (torch.stack(taken) == t).any(0)
            t = torch.where(seen, torch.full_like(t, j), t)
        taken.append(t)
    return torch.stack(taken, -1)


def _bitflip(model: Model, parents: _Population, n_children: int, gen: torch.Generator):
    """Children flipping C distinct bits of each parent, built packed: pre-activation and
    log-prior of a child are its parent's plus or minus the flipped latent's contribution, so
    no child is ever unpacked. Returns packed (B, P·C, W), a (B, P·C, width_1), prior (B, P·C)."""
    b, p, w = parents.states.shape
    h = model.pi.numel()
    bits = distinct_bits((b, p), h, n_children, gen, parents.a.device)  # (B, P, C)
    par = parents.states[:, :, None, :].expand(b, p, n_children, w)
    sign = (1 - 2 * get_bits(par, bits)).to(parents.a.dtype)  # +1 sets a bit, -1 clears it
    logit, _ = model.prior_terms()
    cols = model.decoder.layers[0].weight.T[bits]  # (B, P, C, width_1)
    a = torch.addcmul(parents.a[:, :, None, :], sign[..., None], cols)
    prior = parents.prior[:, :, None] + sign * logit[bits]
    return flip_bits(par, bits).flatten(1, 2), a.flatten(1, 2), prior.flatten(1, 2)


def _recombine(model: Model, parents: _Population, cfg: Config, gen: torch.Generator):
    """Children by ``sparseflip`` or ``crossover`` (on unpacked parents): same returns as
    :func:`_bitflip`."""
    h = cfg.n_latents
    par = unpack(parents.states, h)  # (B, P, H)
    b, p, _ = par.shape
    c = cfg.n_children
    dev = par.device
    if cfg.mutation == "crossover":
        # Each parent i mates with C random partners j != i at a random cut point, then one
        # random bit of the child is flipped.
        off = torch.randint(1, p, (b, p, c), generator=gen, device=dev)
        partner = (torch.arange(p, device=dev)[None, :, None] + off) % p
        mates = torch.gather(par[:, None].expand(b, p, p, h), 2,
                             partner[..., None].expand(b, p, c, h))  # (B, P, C, H)
        cut = torch.randint(1, max(h, 2), (b, p, c, 1), generator=gen, device=dev)
        head = torch.arange(h, device=dev) < cut
        children = torch.where(head, par[:, :, None, :], mates)
        flip = torch.randint(0, h, (b, p, c, 1), generator=gen, device=dev)
        children.scatter_(3, flip, 1 - torch.gather(children, 3, flip))
    else:
        # sparseflip: each bit flips with a probability depending on its value, so that one
        # bit flips on average and the expected number of active bits moves towards H·mean(π).
        target = h * model.pi.mean()
        active = par.sum(-1, keepdim=True)  # (B, P, 1)
        n_off = ((1 - target + active) / 2).clamp(0, 1)  # expected 1->0 flips
        n_on = ((1 + target - active) / 2).clamp(0, 1)   # expected 0->1 flips
        prob = torch.where(par > 0, n_off / active.clamp(min=1), n_on / (h - active).clamp(min=1))
        flips = torch.rand(b, p, c, h, generator=gen, device=dev) < prob[:, :, None, :]
        children = torch.where(flips, 1 - par[:, :, None, :], par[:, :, None, :])
    children = children.flatten(1, 2)
    return pack(children), model.decoder.first(children), model.log_prior(children)


@torch.no_grad()
def evolve(model: Model, y: torch.Tensor, obs: torch.Tensor | None, states: torch.Tensor,
           cfg: Config, gen: torch.Generator) -> EStepOut:
    """One evolutionary E-step for a batch: y (B, D), obs (B, D) or None, states (B, S, W)."""
    s = unpack(states, cfg.n_latents)  # (B, S, H)
    a, prior = model.decoder.first(s), model.log_prior(s)
    lj, sqerr = model.score(y, obs, a, prior)
    pop = _Population(states, a, prior, lj)
    cand_states, cand_lj, cand_sqerr = [states], [lj], [sqerr]
    for _ in range(cfg.n_generations):
        parents = pop.take(_select_parents(pop.lj, cfg.n_parents, cfg.selection, gen))
        if cfg.mutation == "bitflip":
            ch_states, ch_a, ch_prior = _bitflip(model, parents, cfg.n_children, gen)
        else:
            ch_states, ch_a, ch_prior = _recombine(model, parents, cfg, gen)
        ch_lj, ch_sqerr = model.score(y, obs, ch_a, ch_prior)
        cand_states.append(ch_states)
        cand_lj.append(ch_lj)
        cand_sqerr.append(ch_sqerr)
        pop = _Population(ch_states, ch_a, ch_prior, ch_lj)  # children breed the next generation
    all_states = torch.cat(cand_states, 1)  # (B, S + G·P·C, W)
    all_lj = torch.cat(cand_lj, 1)
    if cfg.n_generations:
        all_lj = all_lj.masked_fill(duplicate_mask(all_states), float("-inf"))
    best = torch.topk(all_lj, cfg.n_states, dim=1).indices  # sorted, best first
    return EStepOut(_take(all_states, best), _take(all_lj, best),
                    _take(torch.cat(cand_sqerr, 1), best))


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, M, ...) gathered along dim 1 with idx (B, K)."""
    if x.dim() == 2:
        return torch.gather(x, 1, idx)
    # Whole rows: one index_select on (B·M, ...) copies rows, faster than an element gather.
    b, m = x.shape[:2]
    rows = (idx + torch.arange(0, b * m, m, device=idx.device)[:, None]).flatten()
    return x.reshape(b * m, *x.shape[2:]).index_select(0, rows).view(b, -1, *x.shape[2:])
