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
from dataclasses import dataclass

import numpy as np
import torch

MIN_SIGMA = 1e-3  # 0–255 units: a plane without variation has no measurable noise
SIGNAL_DEPENDENT = 1.5  # noise variance ratio, bright (90th pct) to dark (10th), that needs a VST
TRANSFORM_EVENS = 0.25  # ... and after the transform at least this ratio (noise.py, _evens_out)
WHITE = 0.6  # whiteness (Reading.whiteness) from which noise counts as white: camera photos
#   measure 0.18-0.32, white noise of σ >= 10 on the benchmark images 0.67-1.01
CORRELATED_BELOW = 0.4  # whiteness below which noise counts as correlated between
#   neighbours: camera photos 0.18-0.34, box-filtered white noise 0.35-0.37; white noise on
#   fine texture reads 0.4-0.6 from σ = 5 (gravel at σ = 5: 0.398)
UNSURE_FROM = 0.36  # whiteness from which up to WHITE the kind of noise, so its level, is
#   uncertain: fine texture under weak white noise reads as correlated noise would (gravel at
#   σ = 5: 0.40, its σ assumed 3.5x too large; grass: 0.48, 2.5x), and no single-image
#   statistic measured told them apart (benchmarks/RESULTS.md, table 4c); camera photos read
#   at most 0.343 (15 real photos, whole and centre crops), white noise from σ = 10 on the
#   benchmark images at least 0.67
CORRELATED = 1.4  # σ assumed for correlated noise, as a multiple of its estimate: a model of
#   white noise removes more of it at a σ above the per-pixel one (real camera photos:
#   benchmarks/RESULTS.md, table 4c)


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


@dataclass(frozen=True)
class Reading:
    """The noise of some planes as the estimators read it, once: σ at the finest scale and on
    2x2-block means (:func:`estimate_sigma`), and what follows from the two."""

    fine: float  # σ at the finest wavelet scale
    blocks: float  # twice σ at the finest scale of the 2x2-block means

    @property
    def whiteness(self) -> float:
        """``fine`` over ``blocks``. White noise reads alike on both (1 where the image is
        smooth; fine texture at low noise lowers it, to about 0.4 at σ = 5); noise correlated
        between neighbours, as in camera photos, reads three to five times lower at the finest
        scale (0.18–0.32)."""
        return self.fine / self.blocks

    @property
    def white(self) -> bool:
        """The noise looks white: whiteness at least ``WHITE``."""
        return self.whiteness >= WHITE

    @property
    def unsure(self) -> bool:
        """Whether the kind of noise, and so the σ assumed, is uncertain: whiteness from
        ``UNSURE_FROM`` up to ``WHITE``, where fine texture under weak white noise and noise
        correlated between neighbours read alike."""
        return UNSURE_FROM <= self.whiteness < WHITE

    @property
    def kind(self) -> str:
        """ "white", "correlated" or "between" (neither: white noise on fine texture)."""
        return "white" if self.white else "correlated" if self.correlated else "between"

    def as_dict(self) -> dict:
        """What the reading says, as plain values: the ``--json`` record's ``noise_reading``."""
        return {"whiteness": round(self.whiteness, 3), "kind": self.kind, "unsure": self.unsure}

    @property
    def correlated(self) -> bool:
        """The noise is correlated between neighbours: whiteness below ``CORRELATED_BELOW``."""
        return self.whiteness < CORRELATED_BELOW

    @property
    def sigma(self) -> float:
        """The σ a run assumes: white noise the finest-scale estimate, which sees all of it
        and less of the image's texture than the estimate on block means (that one read 11.3
        for σ = 5 on a textured photo, the finest scale 6.9); correlated noise ``CORRELATED``
        times the estimate on block means, which reads it near its per-pixel σ; in between
        (white noise on fine texture, where the block means read the texture: 24.5 for σ = 5
        on scikit-image's grass, the finest scale 12) the finest-scale estimate too, the
        smaller."""
        return CORRELATED * self.blocks if self.correlated else self.fine


def read_noise(planes: torch.Tensor) -> Reading:
    """The :class:`Reading` of planes (C, H, W) or (H, W) of 0–255 values."""
    return Reading(estimate_sigma(planes, decorrelate=False), estimate_sigma(planes))


