"""Public entry points: :func:`denoise` and :func:`inpaint`.

Images come in as float arrays on the [0, 1] scale, (H, W) or (H, W, C); noisy values may lie
outside [0, 1]. Internally the model works on the 0–255 scale, where the paper's learning
rates and σ floor are defined.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .config import Config, chunk_rows, get_preset
from .memory import available_memory, check_fits, keep_freed_memory
from .patches import count_patches, fill_missing, gather_patches
from .stream import band_rows, estimate_image
from .train import fit

SCALE = 255.0
MIN_RAISED_POOL = 8192  # fewer patches: no epoch raise (see training_epochs)


@dataclass
class Result:
    """What a restoration run reports besides the image."""

    config: Config
    seed: int
    device: str
    sigma: float  # final model sigma, in image units ([0, 1] scale)
    seconds: float
    free_energy: list[float] = field(default_factory=list)  # per epoch, per patch
    log: list[dict] = field(default_factory=list)  # per epoch: epoch, free_energy, sigma, mean_active, lr
    fields: np.ndarray | None = None  # (H, p, p[, C]) generative fields, image units


def denoise(image, sigma: float | None = None, *, config: Config | str = "fast", seed: int = 0,
            device="cpu", mask=None, callback: Callable[[dict], None] | None = None,
            max_memory: int | None = None):
    """Remove Gaussian noise from ``image`` without any training data but the image itself.

    Parameters
    ----------
    image : ndarray, (H, W) or (H, W, C), float on the [0, 1] scale (noise may leave it).
    sigma : noise standard deviation in the image's units (e.g. 25/255), or None to learn it.
        With a value, ``config.sigma_mode`` decides whether σ stays fixed or only starts there.
    config : a :class:`Config` or a preset name (see ``evodenoise.PRESETS``).
    seed : seed of the run's one random generator; equal seeds give equal results on a device.
    device : ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
    mask : optional bool array, True where a value is missing (noisy and missing at once).
    callback : called with a dict after each training epoch (``phase`` "train": epoch, epochs,
        free_energy, sigma, lr, mean_active, seconds; σ in image units) and after each band of
        the estimate (``phase`` "estimate": band, bands); ``progress`` is the fraction of the
        whole run done.
    max_memory : bytes the run may use (None: the memory available on the device); band sizes
        follow it, and a run that cannot fit raises ``MemoryBudgetError`` before any work.

    Returns
    -------
    restored : ndarray like ``image``, float32 clipped to [0, 1].
    result : :class:`Result` with the free-energy trace, final σ, timing and generative fields.

    Notes
    -----
    Training costs about M·(S + G·P·C + 3·S) decoder evaluations per epoch for a pool of
    M = min(N, ``train_patches``) of the N ≈ H·W patches (at the paper's House settings ~1
    TFLOP); the estimate then streams over all N patches band by band, so time beyond the pool
    and memory beyond one band grow only with the estimate's sweep. The ``fast`` preset
    restores a 256×256 gray image in a minute or two on 2 CPU cores; the paper presets want a
    GPU.
    """
    return _restore(image, mask, sigma, config, seed, device, callback, fill_only=False,
                    max_memory=max_memory)


def inpaint(image, mask, *, sigma: float | None = None, config: Config | str = "inpaint",
            seed: int = 0, device="cpu", callback: Callable[[dict], None] | None = None,
            max_memory: int | None = None):
    """Fill the values of ``image`` marked True in ``mask`` (same shape, or (H, W) for all
    channels). Without ``sigma`` observed values are kept as they are; with ``sigma`` the image
    is also noisy and every value is estimated. Other parameters as in :func:`denoise`."""
    if mask is None:
        raise ValueError("inpaint needs a mask (True = missing)")
    return _restore(image, mask, sigma, config, seed, device, callback, fill_only=sigma is None,
                    max_memory=max_memory)


def training_epochs(cfg: Config, n_pool: int) -> int:
    """The epochs a run trains for: the preset's, raised for small images (few patches) so
    that training makes at least ``cfg.min_visits`` patch visits, at most 2x; images of fewer
    than ``MIN_RAISED_POOL`` patches (about 92x92 pixels) keep the preset's epochs. Measured
    with ``fast`` at σ=25 (benchmarks/RESULTS.md): a 128x128 crop gains 0.34 dB from 16 to 32
    epochs; at 64x64 more epochs help textured crops by 0.2-0.3 dB and cost a flat one 1 dB,
    and double the time (17 s instead of about 9 on 2 cores)."""
    if not (cfg.epochs and cfg.min_visits) or n_pool < MIN_RAISED_POOL:
        return cfg.epochs
    return min(max(cfg.epochs, math.ceil(cfg.min_visits / n_pool)), 2 * cfg.epochs)


# Automatic patch size (Config.patch_size 0): the largest of these whose signal-to-noise ratio
# bound the plane exceeds, measured in benchmarks/RESULTS.md ("Session 4: patch size").
AUTO_PATCH_SIZES = {8: 0.0, 6: 1.3, 4: 2.0}  # patch size: lowest ratio that takes it


def choose_patch_size(plane: torch.Tensor, missing: torch.Tensor | None, sigma: float | None,
                      limit: int) -> int:
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
            return min(get_preset("inpaint").patch_size, limit)
        from skimage.restoration import estimate_sigma
        sigma = max(float(estimate_sigma(plane.cpu().numpy().astype(np.float64))), 1e-3)
    var = float(values.double().var()) if values.numel() > 1 else 0.0
    ratio = math.sqrt(max(var - sigma ** 2, 0.0)) / sigma
    fits = [p for p, low in AUTO_PATCH_SIZES.items() if ratio >= low and p <= limit]
    return min(fits) if fits else min(AUTO_PATCH_SIZES)


def plan_band_rows(cfg: Config, shape, masked: bool, n_pool: int, device, max_memory) -> int:
    """Patch rows per band of the streaming estimate: ``cfg``'s (about 65,536 patches per band
    by default), halved until the run fits ``max_memory`` bytes (None: the memory available);
    :class:`MemoryBudgetError` when not even one row does."""
    c, h, w = shape
    budget = available_memory(device) if max_memory is None else int(max_memory)
    cols = w - cfg.patch_size + 1
    rows = band_rows(cfg, w, h)
    while True:
        try:
            check_fits(cfg, shape, masked, n_pool, rows * cols, device, budget)
            return rows
        except ValueError:
            if rows == 1:
                raise
            rows = max(1, rows // 2)


def _work(epochs: int, pool: int, cfg: Config, n: int) -> tuple[float, float]:
    """(training, estimate) work of one model's run in E-step-sweep units, for progress: a
    training visit costs about 1.5 sweeps (the E-step plus its Adam steps), a patch outside
    the pool its ``fresh_sweeps`` plus about 0.3 for its dictionary seeds."""
    return 1.5 * epochs * pool, cfg.final_sweeps * pool + (0.3 + cfg.fresh_sweeps) * (n - pool)


# Orthonormal opponent colour transform (rows: luminance, red-blue, green-magenta): white noise
# of σ per RGB value stays white noise of σ per opponent value, so the likelihood is unchanged.
OPPONENT = torch.tensor([[1 / math.sqrt(3)] * 3,
                         [1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)],
                         [1 / math.sqrt(6), -2 / math.sqrt(6), 1 / math.sqrt(6)]])


def _restore(image, mask, sigma, config, seed, device, callback, *, fill_only, max_memory=None):
    t0 = time.perf_counter()
    cfg = get_preset(config) if isinstance(config, str) else config
    img = np.asarray(image, dtype=np.float32)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image must be (H, W) or (H, W, C) with C in 1, 3, 4; got shape {img.shape}")
    if not np.isfinite(img).all():
        raise ValueError("image contains NaN or infinite values")
    if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number (got {sigma})")
    chw = img[None] if img.ndim == 2 else np.moveaxis(img, 2, 0)
    c, h, w = chw.shape
    p = cfg.patch_size or min(AUTO_PATCH_SIZES)  # automatic: at least the smallest size
    if p > min(h, w):
        raise ValueError(f"image of {h}x{w} pixels is smaller than the {p}x{p} patch of this preset")
    missing = None
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape == (h, w):
            m = np.broadcast_to(m[None], (c, h, w))
        elif m.shape == img.shape:
            m = m[None] if img.ndim == 2 else np.moveaxis(m, 2, 0)
        else:
            raise ValueError(f"mask of shape {m.shape} does not match the image's {img.shape}")
        if m.all():
            raise ValueError("mask marks every value as missing: nothing to learn from")
        if fill_only and not m.any():
            raise ValueError("mask marks no value as missing: nothing to inpaint")
        missing = torch.from_numpy(np.array(m, dtype=bool))  # a copy: m may be a read-only view
    dev = torch.device(device)
    if dev.type == "cpu":
        keep_freed_memory()  # the kernel's page faults cost up to 40 % of the estimate
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    alpha = None
    if c == 4:  # alpha is passed through untouched
        chw, alpha, c = chw[:3], chw[3:], 3
        missing = None if missing is None else missing[:3]
    x = torch.from_numpy(np.ascontiguousarray(chw)).to(dev) * SCALE  # (C, H, W), 0–255
    if missing is not None:
        missing = missing.to(dev)
    # Colour: with the opponent transform, one model for luminance and one for both chroma
    # channels (a per-value mask mixes observed and missing values under the transform, so
    # such inputs keep one model over RGB).
    opponent = (c == 3 and cfg.color == "opponent"
                and (missing is None or bool((missing == missing[:1]).all())))
    if opponent:
        x = torch.einsum("kc,chw->khw", OPPONENT.to(dev), x)
    if not cfg.patch_size:  # auto: from the luminance's (or gray's) signal-to-noise ratio
        cfg = cfg.replace(patch_size=choose_patch_size(
            x[0], None if missing is None else missing[0],
            None if sigma is None else sigma * SCALE, min(h, w)))
    if opponent:
        groups = [(slice(0, 1), cfg), (slice(1, 3), cfg.replace(
            train_patches=max(1, round(cfg.train_patches * cfg.chroma_pool)),
            fresh_sweeps=cfg.chroma_sweeps))]
    else:
        groups = [(slice(0, c), cfg)]
    sizes = [_visits(g_cfg, count_patches(h, w, cfg.patch_size)) for _, g_cfg in groups]
    done, parts, runs = 0.0, [], []
    names = ["luminance", "chroma"] if opponent else [None]
    for (sl, g_cfg), size, name in zip(groups, sizes, names):
        share = (done, size / sum(sizes))
        parts.append(_restore_planes(x[sl], None if missing is None else missing[sl], sigma,
                                     g_cfg, gen, max_memory, callback, share, fill_only, name))
        runs.append(parts[-1][1])
        done += share[1]
    out = torch.cat([p[0] for p in parts])  # (C, H, W), 0–255
    fields = torch.cat([p[2] for p in parts], 1)  # (H_latents, C, p, p)
    if opponent:
        out = torch.einsum("kc,khw->chw", OPPONENT.to(dev), out)
        fields = torch.einsum("kc,nkij->ncij", OPPONENT.to(dev), fields)
    restored = (out / SCALE).clamp(0, 1).cpu().numpy()
    if alpha is not None:
        restored = np.concatenate([restored, alpha])
        fields = torch.cat([fields, torch.full_like(fields[:, :1], SCALE)], 1)
    restored = restored[0] if img.ndim == 2 else np.moveaxis(restored, 0, 2)
    fields = (fields / SCALE).cpu().numpy()
    fields = fields[:, 0] if img.ndim == 2 else np.moveaxis(fields, 1, 3)
    first = runs[0]
    ran = first["config"]
    if opponent:
        ran = ran.replace(chroma_pool=runs[1]["config"].train_patches / max(1, ran.train_patches))
    return restored.astype(np.float32), Result(
        config=ran, seed=int(seed), device=str(dev), sigma=first["sigma"],
        seconds=time.perf_counter() - t0, free_energy=[e["free_energy"] for e in first["log"]],
        log=[e for r in runs for e in r["log"]], fields=fields)


def _visits(cfg: Config, n: int) -> float:
    """Whole work of one model's run before its config is settled (progress across models)."""
    pool = min(n, cfg.train_patches)
    return sum(_work(training_epochs(cfg, pool), pool, cfg, n))


