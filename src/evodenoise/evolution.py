"""The evolutionary E-step: improve each data point's set K_n of S distinct binary states.

Everything is batched over data points (no Python loop over points or states). States are
stored packed (``states.py``), and duplicates are found by sorting packed words.

One E-step on a batch of points (docs/method.md):
1. re-score K_n under the current parameters;
2. for each generation: select parents from the current population (per data point), make
   children by mutation, score them; the children are the next generation's population;
3. drop every candidate that duplicates another (children among themselves and against K_n);
4. keep the S best of K_n ∪ children by log-joint: no point's free energy can go down.

For the GPU an E-step never waits for the device and has static shapes: all its
random numbers are drawn up front in one call (:func:`draw_noise`; :func:`estep` draws
nothing, so it can be compiled whole and captured), parents and distinct bits are top-k's of
noise (no ``multinomial``, ``nonzero`` or boolean indexing), and duplicates are masked, not
removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import Config
from .model import Constants, Model, as_rows
from .parallel import map_rows, n_parts
from .states import WORD, cached_const, const_arange, duplicate_mask, pack, row_ids, unpack

FLOYD_ON_CPU = True  # distinct bits by Floyd's loop on the CPU (False: a GPU's one top-k)


@dataclass
class EStep:
    """One E-step's result: each point's new set K_n (packed, best first) and its scores.

    ``score`` is log p(y_n, s) less the per-point constant −(D_n/2) log 2πσ², all that
    ranking and the posterior q need; the full log-joint and the squared error follow.
    """

    states: torch.Tensor  # (B, S, W)
    score: torch.Tensor  # (B, S) log p(y_n, s) + (D_n/2) log 2πσ²
    norm: torch.Tensor  # (B, S) ‖μ(s) − y_n‖_obs / √(2σ²)
    offset: torch.Tensor  # (B, 1) or (): −(D_n/2) log 2πσ², the score's missing constant
    inv2s2: torch.Tensor  # () 1 / (2σ²)
    a: torch.Tensor | None = None  # (B, S, width_1 + 1) extended pre-activations, when kept

    @property
    def log_joint(self) -> torch.Tensor:
        """log p(y_n, s), (B, S)."""
        return self.score + self.offset

    @property
    def sqerr(self) -> torch.Tensor:
        """‖y_n − μ(s)‖²_obs, (B, S)."""
        return self.norm.square() / self.inv2s2

    @property
    def q(self) -> torch.Tensor:
        """The truncated posterior over K_n, (B, S)."""
        return torch.softmax(self.log_joint, dim=1)

    @property
    def f(self) -> torch.Tensor:
        """Each point's free-energy term logsumexp_s log p(y_n, s), (B,)."""
        return torch.logsumexp(self.log_joint, dim=1)


@dataclass
class _Population:
    """Packed states (B, M, W) with extended first-layer pre-activations a (B, M, width_1 + 1)
    (the last column is the log-prior, see :func:`_prepare`) and log-joints (B, M)."""

    states: torch.Tensor
    a: torch.Tensor
    lj: torch.Tensor  # empty after take(): a member set whose scores are not known yet

    def take(self, idx: torch.Tensor) -> _Population:
        """The members idx (B, K) (states and a; lj is left empty)."""
        b = row_ids(idx.shape[0], idx.device)
        return _Population(self.states[b, idx], self.a[b, idx], self.a.new_empty(0))


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


def use_floyd(device) -> bool:
    """Whether distinct bits are drawn by Floyd's loop (the CPU) rather than one top-k."""
    return torch.device(device).type == "cpu" and FLOYD_ON_CPU


