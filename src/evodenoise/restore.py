"""Public entry points: :func:`denoise` and :func:`inpaint`.

Images come in as float arrays on the [0, 1] scale, (H, W) or (H, W, C); noisy values may lie
outside [0, 1]. Internally the model works on the 0–255 scale, where the paper's learning
rates and σ floor are defined.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .config import Config, get_preset
from .patches import extract_patches, fill_missing, merge_patches, patch_weights
from .train import estimate, fit

SCALE = 255.0


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
            device="cpu", mask=None, callback: Callable[[dict], None] | None = None):
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
    callback : called after each epoch with a dict (epoch, epochs, free_energy, sigma, lr,
        mean_active); σ there is in image units.

    Returns
    -------
    restored : ndarray like ``image``, float32 clipped to [0, 1].
    result : :class:`Result` with the free-energy trace, final σ, timing and generative fields.

    Notes
    -----
    Cost per epoch is about N·(S + G·P·C + 3·S) decoder evaluations for N ≈ H·W patches; at
    the paper's House settings that is ~1 TFLOP. The ``fast`` preset restores a 256×256 gray
    image in a minute or two on 2 CPU cores; the paper presets want a GPU.
    """
    return _restore(image, mask, sigma, config, seed, device, callback, fill_only=False)


def inpaint(image, mask, *, sigma: float | None = None, config: Config | str = "inpaint",
            seed: int = 0, device="cpu", callback: Callable[[dict], None] | None = None):
    """Fill the values of ``image`` marked True in ``mask`` (same shape, or (H, W) for all
    channels). Without ``sigma`` observed values are kept as they are; with ``sigma`` the image
    is also noisy and every value is estimated. Other parameters as in :func:`denoise`."""
    if mask is None:
        raise ValueError("inpaint needs a mask (True = missing)")
    return _restore(image, mask, sigma, config, seed, device, callback, fill_only=sigma is None)


def _restore(image, mask, sigma, config, seed, device, callback, *, fill_only):
    t0 = time.perf_counter()
    cfg = get_preset(config) if isinstance(config, str) else config
    img = np.asarray(image, dtype=np.float32)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise ValueError(f"image must be (H, W) or (H, W, C) with C in 1, 3, 4; got shape {img.shape}")
    if not np.isfinite(img).all():
        raise ValueError("image contains NaN or infinite values")
    if sigma is not None and not (np.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a positive number (got {sigma})")
    if sigma is not None and sigma * SCALE < cfg.sigma_floor:  # would be raised silently
        raise ValueError(f"sigma {sigma:.3g} is below the model's floor sigma_floor = "
                         f"{cfg.sigma_floor:g}/255 = {cfg.sigma_floor / SCALE:.3g} (image units); "
                         f"give a larger sigma, lower sigma_floor, or leave sigma out to learn it")
    chw = img[None] if img.ndim == 2 else np.moveaxis(img, 2, 0)
    c, h, w = chw.shape
    if cfg.patch_size > min(h, w):
        raise ValueError(f"image of {h}x{w} pixels is smaller than the "
                         f"{cfg.patch_size}x{cfg.patch_size} patch of this preset")
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
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    x = torch.from_numpy(np.ascontiguousarray(chw)).to(dev) * SCALE  # (C, H, W), 0–255
    obs = None
    if missing is not None:
        missing = missing.to(dev)
        obs = extract_patches((~missing).float(), cfg.patch_size)
    # Centre the data (and with cfg.standardize scale it to unit variance): the decoder's output
    # bias then starts at the right level. Missing values are set to the mean and never enter a
    # likelihood term. `unit` is one internal unit in 0–255 units.
    observed = x if missing is None else x[~missing]
    offset = observed.mean()
    unit = float(observed.std()) if cfg.standardize else 1.0
    unit = unit if unit > 0 else 1.0
    x = (x - offset) / unit
    if missing is not None:
        x = x.masked_fill(missing, 0.0)
    y = extract_patches(x, cfg.patch_size)  # (N, D)
    to_image = unit / SCALE  # internal units -> [0, 1] image units

    def report(entry: dict) -> None:
        if callback is not None:
            callback({**entry, "sigma": entry["sigma"] * to_image})

    fitted = fit(y, obs, cfg, gen, sigma=None if sigma is None else sigma / to_image,
                 unit=unit, callback=report)
    est = estimate(fitted, y, obs, cfg, gen, out=y)  # in place: y is not needed afterwards
    out = merge_patches(est, (c, h, w), cfg.patch_size, patch_weights(cfg.patch_size, cfg.merge,
                                                                      device=dev))
    if fill_only:
        out = fill_missing(x, out, missing)
    restored = ((out * unit + offset) / SCALE).clamp(0, 1).cpu().numpy()
    restored = restored[0] if img.ndim == 2 else np.moveaxis(restored, 0, 2)
    model = fitted.model
    with torch.no_grad():
        eye = torch.eye(cfg.n_latents, device=dev)
        fields = (model.decoder(eye) * unit + offset).reshape(cfg.n_latents, c, cfg.patch_size, cfg.patch_size)
    fields = (fields / SCALE).cpu().numpy()
    fields = fields[:, 0] if img.ndim == 2 else np.moveaxis(fields, 1, 3)
    log = [{**e, "sigma": e["sigma"] * to_image} for e in fitted.log]
    return restored.astype(np.float32), Result(
        config=fitted.config, seed=int(seed), device=str(dev), sigma=float(model.sigma2.sqrt()) * to_image,
        seconds=time.perf_counter() - t0, free_energy=[e["free_energy"] for e in log], log=log,
        fields=fields)
