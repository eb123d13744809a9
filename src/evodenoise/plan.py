"""The run plan: what a request (config, image, σ, mask, device, memory) turns into, settled once.

:func:`plan_run` is the one place where a run's configuration is resolved against its input:
the patch size (automatic from the image's signal-to-noise ratio), one model per channel
group (luminance and chroma for colour), each model's training pool, epochs, E-step chunk and
estimate bands. Everything downstream reads the :class:`Plan`; nothing re-derives it. No
random numbers are drawn here, so a plan never changes a run's random stream.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from .config import Config
from .memory import available_memory, check_fits
from .noise import Reading, is_signal_dependent, is_white, read_noise
from .patches import count_patches
from .presets import DEFAULT_PRESETS, get_preset

MIN_RAISED_POOL = 8192  # fewer patches: no epoch raise (see training_epochs)
BAND_PATCHES = 65536  # patches per band of the estimate when Config.band_rows is 0
STARVED_PHOTONS = 3.0  # photon counts at the top of the range up to which the second stage runs
#   after the Anscombe transform whatever the transformed noise reads (see use_second_stage)
TRANSFORM_AGREES = 0.8  # above that, it runs where the transformed noise reads at least this
#   fraction of the transform's σ: synthetic counts 0.87-1.01, microscope frames 0.45-0.90
TRANSFORMED_SEARCH = 12  # the second stage's search (± pixels) after the Anscombe transform:
#   BM3D's ±19 gained on white and camera noise but lost on 13 of 18 synthetic photon counts
#   (moon at 10 photons -0.36 dB, brick +0.14 to +0.33; RESULTS.md, table 8)
CORRELATED_STAGE = 2.0  # the second stage's σ on correlated noise (camera photos), in multiples
#   of the models' σ: a white-noise filter removes more of such noise at a higher σ (16 photos:
#   +0.20 to +1.51 dB at 2; 1.5 lost on one, 3 on four; RESULTS.md, table 8)

# Automatic patch size (Config.patch_size 0): the largest of these whose signal-to-noise ratio
# bound the plane exceeds (benchmarks/RESULTS.md, decision log: automatic patch size).
AUTO_PATCH_SIZES = {8: 0.0, 6: 1.3, 4: 2.0}  # patch size: lowest ratio that takes it


@dataclass(frozen=True)
class ModelPlan:
    """One model of a run: the planes it restores and the configuration it runs with."""

    name: str | None  # "luminance" / "chroma"; None: one model over every plane
    planes: slice  # its planes of the (colour-transformed) image
    sigma: float | None  # its noise σ, 0–255 units: given, estimated, or None (learned)
    config: Config  # resolved: patch_size, epochs, train_patches (pool), chunk, bands, compile
    n_patches: int  # N, the image's patches
    work: float  # training plus estimate work, E-step-sweep units (progress across models)
    train_work: float  # the training part of ``work``


@dataclass(frozen=True)
class Plan:
    """Everything a run will do, decided before it starts."""

    shape: tuple[int, int, int]  # (C, H, W) planes restored (an alpha channel excluded)
    opponent: bool  # colour: luminance/chroma models in the opponent basis (see color.py)
    models: tuple[ModelPlan, ...]
    reading: Reading | None = None  # the noise as read where σ is estimated from it
    #   (noise.Reading; None: σ given or learned)

    @property
    def correlated(self) -> bool:
        """σ estimated from noise correlated between neighbours (camera photos): the second
        stage runs at ``CORRELATED_STAGE`` times it and the self-check reports level and
        structure without testing them."""
        return self.reading is not None and self.reading.correlated

    @property
    def stage_sigma(self) -> float:
        """The second stage's σ in multiples of each plane's model σ."""
        return CORRELATED_STAGE if self.correlated else 1.0

    @property
    def config(self) -> Config:
        """The configuration reported as the one that ran: the first model's, with the chroma
        model's pool as the fraction it actually is."""
        first = self.models[0].config
        if len(self.models) == 1:
            return first
        pool = self.models[1].config.train_patches / max(1, first.train_patches)
        return first.replace(chroma_pool=pool)

    def shares(self) -> list[tuple[float, float]]:
        """(start, span) of each model in the run's progress, 0 to 1."""
        total = sum(m.work for m in self.models)
        starts = np.cumsum([0.0] + [m.work / total for m in self.models])
        return [(float(s), float(e - s)) for s, e in zip(starts[:-1], starts[1:])]


