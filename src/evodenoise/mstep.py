"""The M-step: one Adam step on the decoder, and π and σ² in closed form.

The decoder step maximises the truncated free energy Σ_n w_n logsumexp_{s∈K_n} log p(y_n, s)
of a mini-batch with its sets K_n fixed (:func:`decoder_grads`, back-propagated by hand). π and
σ² maximise it in closed form from the posterior sums an epoch's E-steps gather
(:func:`add_estep_sums`, :func:`epoch_sums`, :class:`PosteriorStats`).
"""

from __future__ import annotations

import torch

from .config import Config
from .model import PI_MIN, Constants, Model, as_rows
from .states import unpack


def learning_rate(t, cfg: Config):
    """Triangular cyclic learning rate at (fractional) epoch t (a number, or a tensor of them).

    Starts at ``lr_min``, peaks after a half cycle, and the number of cycles is rounded so
    that the last epoch ends exactly at a minimum (where the estimate is taken).
    """
    cycles = max(1, round(cfg.epochs / (2 * cfg.lr_half_cycle)))
    length = cfg.epochs / cycles
    phase = (t % length) / length
    return cfg.lr_min + (cfg.lr_max - cfg.lr_min) * (1 - abs(2 * phase - 1))


def make_adam(params: list, lr) -> torch.optim.Adam:
    """Adam with the fused (one-kernel) update where this torch supports it on the params'
    device (CPU from torch 2.4): ~10 % of a small M-step is the optimiser's own overhead. ``lr``
    may be a device tensor (the schedule then never leaves the device); on CUDA the update is
    ``capturable`` (no host sync, fits in a CUDA graph)."""
    cuda = params[0].is_cuda
    for kw in (dict(fused=True, capturable=cuda), dict(capturable=cuda), {}):
        try:
            return torch.optim.Adam(params, lr=lr, **kw)
        except (RuntimeError, ValueError, TypeError):
            continue
    return torch.optim.Adam(params, lr=float(lr))


def decoder_grads(
    model: Model,
    y: torch.Tensor,
    obs: torch.Tensor | None,
    states: torch.Tensor,
    w: torch.Tensor,
    consts,
    cfg: Config,
) -> list[torch.Tensor]:
    """Gradients of the decoder's parameters (``model.decoder.parameters()`` order) of the
    M-step loss −Σ_n w_n logsumexp_s log p(y_n, s) / Σ_n w_n over the best ``grad_states`` of
    each K_n, states (B, S, W) packed, weights w (B,) (0 for padding rows).

    Written out (checked against autograd in the tests): with q = softmax of the log-joints,
    ∂loss/∂μ(s) = w_n q_ns r² (μ(s) − y_n) / (σ² Σw) (r: ``obs``, the values' weights), back-propagated by hand through the MLP:
    no autograd graph, a fixed number of operator calls (:func:`mstep`).
    """
    k = cfg.grad_states or cfg.n_states
    s = unpack(states[:, :k], cfg.n_latents, y.dtype)  # (B, K, H)
    return mstep(model, y, obs, s, None, (w * (2 * consts.inv2s2 / w.sum()))[:, None, None], consts)


def mstep(
    model: Model,
    y: torch.Tensor,
    obs: torch.Tensor | None,
    s: torch.Tensor,
    lj: torch.Tensor | None,
    wn: torch.Tensor,
    consts,
) -> list[torch.Tensor]:
    """:func:`decoder_grads` on unpacked states s (B, K, H) (y, obs: (B, D) or (B, 1, D)) with
    weights wn (B, 1, 1) = w_n · 2/(2σ²) / Σw; ``lj`` (B, K, 1): their log-joints up to a
    constant per point under the current parameters, as the E-step just computed them (None:
    computed here)."""
    b, k, h = s.shape
    s = s.reshape(b * k, h)
    mu, cache = model.decoder.forward_cached(s)  # (B·K, D)
    diff = mu.view(b, k, -1) - as_rows(y)
    if obs is not None:
        diff = diff * as_rows(obs)
    if lj is None:
        sq = torch.linalg.vector_norm(diff, dim=-1, keepdim=True).square()
        lj = torch.addcmul((s @ consts.logit).view(b, k, 1), sq, -consts.inv2s2)  # (B, K, 1)
    coef = torch.softmax(lj, 1) * wn  # (B, K, 1)
    if obs is not None:  # ∂/∂μ of r² (μ − y)²: r once more (a 0/1 mask: the same)
        diff = diff * as_rows(obs)
    return model.decoder.backward((diff * coef).view(b * k, -1), cache)