def distinct_bits(shape: tuple[int, ...], n_latents: int, k: int, u, device=None) -> torch.Tensor:
    """k distinct random latent indices for each entry of ``shape``: (*shape, k), a uniformly
    random k-subset; ``u``: uniform noise (*shape, H), (*shape, k) with Floyd's loop (see
    :func:`use_floyd`), or a generator. No sync either way.

    On CUDA the top k of the H numbers (one kernel). On the CPU, where that top-k is the
    slowest part of an E-step, Floyd's algorithm on k numbers: for j = H−k … H−1 take t
    uniform in [0, j], or j when t is already taken (measured 4x faster for fast's E-batch).
    """
    dev = u.device if torch.is_tensor(u) else (device or u.device)
    floyd = use_floyd(dev)
    u = _uniform(u, (*shape, k if floyd else n_latents), dev)
    if not floyd:
        return torch.topk(u, k, dim=-1, sorted=False).indices
    top = const_arange(k, u.device) + (n_latents - k)  # j = H−k … H−1
    draws = torch.minimum((u * (top + 1)).long(), top)  # t uniform in [0, j]
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
    word = const_arange(w, bits.device)
    return torch.where((bits >> 6).unsqueeze(-1) == word, (1 << (bits & 63)).unsqueeze(-1), 0)


def _flips(wt: torch.Tensor, bits: torch.Tensor, w: int):
    """The bits (G, B, P, C) a bitflip E-step flips -> per generation (tuples of G) the
    one-bit masks (B, P, C, W) and the rows −wt[bit] (B, P, C, width_1 + 1) of the extended first
    layer wt (H, width_1 + 1) that a child adds when its parent had the bit set (it is
    cleared), their negatives when not. With one word :func:`_bitflip` asks "child < parent"
    instead, true for a cleared bit but for bit 63 (the sign bit) a set one: its row is +wt."""
    h = wt.shape[0]
    sign = cached_const(
        ("sign", h, w, str(wt.device), wt.dtype),
        lambda: torch.where((const_arange(h, wt.device) == WORD - 1) & (w == 1), 1.0, -1.0).to(
            wt.dtype
        )[:, None],
    )
    rows = torch.nn.functional.embedding(bits, wt * sign)  # (wt · sign)[bits], a fast gather
    return _bit_masks(bits, w).unbind(0), rows.unbind(0)


def _bitflip(
    pop: _Population,
    idx: torch.Tensor,
    masks: torch.Tensor,
    rows: torch.Tensor,
    out: torch.Tensor | None = None,
):
    """Children of the members idx (B, P) of ``pop``, C per parent, each flipping the bit of
    its mask (B, P, C, W), built packed: a child's extended pre-activation (log-prior included)
    is its parent's plus or minus its row of :func:`_flips`, so no child is ever unpacked.
    Parents are gathered once and broadcast over their C children. Returns packed
    (B, P·C, W) and a (B, P·C, width_1 + 1)."""
    n, p = idx.shape
    b = cached_const(("rows3", n, str(idx.device)), lambda: row_ids(n, idx.device)[..., None])
    idx = idx.unsqueeze(2)  # (B, P, 1): each parent, broadcast over its children
    par = pop.states[b, idx]  # (B, P, 1, W)
    children = par ^ masks
    if masks.shape[-1] == 1:  # one word: the child is smaller (signed: see _flips)
        was_set = children < par
    else:
        was_set = (par & masks).any(-1, keepdim=True)  # (B, P, C, 1)
    plus, minus = cached_const(
        ("pm", str(rows.device), rows.dtype),
        lambda: (
            torch.ones((), device=rows.device, dtype=rows.dtype),
            -torch.ones((), device=rows.device, dtype=rows.dtype),
        ),
    )
    a = torch.addcmul(
        pop.a[b, idx],  # (B, P, 1, width_1 + 1)
        rows,
        torch.where(was_set, plus, minus),
        out=None if out is None else out.unflatten(1, (p, -1)),
    )
    return children.flatten(1, 2), a.flatten(1, 2)


