"""The streaming estimate: the image rebuilt band by band under a trained model.

Training keeps states only for its pool of patches (``Config.train_patches``). After training
the image is estimated one band of patch rows at a time: a band's patches take their trained
states when they are in the pool, and fresh states otherwise; ``final_sweeps`` E-step sweeps
under the final parameters improve them, their posterior means are folded into the output and
the band's states are freed. Memory is O(band + pool + model), never O(image × S).

Fresh states start as the S most probable, for each patch, of a dictionary: the
``dictionary_size`` states that occur most often in the pool's trained sets. Scoring a patch
against the whole dictionary is one matrix product, ‖y − μ_k‖² = ‖y‖² − 2 y·μ_k + ‖μ_k‖², so
the sweeps start near a trained patch's state set instead of at random sparse states.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .config import Config
from .evolution import unpack
from .model import Model
from .patches import band_patches, chunks, fold_rows, patch_weights
from .train import Fit, estimate


def build_dictionary(fitted: Fit, size: int) -> torch.Tensor:
    """The ``size`` distinct states that occur most often in the pool's sets: packed (K, W)."""
    states = fitted.states.reshape(-1, fitted.states.shape[-1])  # (M·S, W)
    uniq, counts = torch.unique(states, dim=0, return_counts=True)
    top = torch.topk(counts, min(size, counts.numel())).indices
    return uniq[top]


@torch.no_grad()
def dictionary_states(model: Model, dictionary: torch.Tensor, y: torch.Tensor,
                      obs: torch.Tensor | None, n_states: int) -> torch.Tensor:
    """For each patch y (B, D) the ``n_states`` dictionary states (K, W) of highest log-joint:
    packed (B, S, W). Terms constant per patch are left out; they do not change the order."""
    s = unpack(dictionary, model.pi.numel())  # (K, H)
    mu = model.decoder(s)  # (K, D)
    prior = model.log_prior(s)  # (K,)
    if obs is None:
        sq = (mu * mu).sum(1)[None, :] - 2 * y @ mu.T  # (B, K): ‖y − μ‖² − ‖y‖²
    else:
        sq = obs @ (mu * mu).T - 2 * (obs * y) @ mu.T
    score = prior[None, :] - sq / (2 * model.sigma2)
    best = torch.topk(score, n_states, dim=1).indices  # (B, S)
    return dictionary[best]


def band_rows(cfg: Config, width: int, height: int) -> int:
    """Patch rows per band: ``cfg.band_rows``, or (0) rows making about 65,536 patches."""
    rows_total = height - cfg.patch_size + 1
    if cfg.band_rows:
        return min(cfg.band_rows, rows_total)
    return min(rows_total, max(1, 65536 // (width - cfg.patch_size + 1)))


@torch.no_grad()
def estimate_image(fitted: Fit, x: torch.Tensor, observed: torch.Tensor | None,
                   pool: torch.Tensor, cfg: Config, gen: torch.Generator,
                   callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """The merged posterior-mean estimate (C, H, W) of the image x (C, H, W).

    ``observed`` (C, H, W) is 1 where a value is observed (None: all are); ``pool`` (M,) the
    sorted raster indices of the patches ``fitted`` was trained on (its states, in that order).
    ``callback(band, bands)`` is called after each band.
    """
    c, h, w = x.shape
    p = cfg.patch_size
    cols = w - p + 1
    rows = band_rows(cfg, w, h)
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
        lo, hi = (int(torch.searchsorted(pool, r * cols)) for r in (r0, r1))
        if hi - lo == yb.shape[0]:  # every patch of the band was trained on
            states = fitted.states[lo:hi]
        else:
            if dictionary is None:
                dictionary = build_dictionary(fitted, cfg.dictionary_size)
            states = torch.empty(yb.shape[0], *fitted.states.shape[1:],
                                 dtype=fitted.states.dtype, device=x.device)
            for ch in chunks(yb.shape[0], cfg.chunk_size):
                states[ch] = dictionary_states(model, dictionary, yb[ch],
                                               None if ob is None else ob[ch], cfg.n_states)
            states[pool[lo:hi] - r0 * cols] = fitted.states[lo:hi]
        var = torch.empty_like(yb) if cfg.merge == "variance" else None
        est = estimate(Fit(model, states, cfg), yb, ob, cfg, gen, out=yb, var=var)
        if var is not None:  # inverse posterior variance, floored at σ²/D per value
            weights = 1.0 / (var.clamp(min=0) + model.sigma2 / yb.shape[1])
        fold_rows(num, den, est, r0, p, weights)
        del yb, ob, states, est
        if callback is not None:
            callback(b + 1, bands)
    return num / den