def plan_run(
    cfg: Config,
    x: torch.Tensor,
    missing: torch.Tensor | None,
    sigma: float | None,
    opponent: bool,
    max_memory: int | None = None,
    photons: float | None = None,
) -> Plan:
    """The plan of a run on planes x (C, H, W) of 0–255 values (in the opponent basis when
    ``opponent``: luminance first) with ``missing`` (C, H, W) or None and noise σ (0–255
    units; None: learned). ``max_memory``: bytes the run may use (None: what the device has
    free); :class:`~evodenoise.memory.MemoryBudgetError` when not even one row of patches fits.
    ``photons``: x went through the Anscombe transform (σ is the transform's) of noise with
    this many photons at the top of the range (255/a, the fewest over the planes); None: not.
    """
    c, h, w = x.shape
    groups = (
        [("luminance", slice(0, 1)), ("chroma", slice(1, 3))] if opponent else [(None, slice(0, c))]
    )
    reading = None  # the first model's noise, read once where it is not given (σ, the second
    if sigma is None and missing is None:  # stage and the self-check follow from it)
        reading = read_noise(x[groups[0][1]])
    sigmas = _model_sigmas(cfg, missing, sigma, groups, reading)
    if not use_second_stage(cfg, x[groups[0][1]], missing, sigma, photons, reading):
        cfg = cfg.replace(second_stage="off")
    if photons is not None or (reading is not None and reading.correlated):
        cfg = cfg.replace(refine_mix=0.0)  # step 0 at the image's own scale is for white
        #   Gaussian noise (refine.py): on camera photos it lost up to 0.27 dB, after the
        #   transform up to 0.43 dB; in the half scale's pilot camera photos gain (16
        #   photos: -0.17 to +0.61 dB, mean +0.15; RESULTS.md, table 8)
    if photons is not None:  # ... but not after the transform (brick -0.07 to -0.53 dB);
        cfg = cfg.replace(  # there it is a second pilot instead (refine_joint)
            refine_coarse_mix=0.0, refine_search=min(cfg.refine_search, TRANSFORMED_SEARCH)
        )
    else:  # a second pilot lost on held-out white-noise images and on camera photos
        cfg = cfg.replace(refine_joint=False)  # (RESULTS.md, table 8, "Step 0 as a second pilot")
    cfg = shorten_training(cfg)
    if not cfg.patch_size:  # automatic: from the luminance's (or gray's) signal-to-noise ratio
        lum_missing = None if missing is None else missing[0]
        lum_sigma = sigmas[0] if sigma is None and sigmas[0] is not None else sigma
        cfg = cfg.replace(patch_size=choose_patch_size(x[0], lum_missing, lum_sigma, min(h, w)))
    cfg = cfg.replace(chunk_size=cfg.chunk_size or default_chunk(x.device))
    configs = [cfg]
    if opponent:
        pool = max(1, round(cfg.train_patches * cfg.chroma_pool))
        chroma = cfg.replace(  # fresh chroma patches without sweeps are cheap: all estimated
            train_patches=pool,
            fresh_sweeps=cfg.chroma_sweeps,
            poor_fit_quantile=cfg.chroma_poor_fit,
            fresh_stride=cfg.fresh_stride if cfg.chroma_sweeps else 1,
        )
        if missing is None:  # denoising: the chroma model keeps the preset's epochs (its pool,
            chroma = chroma.replace(min_visits=0)  # a quarter, is not a small image's)
        configs.append(chroma)
    n = count_patches(h, w, cfg.patch_size)
    models = []
    for (name, planes), g_cfg, g_sigma in zip(groups, configs, sigmas):
        shape = (planes.stop - planes.start, h, w)
        pool = min(n, g_cfg.train_patches)
        g_cfg = g_cfg.replace(train_patches=pool, epochs=training_epochs(g_cfg, pool))
        steps = math.ceil(pool / g_cfg.batch_size)  # Adam steps per epoch
        g_cfg = g_cfg.replace(compile="on" if use_compile(g_cfg, x.device, steps) else "off")
        g_cfg = g_cfg.replace(
            band_rows=plan_band_rows(g_cfg, shape, missing is not None, x.device, max_memory)
        )
        train, est = _work(g_cfg, n)
        models.append(ModelPlan(name, planes, g_sigma, g_cfg, n, train + est, train))
    estimated = reading if sigmas[0] is not None else None  # learned: the reading unused
    return Plan((c, h, w), opponent, tuple(models), estimated)


