"""Public entry points: :func:`denoise` and :func:`inpaint`.

Images come in as float arrays on the [0, 1] scale, (H, W) or (H, W, C); noisy values may lie
outside [0, 1]. Internally the model works on the 0–255 scale, where the paper's learning
rates and σ floor are defined.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .check import Check, check_residual, plane_names
from .color import fields_from_opponent, from_opponent, to_opponent, use_opponent
from .config import Config
from .device import resolve_device
from .estimate import estimate_image
from .memory import MemoryBudgetError, cap_sizes
from .noise import Anscombe, Reading, noise_weights, stabilise
from .parallel import split_rows
from .patches import fill_missing, gather_patches
from .plan import AUTO_PATCH_SIZES, ModelPlan, choose_noise_model, plan_run
from .presets import DEFAULT_PRESETS, get_preset
from .refine import refine_estimate
from .train import fit

SCALE = 255.0  # the library's inside: 0–255 values, on which the paper's rates and floor are set


@dataclass
class Result:
    """What a restoration run reports besides the image."""

    config: Config
    seed: int
    device: str
    sigma: float  # final model sigma, in image units ([0, 1] scale)
    seconds: float
    free_energy: list[float] = field(default_factory=list)  # per epoch, per patch
    # per epoch: epoch, free_energy, sigma, mean_active, lr
    log: list[dict] = field(default_factory=list)
    fields: np.ndarray | None = None  # (H, p, p[, C]) generative fields, image units
    noise: str = "learned"  # where sigma came from: given, estimated (fixed) or learned
    check: Check | None = None  # the result checked against its noise (None: not checked)
    reading: Reading | None = None  # the noise as read where σ was estimated from it


def denoise(
    image,
    sigma: float | None = None,
    *,
    config: Config | str | None = None,
    seed: int = 0,
    device="cpu",
    mask=None,
    callback: Callable[[dict], None] | None = None,
    max_memory: int | None = None,
    gain: float | None = None,
):
    """Remove Gaussian noise from ``image`` without any training data but the image itself.

    Parameters
    ----------
    image : ndarray, (H, W) or (H, W, C), float on the [0, 1] scale (noise may leave it).
    sigma : noise standard deviation in the image's units (e.g. 25/255), or None: estimated
        from the image (``config.noise_level`` "estimated", the presets' default) or learned
        ("learned"). With a value, ``config.sigma_mode`` decides whether σ stays fixed or only
        starts there. ``config.noise_model`` "poisson-gaussian" estimates signal-dependent
        noise instead (leave sigma out). With ``gain``: the Gaussian read noise b.
    gain : photon-counting noise of a known level, ``image = gain·Poisson(clean/gain) +
        N(0, sigma²)`` in the image's units (gain = 1/photons at value 1; sigma None: no read
        noise): the image goes through the generalised Anscombe transform for those values
        instead of estimated ones, whatever ``config.noise_model`` says.
    config : a :class:`Config` or a preset name (see ``evodenoise.PRESETS``); None: ``fast``.
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

    Examples
    --------
    >>> import numpy as np
    >>> from evodenoise import denoise, get_preset
    >>> rng = np.random.default_rng(0)
    >>> clean = np.tile(np.linspace(0.2, 0.8, 32, dtype=np.float32), (32, 1))
    >>> noisy = clean + rng.normal(0, 0.1, clean.shape).astype(np.float32)
    >>> quick = get_preset("fast").replace(epochs=2, min_visits=0)  # a short run
    >>> restored, result = denoise(noisy, 0.1, config=quick, seed=0)
    >>> restored.shape, result.noise, bool(np.abs(restored - clean).mean() < 0.05)
    ((32, 32), 'given', True)
    """
    return _restore(
        image,
        mask,
        sigma,
        config or DEFAULT_PRESETS["denoise"],
        seed,
        device,
        callback,
        fill_only=False,
        max_memory=max_memory,
        gain=gain,
    )


def inpaint(
    image,
    mask,
    *,
    sigma: float | None = None,
    config: Config | str | None = None,
    seed: int = 0,
    device="cpu",
    callback: Callable[[dict], None] | None = None,
    max_memory: int | None = None,
    gain: float | None = None,
):
    """Fill the values of ``image`` marked True in ``mask`` (same shape, or (H, W) for all
    channels). Without ``sigma`` (and ``gain``) observed values are kept as they are; with
    them the image is also noisy and every value is estimated. ``config`` None: the
    ``inpaint`` preset. Other parameters as in :func:`denoise`.

    Examples
    --------
    >>> import numpy as np
    >>> from evodenoise import get_preset, inpaint
    >>> image = np.tile(np.linspace(0.2, 0.8, 24, dtype=np.float32), (24, 1))
    >>> missing = np.random.default_rng(0).random(image.shape) < 0.3
    >>> quick = get_preset("inpaint").replace(epochs=2, min_visits=0)
    >>> filled, _ = inpaint(np.where(missing, 0, image), missing, config=quick, seed=0)
    >>> bool(np.allclose(filled[~missing], image[~missing], atol=1e-5))  # observed: kept
    True
    """
    if mask is None:
        raise ValueError("inpaint needs a mask (True = missing)")
    return _restore(
        image,
        mask,
        sigma,
        config or DEFAULT_PRESETS["inpaint"],
        seed,
        device,
        callback,
        fill_only=sigma is None and gain is None,
        max_memory=max_memory,
        gain=gain,
    )


def _restore(
    image, mask, sigma, config, seed, device, callback, *, fill_only, max_memory=None, gain=None
):
    t0 = time.perf_counter()
    cfg = _check_args(sigma, config, seed, callback, max_memory, gain)
    img, missing = _check_inputs(image, mask, sigma, cfg, fill_only)
    dev = resolve_device(device)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    chw = img[None] if img.ndim == 2 else np.moveaxis(img, 2, 0)
    alpha = None
    if chw.shape[0] == 4:  # alpha is passed through untouched
        chw, alpha = chw[:3], chw[3:]
        missing = None if missing is None else missing[:3]
        if missing is not None and bool(missing.all()):
            raise ValueError("mask marks every colour value as missing: nothing to learn from")
    x = torch.from_numpy(np.ascontiguousarray(chw)).to(dev) * SCALE  # (C, H, W), 0–255
    if missing is not None:
        missing = missing.to(dev)
    x0, (x, vst, sigma255) = x, _stabilise(cfg, x, missing, sigma, gain)
    sigma_vst = None if vst is None else _sigma_at_mean(vst, x0)
    cfg = cfg.replace(noise_model="gaussian" if vst is None else "poisson-gaussian")  # as run
    del x0  # (a whole image: large images need the memory later)
    opponent = use_opponent(x.shape[0], cfg, missing)
    weights = None  # each value's likelihood weight (signal-dependent noise, not transformed)
    if vst is not None and cfg.signal_dependence == "likelihood":
        weights, sigma255 = noise_weights(x, vst, shared=opponent)
    if opponent:
        x = to_opponent(x)
    cfg = cap_sizes(cfg, x.shape[1], x.shape[2])  # an absurd batch size: the image's
    try:  # photons at the top of the range, where the transform ran
        photons = None if vst is None or weights is not None else min(SCALE / t.a for t in vst)
        plan = plan_run(cfg, x, missing, sigma255, opponent, max_memory, photons)
    except MemoryBudgetError as e:  # the budget was the limit given, not the free memory
        raise (e if max_memory is None else e.as_limit()) from None
    # E-steps split their rows over the CPU's threads (not in compiled runs: parallel.py)
    with split_rows(dev, enabled=all(m.config.compile == "off" for m in plan.models)):
        parts = [
            _restore_planes(x[m.planes], None if missing is None else missing[m.planes],
                            None if weights is None else weights[m.planes],
                            m.sigma, m, gen, callback, share, fill_only)
            for m, share in zip(plan.models, plan.shares())
        ]  # fmt: skip
    out = torch.cat([p[0] for p in parts])  # (C, H, W), 0–255
    parts = [(None, *p[1:]) for p in parts]  # each model's planes live on in out only
    if plan.config.second_stage == "wiener":  # known noise, every value seen (plan.py)
        sigmas = [s * plan.stage_sigma for s in _plane_sigmas(plan, parts, x.shape[0])]
        c = plan.config
        out = refine_estimate(x, out, sigmas, c.refine_scales, c.refine_mix, c.refine_search,
                              c.refine_coarse_mix, c.refine_step, c.refine_joint)  # fmt: skip
    out, check = _self_check(x, out, missing, weights, plan, parts, opponent, fill_only)
    fields = torch.cat([p[2] for p in parts], 1)  # (H_latents, C, p, p)
    if opponent:
        out, fields = from_opponent(out), fields_from_opponent(fields)
    if vst is not None and weights is None:
        out = torch.stack([t.inverse(p) for t, p in zip(vst, out)])
    restored = (out / SCALE).clamp(0, 1).cpu().numpy()
    if alpha is not None:
        restored = np.concatenate([restored, alpha])
        fields = torch.cat([fields, torch.full_like(fields[:, :1], SCALE)], 1)
    restored = restored[0] if img.ndim == 2 else np.moveaxis(restored, 0, 2)
    fields = (fields / SCALE).cpu().numpy()
    fields = fields[:, 0] if img.ndim == 2 else np.moveaxis(fields, 1, 3)
    first = parts[0][1]
    ran = plan.config  # as planned, with the training path that actually ran
    ran = ran.replace(compile="on" if all(p[1]["compile"] == "on" for p in parts) else "off")
    return restored.astype(np.float32), Result(
        config=ran,
        seed=int(seed),
        device=str(dev),
        sigma=first["sigma"] if sigma_vst is None else sigma_vst,
        seconds=time.perf_counter() - t0,
        free_energy=[e["free_energy"] for e in first["log"]],
        log=[e for p in parts for e in p[1]["log"]],
        fields=fields,
        noise=_noise_source(sigma if gain is None else gain, plan),
        check=check,
        reading=plan.reading,
    )


def _self_check(x, out, missing, weights, plan, parts, opponent: bool, fill_only: bool):
    """(output, :class:`Check` or None): the estimate ``out`` (C, H, W) checked against the
    input ``x`` and each model's final σ, in the planes the models saw (after the colour and
    noise transforms, where the noise is white; with likelihood ``weights``, both scaled by
    them, which makes the noise white); repaired where the check can (check.py). Inpainting
    alone (observed values kept) is not checked."""
    if fill_only:
        return out, None
    if weights is not None:
        out, check = _self_check(x * weights, out * weights, missing, None, plan, parts,
                                 opponent, fill_only)  # fmt: skip
        return out / weights, check
    sigma = _plane_sigmas(plan, parts, x.shape[0])
    names = plane_names(x.shape[0], opponent)
    observed = None if missing is None else (~missing).cpu().numpy()
    fixed, check = check_residual(
        x.cpu().numpy(), out.cpu().numpy(), sigma, observed, names, white=not plan.correlated
    )
    if check.repaired:
        out = torch.from_numpy(fixed).to(out)
    return out, check


def _plane_sigmas(plan, parts, channels: int) -> list[float]:
    """Each plane's final σ (0–255 units, in the planes the models saw): its model's."""
    planes = range(channels)
    return [p[1]["sigma"] * SCALE for m, p in zip(plan.models, parts) for _ in planes[m.planes]]


def _stabilise(cfg: Config, x, missing, sigma, gain=None):
    """(x, transforms or None, σ in 0–255 units or None): where the plan's noise model is
    poisson-gaussian (``plan.choose_noise_model``) and the noise grows with the signal, or a
    ``gain`` is given (then σ is the read noise, and both give the level function instead of
    an estimate), x made white of σ = the transforms' scale (``cfg.signal_dependence`` "likelihood": the
    transforms found, x as it is, σ None: the likelihood takes the noise as it is)."""
    sigma255 = None if sigma is None else sigma * SCALE
    if gain is not None:  # a known level function: var = a·E[y] + b²
        vst = [Anscombe.fit(gain * SCALE, (sigma255 or 0.0) ** 2)] * x.shape[0]
        return _stabilised(cfg, x, vst)
    if cfg.noise_model == "poisson-gaussian" and sigma is not None:
        raise ValueError(
            "noise_model poisson-gaussian estimates the noise: leave sigma out (or give the gain)"
        )
    if choose_noise_model(cfg, x, missing, sigma255) != "poisson-gaussian":
        return x, None, sigma255
    return _stabilised(cfg, x, stabilise(x, missing))


def _stabilised(cfg: Config, x, vst):
    """:func:`_stabilise`'s result for the transforms ``vst`` (None: no signal dependence)."""
    if vst is None:  # no signal dependence found: Gaussian noise
        return x, None, None
    if cfg.signal_dependence == "likelihood":
        return x, vst, None
    x = torch.stack([t.forward(p) for t, p in zip(vst, x)])
    return x, vst, float(np.median([t.scale for t in vst]))


