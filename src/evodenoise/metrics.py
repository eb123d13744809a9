"""Image quality metrics of the benchmark protocol (docs/benchmarks.md): whole-image PSNR and SSIM.

Thin wrappers over :mod:`skimage.metrics` so that every caller uses the same settings:
the whole image, an explicit ``data_range`` (1.0 for images on the [0, 1] scale, 255 for the
8-bit scale) and, for (H, W, C) colour images, ``channel_axis=-1``.
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

__all__ = ["psnr", "ssim"]


def _check(reference, estimate, data_range):
    reference = np.asarray(reference, dtype=np.float64)
    estimate = np.asarray(estimate, dtype=np.float64)
    if reference.shape != estimate.shape:
        raise ValueError(f"shapes differ: reference {reference.shape} vs estimate {estimate.shape}")
    if reference.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image (got shape {reference.shape})")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0 (got {data_range})")
    return reference, estimate


def psnr(reference, estimate, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole image.

    ``10 * log10(data_range**2 / mean((reference - estimate)**2))``; ``inf`` when identical.
    """
    reference, estimate = _check(reference, estimate, data_range)
    if np.array_equal(reference, estimate):
        return float("inf")
    return float(peak_signal_noise_ratio(reference, estimate, data_range=data_range))


def ssim(reference, estimate, data_range: float = 1.0) -> float:
    """Mean structural similarity (scikit-image defaults: 7x7 uniform window) over the image.

    Colour images of shape (H, W, C) are compared per channel (``channel_axis=-1``) and
    averaged.
    """
    reference, estimate = _check(reference, estimate, data_range)
    channel_axis = -1 if reference.ndim == 3 else None
    return float(
        structural_similarity(reference, estimate, data_range=data_range, channel_axis=channel_axis)
    )