def default_chunk(device: torch.device) -> int:
    """Patches per chunk of the E-step sweeps when ``Config.chunk_size`` is 0: 256 on the CPU
    (a chunk's candidates then stay in the caches), 16,384 on a GPU (fewer, larger calls)."""
    return 256 if torch.device(device).type == "cpu" else 16384


def _model_sigmas(cfg: Config, missing, sigma, groups, reading) -> list[float | None]:
    """Each model's σ (0–255 units): the one given; else as ``cfg.noise_level`` says, None
    (learned) or the σ a ``reading`` of the first model's planes (luminance, or gray, or all
    of RGB: ``noise.Reading.sigma``, which reads white and correlated noise each its own way)
    assumes, fixed for every model, as a σ given is. Images with missing values
    are not estimated (their placeholders would bias it): learned."""
    if sigma is not None:
        return [sigma] * len(groups)
    if cfg.noise_level == "learned" or missing is not None:
        return [None] * len(groups)
    return [reading.sigma] * len(groups)


def choose_noise_model(cfg: Config, x: torch.Tensor, missing, sigma: float | None) -> str:
    """The noise model a run on planes x (C, H, W) of 0–255 values tries: the one asked for;
    ``auto``: poisson-gaussian where nothing says the noise is Gaussian (no σ given, every value
    observed) and it measures white (``noise.is_white``), gaussian otherwise.
    ``noise.stabilise`` then keeps Gaussian noise where a plane's noise does not grow with the
    signal. Microscope frames (white photon-counting noise) gained 2.7–5.1 dB with the
    transform; camera photos, whose noise is correlated (whiteness 0.18–0.32), lost up to 3.4 dB
    with it (benchmarks/RESULTS.md, table 4c)."""
    if cfg.noise_model != "auto":
        return cfg.noise_model
    if sigma is not None or missing is not None:
        return "gaussian"
    return "poisson-gaussian" if is_white(x) else "gaussian"


def use_second_stage(
    cfg: Config, planes, missing, sigma: float | None, photons: float | None = None, reading=None
) -> bool:
    """Whether the second stage (refine.py) runs after the estimate: asked for, every value
    observed, and noise of a known kind and σ.

    - σ given by the user: yes.
    - σ estimated: where the first model's ``planes`` (C, H, W) measure white
      (``noise.is_white``) and the noise does not grow with the signal
      (``noise.is_signal_dependent``; there the filter lost up to 0.36 dB on microscope
      frames, benchmarks/RESULTS.md, table 8), and where they measure correlated between
      neighbours (``noise.Reading.correlated``: camera photos), at ``CORRELATED_STAGE`` times
      the models' σ (:attr:`Plan.stage_sigma`): at the models' σ it lost up to 0.86 dB there,
      at twice it gained on all 16 photos. σ learned: no.
    - After the Anscombe transform (``photons`` at the top of the range, not None; σ the
      transform's): where photons are scarcest, at most ``STARVED_PHOTONS`` (up to +3.4 dB on
      synthetic counts), and above that where the transformed planes read white with at
      least ``TRANSFORM_AGREES`` of the transform's σ, the filter's premise: +0.36 to +0.92
      dB on synthetic counts at 4-30 photons. Where the reading falls short (four of five
      microscope frames, whose noise is slightly correlated or off the fitted level) it
      gained and lost alike (-0.23 to +0.13 dB; RESULTS.md, table 4c).

    ``reading``: the planes' ``noise.Reading``, if the caller has it."""
    if cfg.second_stage == "off" or missing is not None:
        return False
    if cfg.noise_model == "poisson-gaussian" and cfg.signal_dependence == "likelihood":
        return False  # the noise stays signal-dependent: not the filter's white noise
    if photons is not None and sigma is not None:  # after the transform: σ is its own
        if photons <= STARVED_PHOTONS:
            return True
        after = read_noise(planes)
        return after.white and after.fine >= TRANSFORM_AGREES * sigma
    if sigma is not None:
        return True
    reading = reading or read_noise(planes)
    if reading.correlated:  # σ estimated: the stage at CORRELATED_STAGE times it (Plan)
        return cfg.noise_level == "estimated"
    return reading.white and not is_signal_dependent(planes[0])


