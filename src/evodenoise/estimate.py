"""The estimate: posterior means of the patches under a trained model, merged into the image.

:func:`estimate_patches` is the estimate of a set of patches with states: ``final_sweeps``
E-step sweeps under the final parameters, then the posterior mean ⟨μ(s)⟩_q of each patch.
:func:`estimate_image` streams it over a whole image:

Training keeps states only for its pool of patches (``Config.train_patches``). After training
the image is estimated one band of patch rows at a time and each band is folded into the output
and freed: memory is O(band + pool + model), never O(image × S). A band's patches are
estimated in fixed groups (``GROUP_CHUNKS``), side by side on the CPU's threads.

- A patch of the pool takes its trained states and ``final_sweeps`` E-step sweeps under the
  final parameters, then its posterior mean (exactly what training on every patch does).
- Any other patch is scored against a dictionary: the ``dictionary_size`` states that occur
  most often in the pool's trained sets, whose decoder outputs are computed once. Scoring a
  patch against the whole dictionary is one matrix product, ‖y − μ_k‖² = ‖y‖² − 2 y·μ_k +
  ‖μ_k‖². With ``fresh_sweeps`` 0 its posterior mean is over the whole dictionary (one more
  matrix product); with ``fresh_sweeps`` > 0 its set K_n starts as its S most probable
  entries and evolves from there.
- With ``fresh_stride`` s > 1 only the fresh patches on every s-th row and column (and the
  last row and column, so that every pixel stays covered) are estimated and merged: a pixel
  then averages about p²/s² fresh estimates instead of p², for about 1/s² of their work.
- A fresh patch that the dictionary explains poorly (its best entry's residual above the
  ``poor_fit_quantile`` of the pool's residuals under their own states: rare content, such
  as a small region of a saturated colour) is evolved by ``poor_fit_sweeps`` sweeps instead.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from typing import NamedTuple

import torch

from .config import Config
from .evolution import draw_noise, estep_rows, preactivations
from .model import Model
from .parallel import map_slices
from .patches import band_patches, chunks, fold_rows, gather_patches, on_grid, patch_weights
from .states import unpack
from .train import Fit


class Dictionary:
    """The ``size`` distinct states that occur most often in the pool's trained sets, with their
    decoder outputs and log-priors under the final parameters, computed once."""

    @torch.no_grad()
    def __init__(self, fitted: Fit, size: int):
        model = fitted.model
        states = fitted.states.reshape(-1, fitted.states.shape[-1])  # (M·S, W)
        if states.shape[1] == 1:  # one word: a flat unique, many times faster than dim=0's
            uniq, counts = torch.unique(states[:, 0], return_counts=True)
            uniq = uniq[:, None]
        else:
            uniq, counts = torch.unique(states, dim=0, return_counts=True)
        self.states = uniq[torch.topk(counts, min(size, counts.numel())).indices]  # (K, W)
        self.a = preactivations(model, self.states, model.constants())  # (K, width_1 + 1)
        self.mu = model.decoder.rest(self.a[:, :-1])  # (K, D)
        self.mu2 = self.mu * self.mu
        self.prior = self.a[:, -1]  # (K,) log p(s_k), the pre-activations' last column
        self.sigma2 = model.sigma2
        # log p(y, s_k) + ‖y‖²/2σ² = y·μ_k/σ² + log p(s_k) − ‖μ_k‖²/2σ²: one addmm per chunk
        self._w = (self.mu / self.sigma2).T.contiguous()  # (D, K)
        self._c = self.prior - self.mu2.sum(1) / (2 * self.sigma2)  # (K,)
        # with weights r (obs): [r²·y, r²] @ [μ/σ²; −μ²/2σ²] (2D, K) (a mask: observed values)
        self._w_obs = torch.cat([self._w, (self.mu2 / (-2 * self.sigma2)).T])
        # residual above which a patch is poorly explained (set_poor_fit)
        self.poor: torch.Tensor | None = None

    def scores(self, y: torch.Tensor, obs: torch.Tensor | None) -> torch.Tensor:
        """log p(y, s_k) of patches y (B, D) for every entry k, up to a constant per patch:
        (B, K). ‖y − μ_k‖² = ‖y‖² − 2 y·μ_k + ‖μ_k‖², so the scores are one matrix product
        plus a constant per entry (one ``addmm``, no further pass over the (B, K) scores)."""
        if obs is None:
            return torch.addmm(self._c, y, self._w)
        w = obs * obs  # the values' weights r² (a 0/1 mask: itself)
        return torch.addmm(self.prior, torch.cat([w * y, w], 1), self._w_obs)

    def top(self, y: torch.Tensor, obs: torch.Tensor | None, n_states: int):
        """For each patch the ``n_states`` entries of highest log-joint: a top-k (values,
        indices), both (B, S), best first."""
        return torch.topk(self.scores(y, obs), n_states, dim=1)

    def posterior(self, y: torch.Tensor, obs: torch.Tensor | None, var: bool = True):
        """Posterior mean and (``var``; else None) variance of μ(s) per value, (B, D) each,
        of patches y (B, D) over every entry, and each patch's most probable entry (B,): a
        matrix product (two with ``var``) after :meth:`scores`, where the posterior over the
        S best entries would first need their top-k, several times the cost. Weights below
        e⁻⁸⁰ (about 2·10⁻³⁵) of the largest are raised to it, which keeps them out of the
        subnormal floats that CPUs multiply many times slower."""
        scores = self.scores(y, obs)  # (B, K)
        peak, best = scores.max(1)  # (B,): the constant per patch cancels
        q = scores.sub_(peak[:, None]).clamp_(min=-80.0).exp_()  # (B, K), unnormalised
        total = q.sum(1, keepdim=True)
        mean = (q @ self.mu) / total
        return mean, (q @ self.mu2) / total - mean * mean if var else None, best

    def residual(self, y: torch.Tensor, obs: torch.Tensor | None, k: torch.Tensor):
        """Mean squared residual per observed value of patches y (B, D) under entries k (B,):
        ‖y − μ_k‖²_obs / D_n, (B,)."""
        return _residual(self.mu[k], y, obs)

    @torch.no_grad()
    def set_poor_fit(
        self, fitted: Fit, y: torch.Tensor, obs: torch.Tensor | None, quantile: float
    ) -> None:
        """Set ``poor``, the residual above which a patch counts as poorly explained: the
        ``quantile`` of the residuals that the pool's patches y (M, D) leave under their own
        best trained state. A patch that no entry explains as well as nearly all trained
        patches are explained by their own states (a rare colour or object missing from the
        dictionary) is then swept, not left at the dictionary's best guess."""
        model = fitted.model
        res = torch.empty(y.shape[0], device=y.device)
        for ch in chunks(y.shape[0], 16384):
            mu = model.decoder(unpack(fitted.states[ch, 0], model.pi.numel(), y.dtype))
            res[ch] = _residual(mu, y[ch], None if obs is None else obs[ch])
        self.poor = torch.quantile(res, quantile) if res.numel() else None


