"""Image quality metrics of the benchmark protocol (docs/benchmarks.md): whole-image PSNR and SSIM.

Every caller uses the same settings: the whole image, an explicit ``data_range`` (1.0 for
images on the [0, 1] scale, 255 for the 8-bit scale) and, for (H, W, C) colour images, SSIM per
channel (``channel_axis=-1``) averaged. SSIM is scikit-image's (7x7 uniform window), computed
in bands of rows: its map at a value depends only on the 7x7 values around it, so bands that
overlap by 3 rows give the whole image's mean exactly, in O(band · W) memory, not the dozen
float64 images of the whole map (over 3 GB for a 12-megapixel photo).
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

__all__ = ["psnr", "ssim"]

BAND_ROWS = 256  # rows of the SSIM map per band (and of the squared error per pass)
WINDOW = 7  # scikit-image's default SSIM window


def _check(reference, estimate, data_range):
    reference, estimate = np.asarray(reference), np.asarray(estimate)
    if reference.shape != estimate.shape:
        raise ValueError(f"shapes differ: reference {reference.shape} vs estimate {estimate.shape}")
    if reference.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image (got shape {reference.shape})")
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0 (got {data_range})")
    return reference, estimate


def _f64(a: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def psnr(reference, estimate, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over the whole image.

    ``10 * log10(data_range**2 / mean((reference - estimate)**2))``; ``inf`` when identical.

    Examples
    --------
    >>> import numpy as np
    >>> round(psnr(np.zeros((4, 4)), np.full((4, 4), 0.1)), 6)  # MSE 0.01 on [0, 1]
    20.0
    """
    reference, estimate = _check(reference, estimate, data_range)
    sq = 0.0
    for r in range(0, reference.shape[0], BAND_ROWS):
        band = slice(r, r + BAND_ROWS)
        sq += float(np.sum(np.square(_f64(reference[band]) - _f64(estimate[band]))))
    if sq == 0:
        return float("inf")
    return float(10 * np.log10(data_range**2 / (sq / reference.size)))


def ssim(reference, estimate, data_range: float = 1.0) -> float:
    """Mean structural similarity (scikit-image defaults: 7x7 uniform window) over the image.

    Colour images of shape (H, W, C) are compared per channel (``channel_axis=-1``) and
    averaged. ``ValueError`` on an image smaller than the window.
    """
    reference, estimate = _check(reference, estimate, data_range)
    channel_axis = -1 if reference.ndim == 3 else None
    h, pad = reference.shape[0], (WINDOW - 1) // 2

    def mean(rows: slice) -> float:
        return float(
            structural_similarity(
                _f64(reference[rows]),
                _f64(estimate[rows]),
                data_range=data_range,
                channel_axis=channel_axis,
            )
        )

    if h <= BAND_ROWS + 2 * pad:
        return mean(slice(None))
    # scikit-image averages the map without its outer `pad` rows and columns: bands of those
    # rows [a, b), each computed with `pad` rows of context on both sides, weighted by rows
    total = 0.0
    for a in range(pad, h - pad, BAND_ROWS):
        b = min(a + BAND_ROWS, h - pad)
        total += mean(slice(a - pad, b + pad)) * (b - a)
    return total / (h - 2 * pad)
