"""Noise levels estimated from the image itself.

Real camera noise is correlated between neighbouring pixels (demosaicing, in-camera
processing): scikit-image's wavelet estimator, which reads σ from the finest scale's detail
coefficients, then sees a fraction of it (a third to a half on real photos). Averaging 2x2
blocks first halves white noise exactly and removes most of the fine-scale correlation, so
twice the estimate on the half-size image reads white noise as before and correlated noise
near its true per-pixel σ (benchmarks/RESULTS.md, real camera photos).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

MIN_SIGMA = 1e-3  # 0–255 units: a plane without variation has no measurable noise


def estimate_sigma(planes: torch.Tensor, decorrelate: bool = True) -> float:
    """Noise σ of planes (C, H, W) or (H, W) of 0–255 values, the root mean square over the
    planes of scikit-image's wavelet estimate; with ``decorrelate`` (and planes of at least
    16x16 pixels) twice the estimate on 2x2-block means. At least ``MIN_SIGMA``.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> white = 10 * torch.randn(256, 256, generator=g, dtype=torch.float64)
    >>> round(estimate_sigma(white), 0), round(estimate_sigma(white, decorrelate=False), 0)
    (10.0, 10.0)
    """
    from skimage.restoration import estimate_sigma as wavelet_sigma

    x = planes.detach().double().cpu()
    x = x[None] if x.ndim == 2 else x
    c, h, w = x.shape
    factor = 1.0
    if decorrelate and min(h, w) >= 16:
        x = torch.nn.functional.avg_pool2d(x[:, : h // 2 * 2, : w // 2 * 2][None], 2)[0]
        factor = 2.0
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values = [float(wavelet_sigma(p.numpy())) for p in x]
    sigma = factor * math.sqrt(sum(v * v for v in values) / len(values))
    return sigma if math.isfinite(sigma) and sigma > MIN_SIGMA else MIN_SIGMA