def _recombine(
    model: Model, par: _Population, wt: torch.Tensor, bias: torch.Tensor, cfg: Config, u
):
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
        partner = (const_arange(p, dev)[None, :, None] + off) % p
        mates = torch.gather(
            par_bits[:, None].expand(b, p, p, h), 2, partner[..., None].expand(b, p, c, h)
        )  # (B, P, C, H)
        cut = 1 + (r[:, 1, ..., None] * (max(h, 2) - 1)).long()  # uniform in [1, H)
        head = const_arange(h, dev) < cut
        children = torch.where(head, par_bits[:, :, None, :], mates)
        flip = (r[:, 2, ..., None] * h).long().clamp(max=h - 1)
        children.scatter_(3, flip, 1 - torch.gather(children, 3, flip))
    else:
        # sparseflip: each bit flips with a probability depending on its value, so that one
        # bit flips on average and the expected number of active bits moves towards H·mean(π).
        target = h * model.pi.mean()
        active = par_bits.sum(-1, keepdim=True)  # (B, P, 1)
        n_off = ((1 - target + active) / 2).clamp(0, 1)  # expected 1->0 flips
        n_on = ((1 + target - active) / 2).clamp(0, 1)  # expected 0->1 flips
        prob = torch.where(
            par_bits > 0, n_off / active.clamp(min=1), n_on / (h - active).clamp(min=1)
        )
        flips = _uniform(u, (b, p, c, h), dev) < prob[:, :, None, :]
        children = torch.where(flips, 1 - par_bits[:, :, None, :], par_bits[:, :, None, :])
    children = children.flatten(1, 2)
    return pack(children), torch.matmul(children, wt) + bias


def extended_first(model: Model, consts) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's first layer extended by the log-prior: wt (H, width_1 + 1) and bias
    (width_1 + 1,), so that a state's a = s @ wt + bias is its first-layer pre-activation and,
    last, log p(s) (``consts``: :meth:`Model.constants`)."""
    logit, base = consts.logit, consts.base
    cols, b1 = model.decoder.first_columns()
    return torch.cat([cols, logit], 1), torch.cat([b1, base])


def preactivations(model: Model, states: torch.Tensor, consts) -> torch.Tensor:
    """Extended pre-activations a (..., width_1 + 1) of packed states (..., W)."""
    wt, bias = extended_first(model, consts)
    return torch.matmul(unpack(states, model.pi.numel(), wt.dtype), wt) + bias


def _prepare(model: Model, y: torch.Tensor, obs: torch.Tensor | None, consts):
    """What one E-step needs besides the states, prepared once per call.

    Returns (wt, bias, score): the first layer extended by the log-prior, wt (H, width_1 + 1)
    and bias (width_1 + 1,), so that a = s @ wt + bias holds the pre-activation and, last,
    log p(s); a one-bit child's a is its parent's plus or minus one row of wt. score(a) ->
    (log-joint less its per-point constant −(D_n/2) log 2πσ², norm ‖μ − y‖_obs / √(2σ²)),
    both (B, M), from a (B, M, width_1 + 1): the residual comes scaled by 1/√(2σ²), so that the
    log-joint is log p(s) − norm² (one ``addcmul``).
    """
    wt, bias = extended_first(model, consts)
    ob = None if obs is None else as_rows(obs)
    residual = model.decoder.scaled_residual_fn(y, consts.inv_sqrt)  # a -> (μ − y) / √(2σ²)

    def score(a):
        diff = residual(a)
        if ob is not None:
            diff = diff * ob
        norm = torch.linalg.vector_norm(diff, dim=-1)
        return torch.addcmul(a[..., -1], norm, norm, value=-1), norm

    return wt, bias, score


def draw_noise(
    cfg: Config, b: int, device, gen: torch.Generator, out: torch.Tensor | None = None
) -> torch.Tensor | None:
    """All uniform random numbers of one E-step on b points, (G, B, R), drawn in one call (the
    E-step itself then draws nothing: the same numbers give the same result compiled or not).
    Per generation: parent selection (max(S, P·C), unless ``best``), then the mutation."""
    if cfg.n_generations == 0:
        return None
    r = _sel_width(cfg) + _mut_width(cfg, device)
    if out is not None:  # into a tensor that keeps its address (a CUDA graph's input)
        return out.uniform_(generator=gen)
    return torch.rand((cfg.n_generations, b, r), generator=gen, device=device)


def _sel_width(cfg: Config) -> int:
    return 0 if cfg.selection == "best" else max(cfg.n_states, cfg.n_parents * cfg.n_children)


def _mut_width(cfg: Config, device) -> int:
    """Random numbers per point and generation of the mutation: for ``bitflip`` H per parent
    (a top-k), or C per parent with Floyd's loop (:func:`distinct_bits`)."""
    p, c, h = cfg.n_parents, cfg.n_children, cfg.n_latents
    bits = p * c if use_floyd(device) else p * h
    return {"bitflip": bits, "sparseflip": p * c * h, "crossover": 3 * p * c}[cfg.mutation]