def _sigma_at_mean(vst, x) -> float:
    """The σ of signal-dependent noise at the image's mean level, in image units: what one
    σ can say of it."""
    var = [t.a * float(p.mean()) + t.c for t, p in zip(vst, x)]
    return math.sqrt(max(float(np.mean(var)), 0.0)) / SCALE


def _noise_source(sigma, plan) -> str:
    """Where the reported σ (the first model's) came from."""
    if sigma is not None:
        return "given"
    return "learned" if plan.models[0].sigma is None else "estimated"


MAX_SIGMA = 1e6  # σ in image units ([0, 1] scale): a million times the range is no noise level


def _check_args(sigma, config, seed, callback, max_memory, gain=None) -> Config:
    """The configuration to run; ``TypeError`` or ``ValueError`` naming the argument, with one
    line, before any work, for a value the library cannot take."""
    if isinstance(config, str):
        config = get_preset(config)
    elif not isinstance(config, Config):
        raise TypeError(f"config must be a Config or a preset name (got {type(config).__name__})")
    if sigma is not None:
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.integer, np.floating)):
            raise TypeError(f"sigma must be a number or None (got {type(sigma).__name__})")
        if not (math.isfinite(sigma) and 0 < sigma <= MAX_SIGMA):
            raise ValueError(f"sigma must be a positive number up to {MAX_SIGMA:g} (got {sigma})")
    if gain is not None:
        if isinstance(gain, bool) or not isinstance(gain, (int, float, np.integer, np.floating)):
            raise TypeError(f"gain must be a number or None (got {type(gain).__name__})")
        if not (math.isfinite(gain) and 0 < gain <= MAX_SIGMA):
            raise ValueError(f"gain must be a positive number up to {MAX_SIGMA:g} (got {gain})")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer (got {type(seed).__name__})")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be between 0 and 2**63 - 1 (got {seed})")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None (got {type(callback).__name__})")
    if max_memory is not None:
        if isinstance(max_memory, bool) or not isinstance(max_memory, (int, np.integer)):
            raise TypeError(f"max_memory must be a number of bytes (got {max_memory!r})")
        if max_memory < 1:
            raise ValueError(f"max_memory must be at least 1 byte (got {max_memory})")
    return config


