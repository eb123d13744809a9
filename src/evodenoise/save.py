"""Writing one input's results: the restored image, then its side files (``--save-fields``,
``--save-log``, ``--compare``), each atomically.

A side file that cannot be written fails the input with a line naming that file (not the
output image, which was written and stays); :class:`SideFileError` carries the output's path
so that the input's record still names it. An output that appeared while the input was
restored (another process of an unsharded batch) is left alone: with ``--skip-existing``
the input counts as skipped, otherwise it fails.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .decode import ImageError, quote
from .encode import atomic_write_bytes, encode_image, tile_fields, write_image
from .imageio import ImageInfo
from .options import InputError
from .report import image_to_stdout, jsonable

__all__ = ["SideFileError", "save_outputs"]


class SideFileError(InputError):
    """A side file failed after the output image was written (``written``: its path)."""

    def __init__(self, message: str, written: str | None):
        super().__init__(message)
        self.written = written


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def save_outputs(job, opts, restored, info: ImageInfo, result, record: dict, views=None) -> bool:
    """Write the output and the side files of ``job``; False when the output appeared
    meanwhile and ``--skip-existing`` says to skip it. ``views``: (input, reference or None)
    on the [0, 1] scale, for ``--compare``."""
    if job.output == "-":
        image_to_stdout(_encoded(restored, info, "png"))
    else:
        if os.path.lexists(job.output) and not opts.force:  # appeared while we worked
            if opts.skip_existing:
                return False
            raise InputError(f"{quote(job.output)} exists (use -f/--force to overwrite)")
        _write(job.output, lambda: write_image(job.output, restored, info), None)
    written = job.output
    if job.fields_path is not None:
        tiled = tile_fields(np.asarray(result.fields, dtype=np.float32))
        fields_info = ImageInfo(
            shape=tiled.shape[:2],
            channels=1 if tiled.ndim == 2 else tiled.shape[2],
            dtype="uint8",
            data_range=255.0,
        )
        _write(job.fields_path, lambda: write_image(job.fields_path, tiled, fields_info), written)
    if job.log_path is not None:
        data = (
            json.dumps(jsonable(_log(job, opts, record, info, result)), indent=1) + "\n"
        ).encode()
        _write(job.log_path, lambda: atomic_write_bytes(job.log_path, data), written)
    compare_path = getattr(job, "compare_path", None)
    if compare_path is not None and views is not None:
        from .compare import compare_image

        sheet = compare_image(views[0], restored, views[1], info, record)
        sheet_info = ImageInfo(shape=sheet.shape[:2], channels=3, dtype="uint8", data_range=255.0)
        _write(compare_path, lambda: write_image(compare_path, sheet, sheet_info), written)
    return True


def _encoded(restored, info: ImageInfo, fmt: str) -> bytes:
    try:
        return encode_image(restored, info, fmt)
    except ImageError as e:
        raise InputError(str(e)) from None


def _write(path: str, write, written: str | None) -> None:
    """Run ``write`` (an atomic write of ``path``); its failure names ``path``, and says that
    the output ``written`` (if any) was written and stays."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write()
    except (ImageError, OSError) as e:
        why = str(e) if isinstance(e, ImageError) else _why(e)
        message = f"cannot write {quote(path)}: {why}"
        if written is None:
            raise InputError(message) from None
        where = "stdout" if written == "-" else quote(written)
        raise SideFileError(f"{message} (the output {where} was written)", written) from None


def _log(job, opts, record: dict, info: ImageInfo, result) -> dict:
    units = info.data_range
    return {
        "input": job.source,
        "command": opts.command,
        "seed": record["seed"],
        "preset": record["preset"],
        "config": record["config"],
        "device": record["device"],
        "data_range": units,
        "sigma_units": units,
        "sigma": record["sigma"],
        "seconds": result.seconds,
        "epochs": [_in_units(e, units) for e in result.log],
    }


def _in_units(entry: dict, units: float) -> dict:
    out = dict(entry)
    if out.get("sigma") is not None:
        out["sigma"] = float(out["sigma"]) * units
    return out