def _residual(mu: torch.Tensor, y: torch.Tensor, obs: torch.Tensor | None) -> torch.Tensor:
    """‖y − μ‖²_obs / D_n per row of (B, D) arrays: (B,)."""
    diff = mu - y
    if obs is None:
        return diff.square().mean(1)
    return (diff * obs).square().sum(1) / (obs > 0).sum(1).clamp(min=1)


GROUP_CHUNKS = 16  # a band is estimated in groups of this many chunks' patches, each group
#   in one thread (parallel.py); fixed groups keep the result the same on any thread count
POOL, FRESH, POOR = 0, 1, 2  # the estimate's random streams: pool, fresh and rescued patches


class PatchNoise:
    """The random numbers of the estimate's E-step sweeps as a function of (stream, sweep,
    patch): each block of ``BLOCK`` patches (by raster index) draws its own from a generator
    seeded by (seed, stream, sweep, block). How the image is cut into bands and chunks (which
    follows the memory free) then never changes the result."""

    BLOCK = 1024

    def __init__(self, cfg: Config, seed: int, device):
        self.cfg, self.seed, self.device = cfg, int(seed), torch.device(device)
        self._last: dict = {}  # (stream, sweep, thread) -> (block, its numbers (G, BLOCK, R))

    def __call__(self, stream: int, sweep: int, idx: torch.Tensor) -> torch.Tensor | None:
        """(G, B, R) numbers of :func:`evolution.draw_noise` for the patches ``idx`` (B,)."""
        if self.cfg.n_generations == 0:
            return None
        out: torch.Tensor | None = None
        block = idx // self.BLOCK
        for b in torch.unique(block).tolist():  # one or two blocks per chunk
            rows = (block == b).nonzero()[:, 0]
            numbers = self._block(stream, sweep, b)
            if out is None:
                out = numbers.new_empty(numbers.shape[0], idx.numel(), numbers.shape[2])
            out[:, rows] = numbers[:, idx[rows] % self.BLOCK]
        return out

    def _block(self, stream: int, sweep: int, b: int) -> torch.Tensor:
        key = (stream, sweep, threading.get_ident())  # (threads estimate rows side by side)
        last = self._last.get(key)
        if last is None or last[0] != b:
            mixed = ((self.seed * 1_000_003 + stream) * 1_000_033 + sweep) * 1_000_037 + b
            gen = torch.Generator(device=self.device).manual_seed(mixed % 2**63)
            numbers = draw_noise(self.cfg, self.BLOCK, self.device, gen)
            assert numbers is not None  # n_generations > 0
            last = (b, numbers)
            self._last[key] = last
        return last[1]