def _check_inputs(image, mask, sigma, cfg: Config, fill_only: bool):
    """The image as float32 (H, W) or (H, W, C) and the mask as a bool tensor (C, H, W) or
    None; ``ValueError`` with one line, before any work, on what cannot be restored."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise ValueError(
            f"image must be (H, W) or (H, W, C) with C in 1, 3, 4; got shape {img.shape}"
        )
    if not np.isfinite(img).all():
        raise ValueError("image contains NaN or infinite values")
    h, w = img.shape[:2]
    c = 1 if img.ndim == 2 else img.shape[2]
    p = cfg.patch_size or min(AUTO_PATCH_SIZES)  # automatic: at least the smallest size
    if p > min(h, w):
        raise ValueError(
            f"image of {h}x{w} pixels is smaller than the {p}x{p} patch of this preset"
        )
    if mask is None:
        return img, None
    m = np.asarray(mask, dtype=bool)
    if m.shape == (h, w):
        m = np.broadcast_to(m[None], (c, h, w))
    elif m.shape == img.shape:
        m = m[None] if img.ndim == 2 else np.moveaxis(m, 2, 0)
    else:
        raise ValueError(f"mask of shape {m.shape} does not match the image's {img.shape}")
    if m.all():
        raise ValueError("mask marks every value as missing: nothing to learn from")
    if (observed := int(m.size - np.count_nonzero(m))) < p * p:
        raise ValueError(
            f"mask leaves {observed} observed value(s): at least {p * p} (one "
            f"{p}x{p} patch's worth) are needed to learn from"
        )
    if fill_only and not m.any():
        raise ValueError("mask marks no value as missing: nothing to inpaint")
    return img, torch.from_numpy(np.array(m, dtype=bool))  # a copy: m may be a read-only view


def _restore_planes(x, missing, weights, sigma, plan: ModelPlan, gen, callback, share, fill_only):
    """One model over the planes x (C, H, W) (0–255 units) with ``missing`` (C, H, W) or None,
    the values' likelihood ``weights`` (C, H, W) or None (noise variance σ²/weight²) and σ
    (0–255 units, None: learned), as ``plan`` says: returns the estimate (C, H, W) in
    0–255 units, a record (σ in [0, 1] units, log) and the generative fields (H_latents, C,
    p, p) in 0–255 units."""
    cfg, n, dev = plan.config, plan.n_patches, x.device
    x, observed, offset, unit = _centre(x, missing, cfg.standardize)
    if weights is not None:  # the likelihood's weight per value: a mask's 0/1 in general
        observed = weights if observed is None else observed * weights
    to_image = unit / SCALE  # internal units -> [0, 1] image units
    # Training pool: train_patches patches drawn once (all of them when the image is small).
    pool = (
        torch.arange(n, device=dev)
        if cfg.train_patches == n
        else torch.randperm(n, generator=gen, device=dev)[: cfg.train_patches].sort().values
    )
    y = gather_patches(x, pool, cfg.patch_size)  # (M, D)
    obs = None if observed is None else gather_patches(observed, pool, cfg.patch_size)
    tag = {} if plan.name is None else {"model": plan.name}
    report, report_band = _reporters(callback, tag, share, plan, to_image)
    sigma = None if sigma is None else sigma / unit
    fitted = fit(y, obs, cfg, gen, sigma=sigma, unit=unit, callback=report)
    del y, obs
    out = estimate_image(fitted, x, observed, pool, cfg, gen, report_band)
    if fill_only:
        out = fill_missing(x, out, missing)
    model = fitted.model
    with torch.no_grad():
        eye = torch.eye(cfg.n_latents, device=dev)
        p = cfg.patch_size
        fields = (model.decoder(eye) * unit + offset).reshape(cfg.n_latents, x.shape[0], p, p)
    log = [{**e, **tag, "sigma": e["sigma"] * to_image} for e in fitted.log]
    record = {
        "sigma": float(model.sigma2.sqrt()) * to_image,
        "log": log,
        "compile": fitted.config.compile,
    }
    return out * unit + offset, record, fields


def _centre(x, missing, standardize: bool):
    """The planes x (C, H, W) centred (and with ``standardize`` scaled to unit variance), so
    that the decoder's output bias starts at the right level; missing values are set to 0 and
    never enter a likelihood term. Returns (x, observed (C, H, W) float or None, offset, unit),
    ``unit`` being one internal unit in 0–255 units."""
    observed = None if missing is None else (~missing).float()
    values = x if missing is None else x[~missing]
    offset = values.mean()
    unit = float(values.std()) if standardize else 1.0
    unit = unit if unit > 0 else 1.0
    del values
    x = (x - offset) / unit
    if missing is not None:
        x = x.masked_fill(missing, 0.0)
    return x, observed, offset, unit


def _reporters(callback, tag: dict, share, plan: ModelPlan, to_image: float):
    """The per-epoch and per-band callbacks of one model's run: ``callback``'s entries with σ
    in image units and the whole run's ``progress`` (``share``: this model's (start, span))."""
    start, span = share
    train = span * plan.train_work / plan.work
    epochs = max(plan.config.epochs, 1)

    def report(entry: dict) -> None:
        if callback is not None:
            sigma = entry["sigma"] * to_image
            progress = start + train * entry["epoch"] / epochs
            callback({**entry, **tag, "phase": "train", "sigma": sigma, "progress": progress})

    def report_band(band: int, bands: int) -> None:
        if callback is not None:
            progress = start + train + (span - train) * band / bands
            callback(
                {**tag, "phase": "estimate", "band": band, "bands": bands, "progress": progress}
            )

    return report, report_band