def use_compile(cfg: Config, device, steps: int = 0) -> bool:
    """Whether training runs compiled: ``on``; ``off``; ``auto``: on for CUDA; on the CPU
    only for long runs of exact alternation (one E-step per Adam step, at least 50,000 Adam
    steps, a C++ compiler present), where it measured faster overall: compiling costs about 3
    minutes there, a compiled epoch of paper-house-25 is 1.4x faster, one of ``fast`` only 1.1x
    (benchmarks/RESULTS.md). ``steps``: Adam steps per epoch."""
    if cfg.compile != "auto":
        return cfg.compile == "on"
    if torch.device(device).type == "cuda":
        return True
    import shutil

    long_exact = cfg.estep_batch <= cfg.batch_size and cfg.epochs * steps >= 50_000
    return long_exact and any(shutil.which(c) for c in ("g++", "c++", "clang++"))


def shorten_training(cfg: Config) -> Config:
    """``cfg`` with ``cfg.mixed_pilot_epochs`` epochs (``min_visits`` scaled alike) where the
    second stage's pilot takes a share of its hard-thresholding estimate (step 0) at the
    image's own scale (``refine_mix`` > 0: white Gaussian noise), as it is otherwise. Step 0
    makes up most of what a shorter training loses: 4 epochs instead of 16 gave -0.02 to
    -0.17 dB (mean -0.08) on the gray and colour suites and -0.25 to +0.08 (mean -0.03) on
    seven images held out, in 0.3x the time. Elsewhere the model keeps its training: after the
    Anscombe transform, where step 0 is at most a second pilot and the stage mostly does not
    run on microscope frames, 4 epochs lost up to 0.16 dB on them and left one frame's flat
    areas noisy (measured before the second pilot); on correlated camera noise, with
    step 0 at the half scale only, 4 epochs cost the real photos 0.01 dB on average but left a
    small saturated square further off its colour (benchmarks/RESULTS.md, table 7, "The
    training the pilot needs")."""
    short = cfg.mixed_pilot_epochs
    if not short or cfg.second_stage == "off" or cfg.refine_mix <= 0:
        return cfg
    visits = cfg.min_visits * short // cfg.epochs if cfg.epochs else cfg.min_visits
    return cfg.replace(epochs=short, min_visits=visits)


def training_epochs(cfg: Config, n_pool: int) -> int:
    """The epochs a run trains for: the preset's, raised for small images (few patches) so
    that training makes at least ``cfg.min_visits`` patch visits, at most 2x; images of fewer
    than ``MIN_RAISED_POOL`` patches (about 92x92 pixels) keep the preset's epochs, and so
    does a denoising run's chroma model (``plan_run``: its pool is a quarter of the
    luminance's; raised, it cost 1.08-1.2x a colour run's time for 0.00-0.03 dB). Measured
    with ``fast`` at σ=25 (benchmarks/RESULTS.md): a 128x128 crop gains 0.34 dB from 16 to 32
    epochs; at 64x64 more epochs help textured crops by 0.2-0.3 dB and cost a flat one 1 dB,
    and double the time (17 s instead of about 9 on 2 cores)."""
    if not (cfg.epochs and cfg.min_visits) or n_pool < MIN_RAISED_POOL:
        return cfg.epochs
    return min(max(cfg.epochs, math.ceil(cfg.min_visits / n_pool)), 2 * cfg.epochs)


