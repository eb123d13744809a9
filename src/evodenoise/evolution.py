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

For the GPU (issue 10) an E-step never waits for the device and has static shapes: all its
random numbers are drawn up front in one call (:func:`draw_noise`; :func:`evolve_drawn` draws
nothing, so it can be compiled whole and captured), parents and distinct bits are top-k's of
noise (no ``multinomial``, ``nonzero`` or boolean indexing), and duplicates are masked, not
removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import Config
from .model import Model

WORD = 64
FLOYD_ON_CPU = True  # distinct bits by Floyd's loop on the CPU (False: a GPU's one top-k)


def n_words(n_latents: int) -> int:
    return -(-n_latents // WORD)


_CONSTS: dict = {}


def _arange(n: int, device, dtype=torch.int64) -> torch.Tensor:
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
    bits = bits.reshape(*s.shape[:-1], w * 8, 8) << _arange(8, s.device, torch.uint8)
    return bits.sum(-1, dtype=torch.uint8).view(torch.int64)


def unpack(packed: torch.Tensor, n_latents: int, dtype=torch.float32) -> torch.Tensor:
    """Packed (..., W) int64 -> states (..., H) of ``dtype`` (shifts of each byte)."""
    by = packed.contiguous().view(torch.uint8)  # (..., W·8)
    bits = (by.unsqueeze(-1) >> _arange(8, packed.device, torch.uint8)) & 1  # (..., W·8, 8)
    return bits.flatten(-2)[..., :n_latents].to(dtype)


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
    if w == 1:
        key, order = torch.sort(packed[..., 0], dim=1, stable=True)
    else:  # lexicographic sort over the words: stable sorts from the last word to the first
        order = _arange(m, packed.device).expand(b, m)
        for k in reversed(range(w)):
            _, idx = torch.sort(torch.gather(packed[..., k], 1, order), dim=1, stable=True)
            order = torch.gather(order, 1, idx)
        key = torch.gather(packed, 1, order[..., None].expand(b, m, w))
    same_as_prev = key[:, 1:] == key[:, :-1]  # (B, M-1) or (B, M-1, W)
    if w > 1:
        same_as_prev = same_as_prev.all(-1)
    dup_sorted = F.pad(same_as_prev, (1, 0))  # the first of a run is no repeat
    return dup_sorted.scatter(1, order, dup_sorted)  # back to the original order


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
    """Packed states (B, M, W) with extended first-layer pre-activations a (B, M, width_1 + 1)
    (the last column is the log-prior, see :func:`_extended_first`) and log-joints (B, M)."""

    states: torch.Tensor
    a: torch.Tensor
    lj: torch.Tensor

    def take(self, idx: torch.Tensor) -> "_Population":
        return _Population(_take(self.states, idx), _take(self.a, idx), _take(self.lj, idx))


def _uniform(u, shape: tuple[int, ...], device) -> torch.Tensor:
    """Uniform [0, 1) numbers of ``shape``: ``u`` itself (drawn up front) or drawn from the
    generator ``u``."""
    if isinstance(u, torch.Generator):
        return torch.rand(shape, generator=u, device=device)
    return u.reshape(shape)


def _select_parents(lj: torch.Tensor, n_parents: int, mode: str, u=None):
    """Parent indices (B, P) into a population with log-joints lj (B, M), per data point;
    ``u``: uniform noise (B, M) or a generator (unused by ``best``)."""
    if mode == "best":
        return torch.topk(lj, n_parents, dim=1).indices
    u = _uniform(u, lj.shape, lj.device)
    if mode == "uniform":
        return torch.topk(u, n_parents, dim=1, sorted=False).indices
    # Fitness-proportional without replacement, normalised per data point; fitness is the
    # log-joint shifted so the row's worst member has weight 1 (all weights positive). The top
    # P of log(fitness) + Gumbel noise is such a draw (Efraimidis-Spirakis), with no host sync.
    fitness = lj - lj.amin(dim=1, keepdim=True) + 1.0
    key = torch.log(fitness) - torch.log(-torch.log(u))
    return torch.topk(key, n_parents, dim=1, sorted=False).indices


def distinct_bits(shape: tuple[int, ...], n_latents: int, k: int, u, device=None) -> torch.Tensor:
    """k distinct random latent indices for each entry of ``shape``: (*shape, k), a uniformly
    random k-subset; ``u``: uniform noise (*shape, H) or a generator. No sync either way.

    On CUDA the top k of the H numbers (one kernel). On the CPU, where that top-k is the
    slowest part of an E-step, Floyd's algorithm on the first k numbers: for j = H−k … H−1 take
    t uniform in [0, j], or j when t is already taken (measured 4x faster for fast's E-batch).
    """
    u = _uniform(u, (*shape, n_latents), device)
    if u.device.type != "cpu" or not FLOYD_ON_CPU:
        return torch.topk(u, k, dim=-1, sorted=False).indices
    top = _arange(k, u.device) + (n_latents - k)  # j = H−k … H−1
    draws = torch.minimum((u[..., :k] * (top + 1)).long(), top)  # t uniform in [0, j]
    taken = [draws[..., 0]]
    for i in range(1, k):
        t = draws[..., i]
        seen = (torch.stack(taken, -1) == t.unsqueeze(-1)).any(-1)
        taken.append(torch.where(seen, n_latents - k + i, t))
    return torch.stack(taken, -1)


def _bit_masks(bits: torch.Tensor, w: int) -> torch.Tensor:
    """Latent indices (...) -> packed one-bit states (..., W) int64."""
    if w == 1:
        return (1 << bits).unsqueeze(-1)
    word = _arange(w, bits.device)
    return torch.where((bits >> 6).unsqueeze(-1) == word, (1 << (bits & 63)).unsqueeze(-1), 0)


def _bitflip(par: _Population, signed: torch.Tensor, n_children: int, u):
    """Children flipping C distinct bits of each parent, built packed: the extended
    pre-activation of a child (log-prior included) is its parent's plus or minus one row of
    the first layer (``signed``: :func:`_signed` of wt (H, width_1 + 1)), so no child is ever
    unpacked. ``u``: the flipped bits (B, P, C) (:func:`distinct_bits`), noise (B, P·H) or a
    generator. Returns packed (B, P·C, W) and a (B, P·C, width_1 + 1)."""
    b, p, w = par.states.shape
    if isinstance(u, torch.Tensor) and not u.is_floating_point():
        bits = u
    else:
        bits = distinct_bits((b, p), signed.shape[0], n_children, u, signed.device)  # (B, P, C)
    if w == 1:  # (B, P, 1) ^ (B, P, C): the children's words
        children = par.states ^ (1 << bits)
        is_set = (children >> bits) & 1
    else:
        masks = _bit_masks(bits, w)  # (B, P, C, W)
        children = par.states.unsqueeze(2) ^ masks
        is_set = (children & masks).any(-1).long()
    cols = signed[bits, is_set]  # (B, P, C, width_1 + 1): −wt[h] clears bit h, +wt[h] sets it
    a = par.a.unsqueeze(2) + cols
    return children.reshape(b, p * n_children, w), a.flatten(1, 2)


def _signed(wt: torch.Tensor) -> torch.Tensor:
    """(H, F) -> (H, 2, F): [h, 0] = −wt[h], [h, 1] = +wt[h]."""
    return torch.stack([-wt, wt], 1)


def _recombine(model: Model, par: _Population, wt: torch.Tensor, bias: torch.Tensor,
               cfg: Config, u):
    """Children by ``sparseflip`` or ``crossover`` (on unpacked parents): same returns as
    :func:`_bitflip`. ``u``: noise (B, P·C·H) (sparseflip) or (B, 3·P·C) (crossover), or a
    generator."""
    h = cfg.n_latents
    par_bits = unpack(par.states, h, par.a.dtype)  # (B, P, H)
    b, p, _ = par_bits.shape
    c = cfg.n_children
    dev = par_bits.device
    if cfg.mutation == "crossover":
        # Each parent i mates with C random partners j != i at a random cut point, then one
        # random bit of the child is flipped.
        r = _uniform(u, (b, 3, p, c), dev).reshape(b, 3, p, c)
        off = 1 + (r[:, 0] * (p - 1)).long().clamp(max=p - 2)  # uniform in [1, P)
        partner = (_arange(p, dev)[None, :, None] + off) % p
        mates = torch.gather(par_bits[:, None].expand(b, p, p, h), 2,
                             partner[..., None].expand(b, p, c, h))  # (B, P, C, H)
        cut = 1 + (r[:, 1, ..., None] * (max(h, 2) - 1)).long()  # uniform in [1, H)
        head = _arange(h, dev) < cut
        children = torch.where(head, par_bits[:, :, None, :], mates)
        flip = (r[:, 2, ..., None] * h).long().clamp(max=h - 1)
        children.scatter_(3, flip, 1 - torch.gather(children, 3, flip))
    else:
        # sparseflip: each bit flips with a probability depending on its value, so that one
        # bit flips on average and the expected number of active bits moves towards H·mean(π).
        target = h * model.pi.mean()
        active = par_bits.sum(-1, keepdim=True)  # (B, P, 1)
        n_off = ((1 - target + active) / 2).clamp(0, 1)  # expected 1->0 flips
        n_on = ((1 + target - active) / 2).clamp(0, 1)   # expected 0->1 flips
        prob = torch.where(par_bits > 0, n_off / active.clamp(min=1),
                           n_on / (h - active).clamp(min=1))
        flips = _uniform(u, (b, p, c, h), dev) < prob[:, :, None, :]
        children = torch.where(flips, 1 - par_bits[:, :, None, :], par_bits[:, :, None, :])
    children = children.flatten(1, 2)
    return pack(children), torch.matmul(children, wt) + bias


def _prepare(model: Model, y: torch.Tensor, obs: torch.Tensor | None, consts):
    """What one E-step needs besides the states, prepared once per call.

    Returns (wt, bias, score): the first layer extended by the log-likelihood's constant part,
    wt (H, width_1 + 1) and bias (width_1 + 1,) or (B, 1, width_1 + 1), so that
    a = s @ wt + bias holds the pre-activation and, last, log p(s) − (D_n/2) log 2πσ²; a one-bit
    child's a is its parent's plus or minus one row of wt. score(a) -> (log-joint, squared
    error) (B, M) from a (B, M, width_1 + 1).
    """
    logit, base, half_log, inv2s2 = consts
    cols, b1 = model.decoder.first_columns()
    wt = torch.cat([cols, logit.unsqueeze(1)], 1)
    if obs is None:
        bias = torch.cat([b1, (base - half_log * y.shape[1]).reshape(1)])
    else:
        c = base - half_log * obs.sum(1, keepdim=True)  # (B, 1)
        bias = torch.cat([b1.expand(y.shape[0], -1), c], 1).unsqueeze(1)
    ob = None if obs is None else obs.unsqueeze(1)
    neg = -inv2s2
    residual = model.decoder.residual_fn(y)  # first-layer pre-activation -> μ − y

    def score(a):
        diff = residual(a[..., :-1])
        if ob is not None:
            diff = diff * ob
        sq = torch.linalg.vector_norm(diff, dim=-1).square()
        return torch.addcmul(a[..., -1], sq, neg), sq

    return wt, bias, score


def draw_noise(cfg: Config, b: int, device, gen: torch.Generator,
               out: torch.Tensor | None = None) -> torch.Tensor | None:
    """All uniform random numbers of one E-step on b points, (G, B, R), drawn in one call (the
    E-step itself then draws nothing: the same numbers give the same result compiled or not).
    Per generation: parent selection (max(S, P·C), unless ``best``), then the mutation."""
    if cfg.n_generations == 0:
        return None
    r = _sel_width(cfg) + _mut_width(cfg)
    if out is not None:  # into a tensor that keeps its address (a CUDA graph's input)
        return out.uniform_(generator=gen)
    return torch.rand((cfg.n_generations, b, r), generator=gen, device=device)


def _sel_width(cfg: Config) -> int:
    return 0 if cfg.selection == "best" else max(cfg.n_states, cfg.n_parents * cfg.n_children)


def _mut_width(cfg: Config) -> int:
    p, c, h = cfg.n_parents, cfg.n_children, cfg.n_latents
    return {"bitflip": p * h, "sparseflip": p * c * h, "crossover": 3 * p * c}[cfg.mutation]


@torch.no_grad()
def evolve(model: Model, y: torch.Tensor, obs: torch.Tensor | None, states: torch.Tensor,
           cfg: Config, gen: torch.Generator, consts=None) -> EStepOut:
    """One evolutionary E-step for a batch: y (B, D), obs (B, D) or None, states (B, S, W).
    ``consts``: :meth:`Model.constants` when the caller already has them."""
    consts = model.constants() if consts is None else consts
    noise = draw_noise(cfg, y.shape[0], y.device, gen)
    return EStepOut(*evolve_drawn(model, y, obs, states, noise, consts, cfg))


def evolve_drawn(model: Model, y: torch.Tensor, obs: torch.Tensor | None, states: torch.Tensor,
                 noise: torch.Tensor | None, consts, cfg: Config):
    """:func:`evolve` on noise from :func:`draw_noise`: (states (B, S, W), log-joints and
    squared errors (B, S)). Static shapes, no host sync, no random draw: compilable whole."""
    wt, bias, score = _prepare(model, y, obs, consts)
    a = torch.matmul(unpack(states, cfg.n_latents, wt.dtype), wt) + bias  # (B, S, width_1 + 1)
    lj, sqerr = score(a)
    pop = _Population(states, a, lj)
    cand_states, cand_lj, cand_sqerr = [states], [lj], [sqerr]
    n_sel = _sel_width(cfg)
    g_all, (b, p) = cfg.n_generations, (y.shape[0], cfg.n_parents)
    if cfg.mutation == "bitflip" and g_all:  # every generation's bits at once (G, B, P, C)
        signed = _signed(wt)
        flips = distinct_bits((g_all, b, p), cfg.n_latents, cfg.n_children,
                              noise[..., n_sel:] if n_sel else noise).unbind(0)
    for g, u in enumerate(noise.unbind(0) if g_all else ()):
        u_sel = u[:, :pop.lj.shape[1]] if n_sel else None
        parents = pop.take(_select_parents(pop.lj, cfg.n_parents, cfg.selection, u_sel))
        u = u[:, n_sel:] if n_sel else u
        if cfg.mutation == "bitflip":
            ch_states, ch_a = _bitflip(parents, signed, cfg.n_children, flips[g])
        else:
            ch_states, ch_a = _recombine(model, parents, wt, bias, cfg, u)
        ch_lj, ch_sqerr = score(ch_a)
        cand_states.append(ch_states)
        cand_lj.append(ch_lj)
        cand_sqerr.append(ch_sqerr)
        pop = _Population(ch_states, ch_a, ch_lj)  # children breed the next generation
    all_states = torch.cat(cand_states, 1)  # (B, S + G·P·C, W)
    all_lj = torch.cat(cand_lj, 1)
    if cfg.n_generations:
        all_lj = all_lj.masked_fill(duplicate_mask(all_states), float("-inf"))
    best_lj, best = torch.topk(all_lj, cfg.n_states, dim=1)  # sorted, best first
    return _take(all_states, best), best_lj, torch.gather(torch.cat(cand_sqerr, 1), 1, best)


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, M, ...) gathered along dim 1 with idx (B, K)."""
    if x.dim() == 2:
        return torch.gather(x, 1, idx)
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(*idx.shape, x.shape[-1]))