@torch.no_grad()
def estimate_image(
    fitted: Fit,
    x: torch.Tensor,
    observed: torch.Tensor | None,
    pool: torch.Tensor,
    cfg: Config,
    gen: torch.Generator,
    callback: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The merged posterior-mean estimate (C, H, W) of the image x (C, H, W).

    ``observed`` (C, H, W) is 1 where a value is observed (None: all are); ``pool`` (M,) the
    sorted raster indices of the patches ``fitted`` was trained on (its states, in that order).
    ``callback(band, bands)`` is called after each band. The sweeps' random numbers come from
    one seed drawn from ``gen``, per patch (:class:`PatchNoise`).
    """
    seed = int(torch.randint(2**62, (1,), generator=gen, device=gen.device))
    noise = PatchNoise(cfg, seed, x.device)
    h, w, p = *x.shape[1:], cfg.patch_size
    cols = w - p + 1
    pool = pool.contiguous()  # searched once per band
    rows = cfg.band_rows or h - p + 1  # planned (plan.py); 0: one band
    model = fitted.model
    dictionary = None
    num = torch.zeros_like(x)
    den = torch.zeros_like(x)
    weights = patch_weights(p, cfg.merge, device=x.device) if cfg.merge != "variance" else None
    bands = math.ceil((h - p + 1) / rows)
    for b in range(bands):
        r0, r1 = b * rows, min((b + 1) * rows, h - p + 1)
        yb = band_patches(x, r0, r1, p)  # (n, D)
        ob = None if observed is None else band_patches(observed, r0, r1, p)
        var = torch.zeros_like(yb) if cfg.merge == "variance" else None  # for the weights
        kept = None  # (n,) the patches folded in; None: all
        lo, hi = (int(torch.searchsorted(pool, r * cols)) for r in (r0, r1))
        trained = torch.zeros(yb.shape[0], dtype=torch.bool, device=x.device)
        trained[pool[lo:hi] - r0 * cols] = True  # the band's patches trained on
        fresh = ~trained
        some_fresh = hi - lo < yb.shape[0]
        if cfg.fresh_stride > 1 and some_fresh:  # fresh patches on a coarser grid only
            kept = trained | on_grid(r0, r1, cols, h - p + 1, cfg.fresh_stride, x.device)
            fresh &= kept
        if dictionary is None and some_fresh:
            dictionary = Dictionary(fitted, cfg.dictionary_size)
            if cfg.poor_fit_sweeps > cfg.fresh_sweeps:
                dictionary.set_poor_fit(
                    fitted,
                    gather_patches(x, pool, p),
                    None if observed is None else gather_patches(observed, pool, p),
                    cfg.poor_fit_quantile,
                )
        band = _Band(yb, ob, var, trained, fresh, fitted.states[lo:hi], r0 * cols)
        group = GROUP_CHUNKS * cfg.chunk_size or yb.shape[0]  # (chunk_size 0: one chunk)
        estimate_rows = functools.partial(_estimate_rows, band, dictionary, model, cfg, noise)
        map_slices(estimate_rows, yb.shape[0], group)  # side by side on the CPU's threads
        if var is not None:  # inverse posterior variance, floored at σ²/D per value
            weights = 1.0 / (var.clamp(min=0) + model.sigma2 / yb.shape[1])
        fold_rows(num, den, yb, r0, p, _only(weights, kept, yb))
        del yb, ob, var
        if callback is not None:
            callback(b + 1, bands)
    return num / den


class _Band(NamedTuple):
    """A band's patches y (n, D) (their estimates are written over them), their observed
    values (or None) and variances (or None: not needed), which were ``trained`` on and
    which are ``fresh`` (to estimate from the dictionary), both (n,) bool, the trained
    patches' states (in raster order) and the raster index of the band's first patch."""

    y: torch.Tensor
    obs: torch.Tensor | None
    var: torch.Tensor | None
    trained: torch.Tensor
    fresh: torch.Tensor
    states: torch.Tensor
    first: int


def _estimate_rows(band: _Band, dictionary, model, cfg, noise, r: slice) -> None:
    """The estimates of the band's patches r (a slice), written over them: each row's
    depends on that row alone (its trained states or the dictionary, and the random numbers
    of its raster index), so the rows can be split over threads."""
    trained, fresh, y = band.trained[r], band.fresh[r], band.y[r]
    ob, var = (None if t is None else t[r] for t in (band.obs, band.var))
    s0 = int(band.trained[: r.start].sum())  # the trained rows before r: their states
    states = band.states[s0 : s0 + int(trained.sum())]
    base = band.first + r.start  # raster index of y's first patch
    if bool(trained.all()):  # every patch of the rows was trained on
        idx = torch.arange(base, base + y.shape[0], device=y.device)
        _estimate(model, states, y, ob, var, cfg, noise, idx)
        return
    if states.shape[0]:
        _estimate(model, states, y, ob, var, cfg, noise, trained.nonzero()[:, 0] + base, trained)
    if bool(fresh.any()):
        idx = fresh.nonzero()[:, 0] + base
        _estimate_fresh(dictionary, model, y, ob, var, cfg, noise, fresh, idx)


def _only(weights, kept: torch.Tensor | None, y: torch.Tensor):
    """The merge weights of a band's patches y (n, D), (p·p,) alike or (n, D) per value (None:
    all 1), zero for the patches not ``kept`` ((n,) bool; None: all kept): per value then."""
    if kept is None:
        return weights
    if weights is None or weights.dim() == 1:
        base = torch.ones(1, device=y.device, dtype=y.dtype) if weights is None else weights
        weights = base.to(y.dtype).repeat(y.shape[1] // base.numel())  # (D,)
    return weights * kept[:, None].to(y.dtype)


def _estimate(model, states, y, obs, var, cfg, noise, idx, rows=None) -> None:
    """Posterior means of the trained patches y[rows] (all: None; raster indices idx) from
    their trained states after the final sweeps, written over y (and their variances into
    var, unless None)."""
    if rows is None:
        estimate_patches(model, states, y, obs, cfg, noise, out=y, var=var, idx=idx)
        return
    part, v = y[rows], None if var is None else var[rows]
    ob = None if obs is None else obs[rows]
    y[rows] = estimate_patches(model, states, part, ob, cfg, noise, out=part, var=v, idx=idx)
    if var is not None:
        var[rows] = v


def _estimate_fresh(dictionary, model, y, obs, var, cfg, noise, rows, idx) -> None:
    """Posterior means of the patches y[rows] that were not trained on, written over y: over
    the whole dictionary (``fresh_sweeps`` 0), or after that many E-step sweeps starting
    from their S best entries. A patch the dictionary explains poorly (its best entry leaves a
    residual above ``dictionary.poor``, see :meth:`Dictionary.set_poor_fit`) gets
    ``poor_fit_sweeps`` sweeps from there instead, when they are more. ``idx``: the raster
    indices of y[rows]. Their variances go into var, unless None."""
    part = y[rows]
    ob = None if obs is None else obs[rows]
    mean, v = torch.empty_like(part), None if var is None else torch.empty_like(part)
    size = cfg.chunk_size or part.shape[0]  # planned (plan.py); 0: one chunk
    rescue = dictionary.poor is not None  # set only when poor_fit_sweeps > fresh_sweeps
    poor = torch.zeros(part.shape[0], dtype=torch.bool, device=part.device)
    for ch in chunks(part.shape[0], size):
        och = None if ob is None else ob[ch]
        if cfg.fresh_sweeps == 0:  # the posterior over the whole dictionary
            m, vv, best = dictionary.posterior(part[ch], och, var=v is not None)
            mean[ch] = m
            if v is not None:
                v[ch] = vv
        else:
            top = dictionary.top(part[ch], och, cfg.n_states)
            sweep = (noise, FRESH, idx[ch])
            _sweep_fresh(
                dictionary, model, part[ch], och, top, cfg.fresh_sweeps, cfg, sweep, mean[ch],
                None if v is None else v[ch],
            )  # fmt: skip
            best = top.indices[:, 0]
        if rescue:
            poor[ch] = dictionary.residual(part[ch], och, best) > dictionary.poor
    if rescue:  # the poorly explained patches again, with more sweeps (B' << B: gathered)
        which = poor.nonzero()[:, 0]
        for ch in chunks(which.numel(), size):
            sel = which[ch]
            och = None if ob is None else ob[sel]
            top = dictionary.top(part[sel], och, cfg.n_states)
            m = torch.empty_like(part[sel])
            vv = None if v is None else torch.empty_like(m)
            sweep = (noise, POOR, idx[sel])
            _sweep_fresh(
                dictionary, model, part[sel], och, top, cfg.poor_fit_sweeps, cfg, sweep, m, vv
            )
            mean[sel] = m
            if v is not None and vv is not None:
                v[sel] = vv
    y[rows] = mean
    if var is not None:
        var[rows] = v


def _sweep_fresh(dictionary, model, y, obs, top, sweeps, cfg, source, mean, var) -> None:
    """Posterior mean and variance (into ``mean`` and, unless None, ``var``, (B, D)) of
    patches y (B, D) whose best dictionary entries are ``top`` (a top-k of
    :meth:`Dictionary.scores`), after ``sweeps`` (at least 1) E-step sweeps starting there
    (``source``: the :class:`PatchNoise`, its stream and the patches' raster indices)."""
    seeds, a = dictionary.states[top.indices], dictionary.a[top.indices]
    noise, stream, idx = source
    # the seeds' free-energy terms, as the E-step scores them (without ‖y‖²_obs / 2σ²)
    sq = (y * y).sum(1) if obs is None else (obs * y).square().sum(1)
    score = top.values - (sq / (2 * dictionary.sigma2))[:, None]  # (B, S), as the E-step's
    norm = (a[..., -1] - score).clamp(min=0).sqrt()  # score = log p(s) − norm²
    f0 = torch.logsumexp(score, 1)
    estimate_patches(
        model,
        seeds,
        y,
        obs,
        cfg,
        noise,
        out=mean,
        var=var,
        a=a,
        sweeps=sweeps,
        idx=idx,
        stream=stream,
        f0=f0,
        scored=(score, norm),
    )


@torch.no_grad()
def estimate_patches(
    model: Model,
    states: torch.Tensor,
    y: torch.Tensor,
    obs: torch.Tensor | None,
    cfg: Config,
    noise: PatchNoise | torch.Generator,
    out: torch.Tensor | None = None,
    var: torch.Tensor | None = None,
    a: torch.Tensor | None = None,
    sweeps: int | None = None,
    idx: torch.Tensor | None = None,
    stream: int = 0,
    f0: torch.Tensor | None = None,
    scored: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Posterior mean ⟨μ(s)⟩_q of every patch y (N, D), after at most ``sweeps`` (default
    ``cfg.final_sweeps``) E-step sweeps from its states (N, S, W) (packed; updated in place)
    under the final parameters, chunk by chunk (``cfg.chunk_size`` patches, 0: all at once;
    a chunk's sweeps follow each other, so each reuses the previous one's first-layer
    pre-activations, and the mean needs no decoder pass through the first layer).

    A patch stops sweeping once a sweep raised its free-energy term logsumexp_s log p(y, s)
    by less than ``cfg.sweep_tol`` (0: every patch takes every sweep): what the posterior
    mean could still gain is then below what its set's worst states weigh. ``f0`` (N,): the
    terms before the first sweep (up to the per-patch constant the E-step's scores omit),
    where known; without it every patch takes at least two sweeps.

    ``out`` receives the estimate; it may be ``y`` itself (each chunk of y is read before it is
    overwritten), which saves an (N, D) array on large images. ``var`` (N, D), if given,
    receives the posterior variance of μ(s) per value. ``a`` (N, S, width_1 + 1): the states'
    extended pre-activations, if known (:func:`evolution.preactivations`), and ``scored`` their
    (score, norm) (N, S) each as :class:`~evodenoise.evolution.EStep` gives them.

    ``noise``: the random numbers, a :class:`PatchNoise` (of the patches' raster indices
    ``idx``, default 0 … N−1, and ``stream``), or a generator that seeds one.
    """
    if isinstance(noise, torch.Generator):
        seed = int(torch.randint(2**62, (1,), generator=noise, device=noise.device))
        noise = PatchNoise(cfg, seed, y.device)
    idx = torch.arange(y.shape[0], device=y.device) if idx is None else idx
    consts = model.constants()
    est = torch.empty_like(y) if out is None else out
    n_sweeps = cfg.final_sweeps if sweeps is None else sweeps
    for c in chunks(y.shape[0], cfg.chunk_size or y.shape[0]):
        ob = None if obs is None else obs[c]
        f = None if f0 is None else f0[c]
        sc = None if scored is None else tuple(t[c] for t in scored)
        a_c = None if a is None else a[c]
        s_c, a_c, q = _sweeps(model, y[c], ob, states[c], a_c, f, sc, n_sweeps, cfg, consts,
                              functools.partial(noise, stream), idx[c])  # fmt: skip
        states[c] = s_c
        h = a_c[..., :-1]  # (B, S, width_1)
        if var is None:  # the output layer once per patch, not once per state
            est[c] = model.decoder.mean(h, q)
        else:
            mu = model.decoder.rest(h)  # (B, S, D)
            est[c] = torch.einsum("bs,bsd->bd", q, mu)
            var[c] = torch.einsum("bs,bsd->bd", q, mu * mu) - est[c] ** 2
    return est


def _sweeps(model, y, obs, s, a, f, scored, sweeps, cfg, consts, noise, idx):
    """At most ``sweeps`` E-step sweeps of one chunk's patches y (B, D) from states s (B, S, W)
    (``a``: their pre-activations, when known; ``scored``: their (score, norm), when known),
    a patch stopping once a sweep gained less than ``cfg.sweep_tol`` on its term f (B,)
    (None: unknown before the first sweep). Each sweep after the first takes the kept states'
    scores from the one before (the parameters are fixed). Returns the states, their extended
    pre-activations (B, S, width_1 + 1) and the posterior q (B, S). ``noise(sweep, idx)``:
    the random numbers of the patches idx."""
    f = None if f is None else f.clone()
    q = None
    live = None  # the rows still sweeping: all (None) or these indices
    for sweep in range(sweeps):
        rows = slice(None) if live is None else live
        e = estep_rows(
            model, y[rows], None if obs is None else obs[rows], s[rows], noise(sweep, idx[rows]),
            consts, cfg, a=None if a is None else a[rows], keep=True,
            scored=None if scored is None else tuple(t[rows] for t in scored),
        )  # fmt: skip
        if live is None:
            s, a, q, scored = e.states, e.a, e.q, (e.score, e.norm)
        else:
            s[live], a[live], q[live] = e.states, e.a, e.q
            scored[0][live], scored[1][live] = e.score, e.norm
        if cfg.sweep_tol <= 0 or sweep == sweeps - 1:
            continue
        term = torch.logsumexp(e.score, 1)  # less the per-patch constant, as f
        if f is None:
            f, go = term, None  # unknown gain: every row sweeps again
        else:
            go = term - f[rows] >= cfg.sweep_tol
            f[rows] = term
        if go is not None:
            live = go.nonzero()[:, 0] if live is None else live[go]
            if live.numel() == 0:
                break
    assert a is not None and q is not None  # at least one sweep (sweeps >= 1)
    return s, a, q