@torch.no_grad()
def evolve(
    model: Model,
    y: torch.Tensor,
    obs: torch.Tensor | None,
    states: torch.Tensor,
    cfg: Config,
    gen: torch.Generator,
    consts: Constants | None = None,
    a: torch.Tensor | None = None,
    keep: bool = False,
) -> EStep:
    """One evolutionary E-step for a batch: :func:`estep` with its random numbers drawn from
    ``gen`` (:func:`draw_noise`). ``consts``: :meth:`Model.constants`, if the caller has them."""
    consts = model.constants() if consts is None else consts
    noise = draw_noise(cfg, y.shape[0], y.device, gen)
    return estep(model, y, obs, states, noise, consts, cfg, a, keep)


def estep(
    model: Model,
    y,
    obs,
    states,
    noise,
    consts: Constants,
    cfg: Config,
    a=None,
    keep: bool = False,
    scored=None,
) -> EStep:
    """One evolutionary E-step on y (B, D) (or (B, 1, D)), obs like y or None, states
    (B, S, W) packed, with the random numbers ``noise`` of :func:`draw_noise`: static shapes,
    no host sync, no random draw, so it can be compiled whole. ``a``: the states' extended
    pre-activations (B, S, width_1 + 1) when the caller has them under the current parameters
    (a previous sweep's ``keep``, a dictionary's); ``keep``: return the new states' in
    ``EStep.a`` (the estimate's next sweep and posterior mean then need no decoder pass
    through the first layer). ``scored``: the states' (score, norm) (B, S) each, as
    :class:`EStep` gives them, when known under the current parameters (the estimate's
    parameters are fixed: a sweep need not score again the states the previous one kept)."""
    wt, bias, score = _prepare(model, y, obs, consts)
    b, p, c = y.shape[0], cfg.n_parents, cfg.n_children
    if a is None:
        a = torch.baddbmm(bias, unpack(states, cfg.n_latents, wt.dtype), wt.expand(b, -1, -1))
    lj, norm = score(a) if scored is None else scored  # a: (B, S, width_1 + 1)
    pop = _Population(states, a, lj)
    cand_states, cand_lj, cand_norm = [states], [lj], [norm]
    n_sel, g_all = _sel_width(cfg), cfg.n_generations
    all_a = None
    if keep:  # every candidate's a, written in place (a cat would copy them all again)
        s_in = states.shape[1]
        all_a = a.new_empty(b, s_in + g_all * p * c, a.shape[-1])
        all_a[:, :s_in] = a
        blocks = all_a[:, s_in:].unflatten(1, (g_all, p * c)).unbind(1) if g_all else ()
    if cfg.mutation == "bitflip" and g_all:  # every generation's bits at once (G, B, P, C)
        u_mut = noise[..., n_sel:] if n_sel else noise
        bits = distinct_bits((g_all, b, p), cfg.n_latents, c, u_mut)
        flips = zip(*_flips(wt, bits, states.shape[-1]))
    for u in noise.unbind(0) if g_all else ():
        u_sel = u[:, : pop.lj.shape[1]] if n_sel else None
        idx = _select_parents(pop.lj, p, cfg.selection, u_sel)  # (B, P)
        out = blocks[len(cand_lj) - 1] if keep else None
        if cfg.mutation == "bitflip":
            flip_masks, flip_rows = next(flips)
            ch_states, ch_a = _bitflip(pop, idx, flip_masks, flip_rows, out=out)
        else:
            u_mut = u[:, n_sel:] if n_sel else u
            ch_states, ch_a = _recombine(model, pop.take(idx), wt, bias, cfg, u_mut)
            if out is not None:
                out.copy_(ch_a)
        ch_lj, ch_norm = score(ch_a)
        cand_states.append(ch_states)
        cand_lj.append(ch_lj)
        cand_norm.append(ch_norm)
        pop = _Population(ch_states, ch_a, ch_lj)  # children breed the next generation
    new, best_lj, best_norm, kept = _survivors(cand_states, cand_lj, cand_norm, all_a, cfg.n_states)
    d = y.shape[-1] if obs is None else (obs > 0).sum(-1).to(y.dtype)
    offset = -consts.half_log * d
    offset = offset.reshape(b, 1) if torch.is_tensor(d) else offset
    return EStep(new, best_lj, best_norm, offset, consts.inv2s2, kept)