def choose_patch_size(
    plane: torch.Tensor, missing: torch.Tensor | None, sigma: float | None, limit: int
) -> int:
    """Patch size for a plane (H, W) of 0–255 values with noise σ (0–255; None: estimated
    from the plane by scikit-image's wavelet estimator), ``missing`` (H, W) or None.

    The ratio r = sqrt(var(plane) − σ²) / σ of the signal's to the noise's standard deviation
    decides: a high ratio (little noise for the image's contrast: the luminance of most colour
    photos) wants small patches, whose D values the H latents describe more finely; a low one
    wants large patches, whose many values average the noise (``AUTO_PATCH_SIZES``). Inputs
    with missing values and no σ get the ``inpaint`` preset's size (5)."""
    values = plane if missing is None else plane[~missing]
    if sigma is None:
        if missing is not None:
            return min(get_preset(DEFAULT_PRESETS["inpaint"]).patch_size, limit)
        sigma = _estimate_sigma(plane)
    var = float(values.double().var()) if values.numel() > 1 else 0.0
    ratio = math.sqrt(max(var - sigma**2, 0.0)) / sigma
    fits = [p for p, low in AUTO_PATCH_SIZES.items() if ratio >= low and p <= limit]
    return min(fits) if fits else min(AUTO_PATCH_SIZES)


def _estimate_sigma(plane: torch.Tensor) -> float:
    """scikit-image's wavelet estimate of a plane's noise σ (0–255 units), at least 1e-3; a
    plane without any variation (all one value) has no measurable noise: 1e-3."""
    from skimage.restoration import estimate_sigma

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma = float(estimate_sigma(plane.cpu().numpy().astype(np.float64)))
    return sigma if math.isfinite(sigma) and sigma > 1e-3 else 1e-3


def band_rows(cfg: Config, width: int, height: int) -> int:
    """Patch rows per band as asked: ``cfg.band_rows``, or (0) rows making about
    ``BAND_PATCHES`` patches; at most the image's patch rows."""
    rows_total = height - cfg.patch_size + 1
    if cfg.band_rows:
        return min(cfg.band_rows, rows_total)
    return min(rows_total, max(1, BAND_PATCHES // (width - cfg.patch_size + 1)))


def plan_band_rows(cfg: Config, shape, masked: bool, device, max_memory) -> int:
    """Patch rows per band of the streaming estimate for a model of ``cfg`` (pool and chunk
    settled) on planes of ``shape`` (C, H, W): :func:`band_rows`, halved until the run fits
    ``max_memory`` bytes (None: the memory available); :class:`MemoryBudgetError` when not
    even one row does."""
    c, h, w = shape
    budget = available_memory(device) if max_memory is None else int(max_memory)
    cols = w - cfg.patch_size + 1
    rows = band_rows(cfg, w, h)
    while True:
        try:
            check_fits(cfg, shape, masked, cfg.train_patches, rows * cols, device, budget)
            return rows
        except ValueError:
            if rows == 1:
                raise
            rows = max(1, rows // 2)


def _work(cfg: Config, n: int) -> tuple[float, float]:
    """(training, estimate) work of one model's run in E-step-sweep units, for progress: a
    training visit costs about 1.5 sweeps (the E-step plus its Adam steps), a patch outside
    the pool its ``fresh_sweeps`` plus about 0.3 for its dictionary scores; with
    ``sweep_tol``, a quarter of a sweep for each sweep after the first (5–24 % of the fresh
    patches take each on 512×512 gray images); where ``poor_fit_sweeps`` are more, about
    one for the fraction 1 − ``poor_fit_quantile`` of them; with ``fresh_stride``, for one
    in stride² of those patches."""
    pool = cfg.train_patches
    later = max(cfg.fresh_sweeps - 1, 0) * (0.25 if cfg.sweep_tol else 1.0)
    poor = (1 - cfg.poor_fit_quantile) if cfg.poor_fit_sweeps > cfg.fresh_sweeps else 0.0
    fresh = (min(cfg.fresh_sweeps, 1) + later + poor) / cfg.fresh_stride**2
    return 1.5 * cfg.epochs * pool, cfg.final_sweeps * pool + (0.3 + fresh) * (n - pool)