def _restore_planes(x, missing, sigma, cfg, gen, max_memory, callback, share, fill_only, name):
    """One model over the planes x (C, H, W) (0–255 units) with ``missing`` (C, H, W) or None:
    returns the estimate (C, H, W) in 0–255 units, a record (config that ran, σ in [0, 1]
    units, log) and the generative fields (H_latents, C, p, p) in 0–255 units."""
    c, h, w = x.shape
    dev = x.device
    # Centre the data (and with cfg.standardize scale it to unit variance): the decoder's output
    # bias then starts at the right level. Missing values are set to the mean and never enter a
    # likelihood term. `unit` is one internal unit in 0–255 units.
    observed = None if missing is None else (~missing).float()
    values = x if missing is None else x[~missing]
    offset = values.mean()
    unit = float(values.std()) if cfg.standardize else 1.0
    unit = unit if unit > 0 else 1.0
    del values
    x = (x - offset) / unit
    if missing is not None:
        x = x.masked_fill(missing, 0.0)
    to_image = unit / SCALE  # internal units -> [0, 1] image units

    n = count_patches(h, w, cfg.patch_size)
    n_pool = min(n, cfg.train_patches)
    cfg = cfg.replace(chunk_size=chunk_rows(cfg, dev))
    cfg = cfg.replace(train_patches=n_pool, epochs=training_epochs(cfg, n_pool),
                      band_rows=plan_band_rows(cfg, (c, h, w), missing is not None, n_pool, dev,
                                               max_memory))
    # Training pool: n_pool patches drawn once (all of them when the image is small enough).
    pool = (torch.arange(n, device=dev) if n_pool == n
            else torch.randperm(n, generator=gen, device=dev)[:n_pool].sort().values)
    y = gather_patches(x, pool, cfg.patch_size)  # (M, D)
    obs = None if observed is None else gather_patches(observed, pool, cfg.patch_size)
    start, span = share
    tag = {} if name is None else {"model": name}
    train, est = _work(cfg.epochs, cfg.train_patches, cfg, n)  # cfg is settled here
    train = span * train / (train + est)

    def report(entry: dict) -> None:
        if callback is not None:
            callback({**entry, **tag, "phase": "train", "sigma": entry["sigma"] * to_image,
                      "progress": start + train * entry["epoch"] / max(cfg.epochs, 1)})

    def report_band(band: int, bands: int) -> None:
        if callback is not None:
            callback({**tag, "phase": "estimate", "band": band, "bands": bands,
                      "progress": start + train + (span - train) * band / bands})

    fitted = fit(y, obs, cfg, gen, sigma=None if sigma is None else sigma / to_image,
                 unit=unit, callback=report)
    del y, obs
    out = estimate_image(fitted, x, observed, pool, cfg, gen, report_band)
    if fill_only:
        out = fill_missing(x, out, missing)
    model = fitted.model
    with torch.no_grad():
        eye = torch.eye(cfg.n_latents, device=dev)
        fields = (model.decoder(eye) * unit + offset).reshape(cfg.n_latents, c, cfg.patch_size,
                                                              cfg.patch_size)
    log = [{**e, **tag, "sigma": e["sigma"] * to_image} for e in fitted.log]
    record = {"config": cfg, "sigma": float(model.sigma2.sqrt()) * to_image, "log": log}
    return out * unit + offset, record, fields
