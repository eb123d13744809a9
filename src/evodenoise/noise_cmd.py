"""The ``noise`` command: each image's noise level, estimated as ``denoise`` estimates it
(``noise.estimate_sigma``), printed without restoring anything."""

from __future__ import annotations

import numpy as np

from .decode import ImageError, quote
from .imageio import read_image
from .options import parse_positive
from .report import Reporter, emit_json

__all__ = ["run_noise", "estimate_noise"]


def estimate_noise(image: np.ndarray) -> dict[str, float]:
    """The noise σ of an image on the [0, 1] scale ((H, W) or (H, W, C); an alpha channel is
    ignored), per channel group: ``{"gray": σ}``, or ``{"luminance": σ, "chroma": σ}`` in the
    orthonormal opponent basis of RGB (white noise of σ per RGB value has σ in both). σ in
    the image's units ([0, 1])."""
    import torch

    from .color import to_opponent
    from .noise import estimate_sigma

    x = np.asarray(image, dtype=np.float32)
    x = x[None] if x.ndim == 2 else np.moveaxis(x, 2, 0)
    x = torch.from_numpy(np.ascontiguousarray(x[:3] if x.shape[0] >= 3 else x[:1])) * 255.0
    if x.shape[0] == 1:
        return {"gray": estimate_sigma(x) / 255.0}
    x = to_opponent(x)
    return {"luminance": estimate_sigma(x[:1]) / 255.0, "chroma": estimate_sigma(x[1:]) / 255.0}


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
            record["sigma"] = {k: v * units for k, v in estimate_noise(image).items()}
            groups = ", ".join(f"{k} {v:.3g}" for k, v in record["sigma"].items())
            rep.info(f"{quote(source)}: σ {groups} (input units, estimated)")
        except (ImageError, OSError) as e:
            failed += 1
            message = str(e) if str(e).startswith(quote(source)) else f"{quote(source)}: {e}"
            record.update(status="error", error=message)
            rep.error(record["error"])
        if json_out and not emit_json(rep, record):
            return 1
    return 1 if failed else 0