def add_estep_sums(acc: torch.Tensor, lj: torch.Tensor, bits: torch.Tensor, w: torch.Tensor):
    """Add one E-batch's weighted posterior sums to ``acc`` (1, H + 2): Σ_n w_n ⟨s⟩_q,
    Σ_n w_n ⟨log-joint⟩_q and Σ_n w_n logsumexp_s (log-joints), from log-joints less their
    per-point constant lj (B, S), unpacked states bits (B, S, H) and weights w (B, 1) (0 for
    padding rows). One matrix product over [s, log-joint, logsumexp] per state."""
    b, n_s, h = bits.shape
    q = torch.softmax(lj, 1) * w  # (B, S)
    lj = lj.unsqueeze(2)
    lse = torch.logsumexp(lj, 1, keepdim=True).expand(b, n_s, 1)
    x = torch.cat([bits, lj, lse], 2)  # (B, S, H + 2)
    acc.addmm_(q.view(1, -1), x.view(b * n_s, h + 2))


class PosteriorStats:
    """An epoch's sums of posterior expectations, for the closed-form M-step:
    π_h = mean_n ⟨s_h⟩_q and σ² = Σ_n ⟨‖y_n − μ(s)‖²_obs⟩_q / Σ_n D_n. The sums stay on the
    device, one vector (H + 3,): Σ⟨s⟩, Σ⟨sqerr⟩, ΣF, ΣD over the epoch's n points."""

    def __init__(self, acc: torch.Tensor, consts: Constants, n: int, d_sum: torch.Tensor):
        """From an epoch's E-step sums ``acc`` (1, H + 2) (see :func:`add_estep_sums`) under that
        epoch's ``consts``, over n points whose observed values number ``d_sum`` in all.

        log p(y, s) = log p(s) − ‖y − μ(s)‖²_obs / (2σ²) − (D_n/2) log 2πσ² gives
        Σ ⟨sqerr⟩ = 2σ² (Σ⟨s⟩ · logit π + n Σ_h log(1 − π_h) − Σ⟨log-joint less constant⟩),
        and the free energy's constant is −½ log(2πσ²) Σ_n D_n."""
        s, lj, lse = acc[0, :-2], acc[0, -2], acc[0, -1]
        err = (s @ consts.logit[:, 0] + n * consts.base[0] - lj) / consts.inv2s2
        self.sums = torch.cat([s, torch.stack([err, lse - consts.half_log * d_sum, d_sum])])
        self.n = n

    @property
    def s(self) -> torch.Tensor:
        return self.sums[:-3]  # Σ_n ⟨s⟩_q (H,)

    @property
    def err(self) -> torch.Tensor:
        return self.sums[-3]  # Σ_n ⟨‖y_n − μ(s)‖²_obs⟩_q

    @property
    def f(self) -> torch.Tensor:
        return self.sums[-2]  # Σ_n F_n, the truncated free energy

    @property
    def d(self) -> torch.Tensor:
        return self.sums[-1]  # Σ_n D_n, the observed values

    def pi(self) -> torch.Tensor:
        return (self.s / self.n).clamp(PI_MIN, 1 - PI_MIN)

    def sigma2(self, floor2: float = 0.0) -> torch.Tensor:
        return (self.err / self.d).clamp(min=floor2)
