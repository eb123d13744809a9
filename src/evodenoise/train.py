"""Training by evolutionary truncated-posterior EM, and the posterior-mean estimate.

Per epoch: shuffle the patches; for each E-step batch evolve its states (E-step), then for each
mini-batch in it one Adam step on the decoder maximising Σ_n logsumexp_{s∈K_n} log p(y_n, s)
(the truncated free energy, K fixed). π and σ² are updated in closed form at the end of the
epoch from the posterior statistics gathered by that epoch's E-steps.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .config import Config
from .evolution import evolve, init_states, unpack
from .model import PI_MIN, Model
from .patches import chunks


def learning_rate(t: float, cfg: Config) -> float:
    """Triangular cyclic learning rate at (fractional) epoch t.

    Starts at ``lr_min``, peaks after a half cycle, and the number of cycles is rounded so
    that the last epoch ends exactly at a minimum (where the estimate is taken).
    """
    cycles = max(1, round(cfg.epochs / (2 * cfg.lr_half_cycle)))
    length = cfg.epochs / cycles
    phase = (t % length) / length
    return cfg.lr_min + (cfg.lr_max - cfg.lr_min) * (1 - abs(2 * phase - 1))


def _adam(params: list, lr: float) -> torch.optim.Adam:
    """Adam with the fused (one-kernel) update where this torch supports it on the params'
    device (CPU from torch 2.4): ~10 % of a small M-step is the optimiser's own overhead."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, lr=lr)


@dataclass
class Fit:
    """A trained model with each patch's state set K (packed, best first), and the config it was
    trained with."""

    model: Model
    states: torch.Tensor  # (N, S, W) int64
    config: Config
    log: list[dict] = field(default_factory=list)


class PosteriorStats:
    """Running sums of posterior expectations for the closed-form M-step:
    π_h = mean_n ⟨s_h⟩_q and σ² = Σ_n ⟨‖y_n − μ(s)‖²_obs⟩_q / Σ_n D_n."""

    def __init__(self, n_latents: int, device):
        self.s = torch.zeros(n_latents, device=device)
        self.err = torch.zeros((), device=device)
        self.n = 0
        self.d = torch.zeros((), device=device)
        self.f = torch.zeros((), device=device)

    def add(self, out, bits: torch.Tensor, obs: torch.Tensor | None, d: int) -> None:
        q = out.q  # (B, S); bits: the states unpacked, (B, S, H)
        self.s += torch.einsum("bs,bsh->h", q, bits)
        self.err += (q * out.sqerr).sum()
        self.n += q.shape[0]
        self.d += q.shape[0] * d if obs is None else obs.sum()
        self.f += out.f.sum()

    def pi(self) -> torch.Tensor:
        return (self.s / self.n).clamp(PI_MIN, 1 - PI_MIN)

    def sigma2(self, floor2: float = 0.0) -> torch.Tensor:
        return (self.err / self.d).clamp(min=floor2)


def fit(y: torch.Tensor, obs: torch.Tensor | None, cfg: Config, gen: torch.Generator, *,
        sigma: float | None = None, unit: float = 1.0,
        callback: Callable[[dict], None] | None = None) -> Fit:
    """Train on centred patches y (N, D) with observation mask obs (N, D) or None.

    ``sigma`` (in y's units): with ``cfg.sigma_mode == "fixed"`` σ stays there, with ``"init"``
    training starts there; None learns σ from the data's variance as a start. ``unit``: one
    unit of y in 0–255 units (y may be standardised); ``cfg.sigma_floor`` is converted with it.
    """
    n, d = y.shape
    device = y.device
    floor2 = (cfg.sigma_floor / unit) ** 2
    if sigma is None:
        var = y.var() if obs is None else y[obs > 0].var()
        sigma2 = float(var)
    else:
        sigma2 = float(sigma) ** 2
    model = Model(cfg.n_latents, d, cfg.hidden, cfg.activation, max(sigma2, floor2), gen)
    learn_sigma = sigma is None or cfg.sigma_mode == "init"
    opt = _adam(list(model.decoder.parameters()), cfg.lr_min)
    states = init_states(n, cfg.n_states, cfg.n_latents, gen, device)
    # E-step batches hold whole mini-batches, so an epoch has exactly ceil(n_train / batch) steps.
    e_batch = math.ceil(max(cfg.estep_batch, cfg.batch_size) / cfg.batch_size) * cfg.batch_size
    n_train = n
    steps = math.ceil(n_train / cfg.batch_size)
    result = Fit(model, states, cfg)
    k = cfg.grad_states or cfg.n_states  # states per patch in the gradient (best first)
    for epoch in range(cfg.epochs):
        t0 = time.perf_counter()
        stats = PosteriorStats(cfg.n_latents, device)
        perm = torch.randperm(n, generator=gen, device=device)[:n_train]
        step = 0
        for eb in chunks(n_train, e_batch):
            idx = perm[eb]
            yb = y[idx]
            ob = None if obs is None else obs[idx]
            out = evolve(model, yb, ob, states[idx], cfg, gen)
            states[idx] = out.states
            bits = unpack(out.states, cfg.n_latents)  # (E, S, H)
            stats.add(out, bits, ob, d)
            for mb in chunks(len(idx), cfg.batch_size):
                lr = learning_rate(epoch + step / steps, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                lj = model.log_joint(yb[mb], bits[mb, :k], None if ob is None else ob[mb])
                loss = -torch.logsumexp(lj, dim=1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
        with torch.no_grad():
            model.pi.copy_(stats.pi())
            if learn_sigma:
                model.sigma2.copy_(stats.sigma2(floor2))
        entry = {
            "epoch": epoch + 1,
            "epochs": cfg.epochs,
            "free_energy": float(stats.f / stats.n),
            "sigma": float(model.sigma2.sqrt()),
            "mean_active": float(model.pi.sum()),
            "lr": learning_rate(epoch + 1, cfg),
            "seconds": time.perf_counter() - t0,
        }
        result.log.append(entry)
        if callback is not None:
            callback(entry)
    return result


@torch.no_grad()
def estimate(fitted: Fit, y: torch.Tensor, obs: torch.Tensor | None, cfg: Config,
             gen: torch.Generator, out: torch.Tensor | None = None,
             var: torch.Tensor | None = None) -> torch.Tensor:
    """Posterior mean ⟨μ(s)⟩_q of every patch, (N, D), after ``cfg.final_sweeps`` E-step sweeps
    over all patches under the final parameters (chunks of ``cfg.chunk_size`` patches).

    ``out`` receives the estimate; it may be ``y`` itself (each chunk of y is read before it is
    overwritten), which saves an (N, D) array on large images. ``var`` (N, D), if given,
    receives the posterior variance of μ(s) per value.
    """
    model, states = fitted.model, fitted.states
    n = y.shape[0]
    est = torch.empty_like(y) if out is None else out
    for sweep in range(cfg.final_sweeps):
        for c in chunks(n, cfg.chunk_size):
            ob = None if obs is None else obs[c]
            e = evolve(model, y[c], ob, states[c], cfg, gen)
            states[c] = e.states
            if sweep == cfg.final_sweeps - 1:
                mu = model.decoder(unpack(e.states, cfg.n_latents))  # (B, S, D)
                est[c] = torch.einsum("bs,bsd->bd", e.q, mu)
                if var is not None:
                    var[c] = torch.einsum("bs,bsd->bd", e.q, mu * mu) - est[c] ** 2
    return est
