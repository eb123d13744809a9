"""The ``noise`` command: each image's noise, estimated as ``denoise`` estimates it by default
(``noise.assume_sigma``; where the noise is read as photon counts, also its level function:
``plan.choose_noise_model``, ``noise.stabilise``), printed without restoring anything."""

from __future__ import annotations

import numpy as np

from .decode import ImageError, quote
from .imageio import read_image
from .noise import CORRELATED
from .options import parse_positive
from .report import Reporter, emit_json

__all__ = [
    "run_noise",
    "estimate_noise",
    "estimate_level_functions",
    "is_correlated",
    "read_image_noise",
]


def estimate_noise(image: np.ndarray, reading=None) -> dict[str, float]:
    """The noise σ of an image on the [0, 1] scale ((H, W) or (H, W, C); an alpha channel is
    ignored) as a run assumes it (``noise.assume_sigma``), per channel group: ``{"gray": σ}``,
    or ``{"luminance": σ, "chroma": σ}`` in the orthonormal opponent basis of RGB (white noise
    of σ per RGB value has σ in both; a run assumes the luminance's for both). σ in the
    image's units ([0, 1]). ``reading``: the first group's (:func:`read_image_noise`), if
    the caller has it."""
    from .color import to_opponent
    from .noise import assume_sigma

    first = (reading or read_image_noise(image)).sigma / 255.0
    x = _planes(image)
    if x.shape[0] == 1:
        return {"gray": first}
    return {"luminance": first, "chroma": assume_sigma(to_opponent(x)[1:]) / 255.0}


def estimate_level_functions(image: np.ndarray) -> list[tuple[float, float]] | None:
    """(gain, offset) of each channel's noise variance, var = gain·value + offset in the
    image's units ([0, 1]), where ``denoise``'s default noise model (``auto``) reads the noise
    as photon counts (white, and growing with the signal in every channel) and transforms it;
    None where it reads Gaussian noise of one σ. An alpha channel is ignored.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> clean = np.tile(np.linspace(0.05, 0.8, 128), (128, 1))
    >>> counts = rng.poisson(clean * 100) / 100  # 100 photons at white: gain 0.01
    >>> [round(gain, 3) for gain, _ in estimate_level_functions(counts)]
    [0.01]
    >>> estimate_level_functions(clean + rng.normal(0, 0.05, clean.shape)) is None
    True
    """
    from .config import Config
    from .noise import stabilise
    from .plan import choose_noise_model

    x = _planes(image)
    if choose_noise_model(Config(noise_model="auto"), x, None, None) != "poisson-gaussian":
        return None
    vst = stabilise(x)
    return None if vst is None else [(t.a / 255.0, t.c / 255.0**2) for t in vst]


def read_image_noise(image: np.ndarray):
    """The ``noise.Reading`` of the image's first channel group (gray, or luminance), from
    which a run estimates σ."""
    from .color import to_opponent
    from .noise import read_noise

    x = _planes(image)
    return read_noise(x if x.shape[0] == 1 else to_opponent(x)[:1])


def is_correlated(image: np.ndarray) -> bool:
    """Whether the noise of the image's first channel group (gray, or luminance) is
    correlated between neighbours (``noise.Reading.correlated``), as a camera's processing
    leaves it; σ is then assumed ``noise.CORRELATED`` times its per-pixel estimate."""
    return read_image_noise(image).correlated


def _planes(image: np.ndarray):
    """(C, H, W) float32 tensor of 0–255 values: gray, or RGB without alpha."""
    import torch

    x = np.asarray(image, dtype=np.float32)
    x = x[None] if x.ndim == 2 else np.moveaxis(x, 2, 0)
    return torch.from_numpy(np.ascontiguousarray(x[:3] if x.shape[0] >= 3 else x[:1])) * 255.0


def run_noise(inputs: list[str], data_range: float | None, json_out: bool, quiet: bool) -> int:
    """The whole of ``noise``; returns the exit code (1 if an input could not be read)."""
    if data_range is not None:
        parse_positive("--data-range", data_range)
    rep, failed = Reporter(quiet=quiet), 0
    for source in inputs:
        record: dict = {"input": source, "status": "ok", "error": None, "sigma": None}
        try:
            image, info = read_image(source, data_range=data_range)
            units = info.data_range
            record["data_range"] = units
            reading = read_image_noise(image)
            record["sigma"] = {k: v * units for k, v in estimate_noise(image, reading).items()}
            levels = estimate_level_functions(image)
            record["model"] = "gaussian" if levels is None else "poisson-gaussian"
            if levels is None:
                record["correlated"] = reading.correlated
                record["noise_reading"] = reading.as_dict()
                groups = ", ".join(f"{k} {v:.3g}" for k, v in record["sigma"].items())
                how = f"; correlated: {CORRELATED:g}x the per-pixel σ" * reading.correlated
                how += (f"; uncertain: fine texture under weak white noise reads alike "
                        f"(whiteness {reading.whiteness:.2f})") * reading.unsure  # fmt: skip
                rep.info(f"{quote(source)}: σ {groups} (input units, estimated{how})")
            else:  # var = gain·value + offset: gain scales with the units, offset with their square
                record["gain"] = [a * units for a, _ in levels]
                record["offset"] = [c * units**2 for _, c in levels]
                funcs = ", ".join(
                    f"{a:.3g}·value {'+' if c >= 0 else '-'} {abs(c):.3g}"
                    for a, c in zip(record["gain"], record["offset"])
                )
                rep.info(f"{quote(source)}: photon-counting noise, variance {funcs} "
                         f"(input units, estimated)")  # fmt: skip
        except (ImageError, OSError) as e:
            failed += 1
            message = str(e) if str(e).startswith(quote(source)) else f"{quote(source)}: {e}"
            record.update(status="error", error=message)
            rep.error(record["error"])
        if json_out and not emit_json(rep, record):
            return 1
    return 1 if failed else 0
