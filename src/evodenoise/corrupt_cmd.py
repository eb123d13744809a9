"""The ``corrupt`` command: make test inputs with the benchmark protocol (:mod:`.corrupt`).

Its checks on output names, stdout and folders are the batch planner's (:mod:`.batch`).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from .decode import ImageError, quote
from .encode import atomic_write_bytes, encode_image, write_image
from .imageio import ImageInfo, read_image
from .options import InputError, UsageError, parse_positive, parse_seed
from .outputs import check_not_inputs, check_stdout_target, check_writable_name, probe_dir
from .report import Reporter, emit_json, image_to_stdout

__all__ = ["run_corrupt"]


def _check(clean: str, output: str, sigma, missing, mask_out, seed, data_range, json_out):
    """Usage errors (exit 2) before any work; returns (output format, mask file or None)."""
    if sigma is None and missing is None:
        raise UsageError("give --sigma S and/or --missing P")
    if sigma is not None:
        parse_positive("--sigma", sigma)
    if missing is not None and not (0 < missing < 1):
        raise UsageError(f"--missing must be between 0 and 1, exclusive (got {missing:g})")
    parse_seed(seed)
    if data_range is not None:
        parse_positive("--data-range", data_range)
    check_stdout_target(output, json_out)
    out_fmt = check_writable_name(output, "-o") or "png"
    if missing is not None and mask_out is None:
        if output == "-":
            raise UsageError("with -o - and --missing, give --mask-out FILE for the mask")
        mask_out = str(Path(output).with_name(Path(output).stem + "_mask.png"))
    check_writable_name(mask_out, "--mask-out")
    targets = [p for p in (output, mask_out) if p not in (None, "-")]
    check_not_inputs([("output", p) for p in targets], [clean])
    if len(targets) == 2 and os.path.realpath(targets[0]) == os.path.realpath(targets[1]):
        raise UsageError("the image and the mask would be written to the same file")
    for p in targets:
        probe_dir(Path(p).parent, "output directory")
    return out_fmt, mask_out, targets


def run_corrupt(
    clean: str,
    output: str,
    sigma: float | None,
    missing: float | None,
    mask_out: str | None,
    per_pixel: bool,
    seed: int,
    data_range: float | None,
    force: bool,
    json_out: bool,
    quiet: bool,
) -> int:
    """The whole of ``corrupt``; returns the exit code."""
    rep = Reporter(quiet=quiet)
    out_fmt, mask_out, targets = _check(
        clean, output, sigma, missing, mask_out, seed, data_range, json_out
    )
    record = {
        "input": clean,
        "output": output,
        "mask": mask_out,
        "status": "ok",
        "error": None,
        "sigma": sigma,
        "missing": missing,
        "seed": seed,
        "missing_fraction": None,
        "psnr": None,
        "data_range": None,
    }
    try:
        _corrupt(
            clean, output, mask_out, targets, out_fmt, per_pixel, data_range, force, rep, record
        )
    except (InputError, ImageError) as e:
        record.update(status="error", error=str(e))
        rep.error(str(e))
    except OSError as e:
        record.update(status="error", error=f"cannot write: {e.strerror or type(e).__name__}")
        rep.error(record["error"])
    if record["status"] == "ok":
        rep.info(_summary(record))
    if json_out and not emit_json(rep, record):
        return 1
    return 0 if record["status"] == "ok" else 1


def _corrupt(
    clean, output, mask_out, targets, out_fmt, per_pixel, data_range, force, rep, record
) -> None:
    """Read ``clean``, corrupt it as ``record`` says (sigma, missing, seed) and write the
    result (and the mask); fills the record's measured fields."""
    from .corrupt import add_noise, random_mask

    sigma, missing, seed = record["sigma"], record["missing"], record["seed"]
    existing = [p for p in targets if os.path.lexists(p)]
    if existing and not force:
        raise InputError(f"{quote(existing[0])} exists (use -f/--force to overwrite)")
    try:
        image, info = read_image(clean, data_range=data_range)
    except ImageError as e:
        raise InputError(str(e)) from None
    dr = record["data_range"] = info.data_range
    units = image.astype(np.float64) * dr  # the clean image on its own scale
    with np.errstate(over="ignore", invalid="ignore"):
        corrupted = units if sigma is None else add_noise(units, sigma, seed=seed).astype(float)
    if not np.isfinite(corrupted).all():
        raise InputError(f"--sigma {sigma:g}: the noisy values overflow 32-bit floats")
    mask = None
    if missing is not None:
        mask = random_mask(image.shape[:2] if per_pixel else image.shape, missing, seed=seed)
        corrupted = corrupted.copy()
        corrupted[mask] = 0.0
        record["missing_fraction"] = float(mask.mean())
        if not mask.any():
            rep.warn(
                f"--missing {missing:g} dropped none of the {mask.size} values (the mask marks "
                f"nothing missing); a larger P drops some"
            )
    out01 = (corrupted / dr).astype(np.float32)
    if out_fmt in ("npy", "tiff"):
        data = encode_image(out01, replace(info, dtype="float32"), out_fmt, clip=False)
    else:
        if sigma is not None:
            rep.warn(
                "PNG output clips and rounds the noise; use .npy or .tif to keep it "
                "exactly as the benchmark protocol adds it"
            )
        data = encode_image(out01, info, "png")
    if sigma is not None and mask is None:
        from .metrics import psnr

        record["psnr"] = psnr(units, corrupted, data_range=dr)
    if output == "-":
        image_to_stdout(data)
    else:
        atomic_write_bytes(output, data)
    if mask is not None:
        channels = 1 if mask.ndim == 2 else mask.shape[2]
        info = ImageInfo(shape=info.shape, channels=channels, dtype="uint8", data_range=255.0)
        write_image(mask_out, mask.astype(np.float32), info)


def _summary(record: dict) -> str:
    """The human line of a successful ``corrupt``."""
    parts = [f"{quote(record['input'])} -> {quote(record['output'])}"]
    if record["sigma"] is not None:
        parts.append(f"σ={record['sigma']:g}")
    if record["psnr"] is not None:
        parts.append(f"PSNR {record['psnr']:.2f} dB")
    if record["missing_fraction"] is not None:
        parts.append(
            f"{100 * record['missing_fraction']:.1f} % missing, mask -> {quote(record['mask'])}"
        )
    return "  ".join(parts)