def assume_sigma(planes: torch.Tensor) -> float:
    """The noise σ a run assumes for planes (C, H, W) or (H, W) of 0–255 values when none is
    given (:attr:`Reading.sigma`).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> white = 10 * torch.randn(256, 256, generator=g, dtype=torch.float64)
    >>> round(assume_sigma(white))
    10
    """
    return read_noise(planes).sigma


def is_correlated(planes: torch.Tensor) -> bool:
    """Whether the noise of planes (C, H, W) or (H, W) of 0–255 values is correlated between
    neighbours (:attr:`Reading.correlated`)."""
    return read_noise(planes).correlated


def is_white(planes: torch.Tensor) -> bool:
    """Whether the noise of planes (C, H, W) or (H, W) of 0–255 values looks white
    (:attr:`Reading.white`).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> white = 10 * torch.randn(128, 128, generator=g)
    >>> blurred = torch.nn.functional.avg_pool2d(white[None, None], 3, 1, 1)[0, 0]
    >>> is_white(white), is_white(blurred)
    (True, False)
    """
    return read_noise(planes).white


def estimate_poisson_gaussian(plane: torch.Tensor, block: int = 0) -> tuple[float, float]:
    """(a, c) of the noise level function var(y) = a·E[y] + c of a plane (H, W) of 0–255
    values: a ≥ 0 the Poisson gain, c = b² − a·offset the rest (Gaussian read noise b, less
    what a black level ``offset`` takes away: c may be negative). Blocks of ``block``²
    pixels (0: 8, or 4 on images of fewer than 160 such blocks) give (mean, noise variance) pairs, the variance from horizontal and vertical first
    differences (half the mean square of a difference of two noisy values, where the signal is
    smooth); per intensity decile the lower quartile of the blocks' variances (textured blocks
    overstate it), divided by what it is for pure noise (about 0.91), and a least-squares line
    through those ten points gives a and c.

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> clean = torch.linspace(10, 200, 256, dtype=torch.float64).repeat(256, 1)
    >>> noisy = torch.poisson(clean / 2, generator=g) * 2 + 3 * torch.randn(256, 256, generator=g)
    >>> a, c = estimate_poisson_gaussian(noisy)
    >>> abs(a - 2) < 0.2, abs(c - 9) < 9  # c is small next to a·mean: loosely determined
    (True, True)
    """
    from scipy.stats import chi2

    x = plane.detach().double().cpu()
    block = block or (8 if x.shape[0] * x.shape[1] >= 160 * 64 else 4)
    h, w = (s // block * block for s in x.shape)
    x = x[:h, :w]
    dx = torch.nn.functional.pad(x[:, 1:] - x[:, :-1], (0, 1))  # last column: no partner
    dy = torch.nn.functional.pad(x[1:, :] - x[:-1, :], (0, 0, 0, 1))  # last row: none

    def blocks(t):  # (H, W) -> (blocks, block²)
        return t.unfold(0, block, block).unfold(1, block, block).reshape(-1, block * block)

    # differences per block: all but the image's last column (dx) or last row (dy)
    n_dx = blocks((torch.arange(w) < w - 1).expand(h, w)).sum(1)
    n_dy = blocks((torch.arange(h)[:, None] < h - 1).expand(h, w)).sum(1)
    mean = blocks(x).mean(1)
    var = (blocks(dx).square().sum(1) / n_dx + blocks(dy).square().sum(1) / n_dy) / 4
    dof = 2 * block * (block - 1)  # differences per block
    low = float(chi2.ppf(0.25, dof)) / dof  # the lower quartile of pure noise's variances
    edges = torch.quantile(mean, torch.linspace(0, 1, 11, dtype=torch.float64))
    points = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (mean >= lo) & (mean <= hi)
        if int(sel.sum()) >= 8:
            points.append((float(mean[sel].median()), float(torch.quantile(var[sel], 0.25)) / low))
    if len(points) < 2 or max(p[0] for p in points) - min(p[0] for p in points) < 1e-6:
        return 0.0, float(var.median())
    m, v = (torch.tensor(c, dtype=torch.float64) for c in zip(*points))
    design = torch.stack([m, torch.ones_like(m)], 1)
    a, c = torch.linalg.lstsq(design, v[:, None]).solution[:, 0].tolist()
    if a < 0:  # no signal dependence: a constant variance
        a, c = 0.0, float(v.mean())
    return float(a), float(c)


ROOT_3_2 = math.sqrt(1.5)


@dataclass(frozen=True)
class Anscombe:
    """The generalised Anscombe transform of one plane whose noise has var(y) = a·E[y] + c
    (0–255 units, a > 0), scaled so that the transformed noise is white with σ = ``scale``:
    z = scale · 2 √(y/a + 3/8 + c/a²). Its inverse is the closed-form approximation of the exact
    unbiased inverse (Mäkitalo and Foi, 2011 and 2013), not the algebraic one, which is biased
    at low counts: y = a·I(D) − c/a with D = z/scale and
    I(D) = D²/4 + √(3/2)/(4D) − 11/(8D²) + 5√(3/2)/(8D³) − 1/8."""

    a: float
    c: float
    scale: float

    @classmethod
    def fit(cls, a: float, c: float, top: float = 255.0) -> Anscombe:
        """The transform for (a, c) that maps ``top`` near 255, so that the transformed plane
        keeps about the range the model's settings were measured on."""
        return cls(a, c, top / (2 * math.sqrt(max(top / a + 0.375 + c / a**2, 1e-12))))

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        inner = (y / self.a + 0.375 + self.c / self.a**2).clamp(min=0)
        return 2 * self.scale * inner.sqrt()

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        d = (z / self.scale).clamp(min=0.8)  # below it the series is no longer valid
        exact = d * d / 4 + ROOT_3_2 / (4 * d) - 11 / (8 * d * d) + 5 * ROOT_3_2 / (8 * d**3)
        return self.a * (exact - 0.125) - self.c / self.a


def stabilise(x: torch.Tensor, missing: torch.Tensor | None = None) -> list[Anscombe] | None:
    """One :class:`Anscombe` per plane of x (C, H, W) (0–255 values), from each plane's
    estimated noise level function (:func:`estimate_poisson_gaussian`); None when a plane's
    noise is not clearly signal-dependent (:func:`is_signal_dependent`: Gaussian noise needs no
    transform) or values are missing (their placeholders would bias the estimate)."""
    if missing is not None:
        return None
    levels = [estimate_poisson_gaussian(p) for p in x]
    if not all(_grows(a, c, p) and _grows_finely(p) and _evens_out(a, c, p)
               for (a, c), p in zip(levels, x)):  # fmt: skip
        return None
    return [Anscombe.fit(a, c) for a, c in levels]


PILOT_BLUR = 1.5  # pixels: σ of the Gaussian that smooths a plane into its variance's pilot


def noise_weights(x: torch.Tensor, vst: list[Anscombe], shared: bool) -> tuple[torch.Tensor, float]:
    """The model's likelihood made heteroscedastic for noise of variance a·E[y] + c per plane
    of x (C, H, W) (0–255 values; ``vst``: each plane's level function): weights r (C, H, W)
    and σ (0–255 units) such that each value's noise variance is σ² / r², with σ² the mean
    variance over the image. The variance is read at a pilot of the clean value, the plane
    smoothed by a Gaussian of ``PILOT_BLUR`` pixels, and is at least half a photon's (a²/2):
    the counts of a dark pixel would otherwise weigh without bound. ``shared``: every plane
    gets the planes' mean variance (the orthonormal opponent basis mixes the colour planes, and
    keeps equal variances equal).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> clean = torch.linspace(20, 200, 64, dtype=torch.float64).repeat(64, 1)[None]
    >>> counts = torch.poisson(clean / 4, generator=g) * 4
    >>> r, sigma = noise_weights(counts, [Anscombe.fit(4.0, 0.0)], shared=False)
    >>> bool(r[0, :, :8].mean() > r[0, :, -8:].mean())  # dark values weigh more
    True
    """
    from scipy.ndimage import gaussian_filter

    planes = []
    for t, p in zip(vst, x):
        pilot = gaussian_filter(p.double().cpu().numpy(), PILOT_BLUR, mode="nearest", truncate=3.0)
        planes.append((t.a * torch.from_numpy(pilot) + t.c).clamp(min=t.a * t.a / 2))
    var = torch.stack(planes).to(x.device)  # (C, H, W)
    if shared:
        var = var.mean(0, keepdim=True).expand_as(var)
    mean = float(var.mean())
    return (mean / var).sqrt().to(x.dtype), math.sqrt(mean)


def is_signal_dependent(plane: torch.Tensor) -> bool:
    """Whether the noise of a plane (H, W) of 0–255 values clearly grows with the signal
    (photon counting, e.g. microscope frames), as :func:`stabilise` decides it: the fitted
    level function's variance at the plane's 90th percentile at least ``SIGNAL_DEPENDENT``
    times that at its 10th, and so is the finest diagonal detail's (texture whose contrast
    grows with the brightness passes the first test, not the second), and the Anscombe
    transform for that level function evens the finest detail's noise out (fine texture on
    only the bright parts passes the first two, not this one).

    Examples
    --------
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> clean = torch.linspace(10, 200, 128, dtype=torch.float64).repeat(128, 1)
    >>> counts = torch.poisson(clean / 2, generator=g) * 2
    >>> white = clean + 5 * torch.randn(128, 128, generator=g, dtype=torch.float64)
    >>> is_signal_dependent(counts), is_signal_dependent(white)
    (True, False)
    """
    a, c = estimate_poisson_gaussian(plane)
    return _grows(a, c, plane) and _grows_finely(plane) and _evens_out(a, c, plane)


def _grows(a: float, c: float, plane: torch.Tensor) -> bool:
    """Whether var = a·mean + c at the plane's 90th percentile is at least
    ``SIGNAL_DEPENDENT`` times that at its 10th."""
    q = torch.tensor([0.1, 0.9], dtype=torch.float64)
    lo, hi = (float(v) for v in torch.quantile(plane.double().flatten()[::7], q))
    return a > 0 and not (a * lo + c > 0 and (a * hi + c) < SIGNAL_DEPENDENT * (a * lo + c))


def _grows_finely(plane: torch.Tensor) -> bool:
    """Whether the noise variance read from each 2x2 block's diagonal Haar detail
    (y00 − y01 − y10 + y11)/2, which has the noise's variance and cancels ramps and edges along
    rows and columns, is in the brightest tenth of the blocks at least ``SIGNAL_DEPENDENT``
    times what it is in the darkest tenth (:func:`_fine_ratio`). White noise on brick texture
    read 0.98-1.14, photon counts 2-30,000 (benchmarks/RESULTS.md, table 4c)."""
    return _fine_ratio(plane) >= SIGNAL_DEPENDENT


def _evens_out(a: float, c: float, plane: torch.Tensor) -> bool:
    """Whether the Anscombe transform for (a, c) leaves the plane's finest noise about as
    strong in its brightest tenth as in its darkest (:func:`_fine_ratio` at least
    ``TRANSFORM_EVENS``), as it does for photon counts. Where the growth came from texture on
    the bright parts rather than from the noise (white noise on scikit-image's coins at σ = 5
    read 0.09; photon counts 0.38 and more), the transform crushes the bright parts' noise:
    the level function is not the noise's (benchmarks/RESULTS.md, table 4c)."""
    return _fine_ratio(Anscombe.fit(a, c).forward(plane)) >= TRANSFORM_EVENS


def _fine_ratio(plane: torch.Tensor) -> float:
    """The noise variance of the brightest tenth of a plane's 2x2 blocks over that of the
    darkest tenth, each read from the blocks' diagonal Haar detail robustly (the median
    absolute detail, squared); 0 on planes of fewer than 20 blocks or without any detail in
    the brightest tenth, infinite where only the darkest tenth has none."""
    p = plane.double()
    p = p[: p.shape[0] // 2 * 2, : p.shape[1] // 2 * 2]
    a, b, c, d = p[0::2, 0::2], p[0::2, 1::2], p[1::2, 0::2], p[1::2, 1::2]
    detail, level = ((a - b - c + d) / 2).flatten(), ((a + b + c + d) / 4).flatten()
    if level.numel() < 20:
        return 0.0
    q = torch.tensor([0.1, 0.9], dtype=torch.float64, device=level.device)
    lo, hi = torch.quantile(level[:: 1 + level.numel() // 2**22], q)  # quantile's size limit
    dark, bright = (float(detail[sel].abs().median()) for sel in (level <= lo, level >= hi))
    if bright <= 0:
        return 0.0
    return math.inf if dark <= 0 else (bright / dark) ** 2
