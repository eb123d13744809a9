"""The benchmark corruption protocol (docs/benchmarks.md): additive Gaussian noise and random masks.

Both functions are deterministic given ``seed`` and draw from ``np.random.default_rng(seed)``
only, so a (image, task, seed) triple always yields the same corrupted input.

Protocol
--------
* Noise: ``noisy = image + sigma * N(0, 1)``, computed in float, **not clipped and not
  quantised**; ``sigma`` is in the units of ``image`` (25 for an image on the 0-255 scale,
  25/255 for one on the [0, 1] scale). Clipping or rounding would change the noise
  statistics and make PSNR figures incomparable with the literature.
* Mask: every value (every pixel of every channel) is missing independently with probability
  ``fraction``; ``True`` marks a missing value. For an (H, W, C) image pass ``image.shape``
  for per-value masks or ``image.shape[:2]`` for per-pixel masks.
"""

from __future__ import annotations

import numpy as np

__all__ = ["add_noise", "random_mask"]


def add_noise(image, sigma: float, seed: int = 0) -> np.ndarray:
    """``image + sigma * N(0, 1)`` as float32, unclipped and unquantised.

    Parameters
    ----------
    image : array_like
        Clean image of any shape, e.g. (H, W) or (H, W, C); any real dtype (an 8-bit image
        is used on its 0-255 scale as is).
    sigma : float
        Noise standard deviation, in the same units as ``image``. Must be >= 0.
    seed : int
        Seed of ``np.random.default_rng``; the same seed gives the same noise.

    Returns
    -------
    numpy.ndarray
        float32 array of ``image``'s shape. Values may leave the image's range.
    """
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0 (got {sigma})")
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"image must be a real numeric array (got dtype {image.dtype})")
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(image.shape)  # float64
    return (image.astype(np.float64) + sigma * noise).astype(np.float32)


def random_mask(shape, fraction: float, seed: int = 0) -> np.ndarray:
    """Boolean mask of ``shape``; ``True`` (missing) independently with probability ``fraction``.

    Parameters
    ----------
    shape : int or tuple of int
        Shape of the mask, e.g. ``image.shape``.
    fraction : float
        Probability that a value is missing, in [0, 1).
    seed : int
        Seed of ``np.random.default_rng``; the same seed gives the same mask.

    Returns
    -------
    numpy.ndarray
        bool array, ``True`` = missing.
    """
    fraction = float(fraction)
    if not (0.0 <= fraction < 1.0):
        raise ValueError(f"fraction must be in [0, 1) (got {fraction})")
    rng = np.random.default_rng(seed)
    return rng.random(shape) < fraction