def estep_part(
    r: slice, model: Model, y, obs, states, noise, consts, cfg, a=None, keep=False, scored=None
) -> EStep:
    """:func:`estep` on the rows r of its inputs (noise (G, B, R): its rows are dim 1)."""
    o = None if obs is None else obs[r]
    u = None if noise is None else noise[:, r]
    a = None if a is None else a[r]
    scored = None if scored is None else tuple(t[r] for t in scored)
    return estep(model, y[r], o, states[r], u, consts, cfg, a, keep, scored)


def estep_rows(model: Model, y, obs, states, noise, consts: Constants, cfg: Config, **kw) -> EStep:
    """:func:`estep` (``kw``: its ``a``, ``keep`` and ``scored``) with the rows split over the
    run's CPU threads (:func:`parallel.map_rows`): each point's E-step depends on its own row
    only, so the result is the same, bit for bit."""

    if n_parts(y.shape[0]) == 1:
        return estep(model, y, obs, states, noise, consts, cfg, **kw)

    def part(r: slice) -> EStep:
        return estep_part(r, model, y, obs, states, noise, consts, cfg, **kw)

    parts = map_rows(part, y.shape[0])
    first = parts[0]

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(e, name) for e in parts])

    offset = cat("offset") if first.offset.dim() else first.offset  # (B, 1) with a mask
    kept = cat("a") if first.a is not None else None
    return EStep(cat("states"), cat("score"), cat("norm"), offset, first.inv2s2, kept)


def _survivors(cand_states, cand_lj, cand_norm, all_a, n_states: int):
    """The S best distinct candidates of each point, best first: states (B, S, W), scores and
    norms (B, S), and their a if ``all_a`` is given (else None)."""
    all_states = torch.cat(cand_states, 1)  # (B, S + G·P·C, W)
    all_lj = torch.cat(cand_lj, 1)
    if len(cand_lj) > 1:  # children may repeat each other or K_n
        all_lj = all_lj.masked_fill(duplicate_mask(all_states), float("-inf"))
    best_lj, best = torch.topk(all_lj, n_states, dim=1)  # sorted, best first
    rows = row_ids(best.shape[0], best.device)
    norm = torch.gather(torch.cat(cand_norm, 1), 1, best)
    return all_states[rows, best], best_lj, norm, None if all_a is None else all_a[rows, best]
