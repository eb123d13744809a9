"""Running a batch: for each input load it, call the library, save the result, record it.

Units: the library works on the [0, 1] scale. σ crosses that boundary once on the way in
(``--sigma`` / data range) and once on the way out (:meth:`Units.out`, for the record, the
log and the progress display). The record reports the configuration that actually ran
(``Result.config``), the preset resolved for the input, and everything of the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .batch import Job, plan
from .config import Config
from .decode import ImageError, quote
from .encode import atomic_write_bytes, encode_image, tile_fields, write_image
from .imageio import ImageInfo, read_image, read_mask
from .options import InputError, Options, Settings, UsageError, check_options
from .report import (
    Reporter,
    StreamError,
    human_line,
    image_to_stdout,
    json_line,
    jsonable,
    write_stdout,
)

__all__ = ["run_batch", "process"]


@dataclass
class RunContext:
    opts: Options
    settings: Settings
    device: object
    reporter: Reporter


def _record(job: Job, ctx: RunContext) -> dict:
    config = ctx.settings.config
    return {
        "input": job.source,
        "output": job.output,
        "status": None,
        "error": None,
        "command": ctx.opts.command,
        "psnr": None,
        "ssim": None,
        "psnr_input": None,
        "sigma": None,
        "sigma_given": ctx.settings.sigma,
        "sigma_source": None,
        "data_range": None,
        "seconds": None,
        "device": str(ctx.device),
        "seed": ctx.settings.seed,
        "preset": ctx.settings.preset,
        "config": config.to_dict(),
        "width": None,
        "height": None,
        "channels": None,
        "bit_depth": None,
        "alpha": None,
        "mask": job.mask,
        "missing_fraction": None,
        "reference": job.reference,
        "epochs": config.epochs,
        "free_energy": None,
        "fields": job.fields_path,
        "log": job.log_path,
    }


def _oom_message(e: BaseException, ctx: RunContext, config: Config) -> str | None:
    is_oom = isinstance(e, MemoryError) or "out of memory" in str(e).lower()
    import torch

    from .plan import default_chunk

    is_oom = is_oom or isinstance(e, torch.cuda.OutOfMemoryError)
    if is_oom and torch.cuda.is_available():
        torch.cuda.empty_cache()
    if not is_oom:
        return None
    chunk = config.chunk_size or default_chunk(torch.device(ctx.device))
    return (
        f"out of memory on {ctx.device}: lower --set chunk_size=N (now {chunk})"
        f" or --set batch_size=N (now {config.batch_size}), or use a smaller --preset"
    )


def _load(job: Job, ctx: RunContext):
    """(image, info, mask, reference) of one job; each file decoded once."""
    dr = ctx.settings.data_range
    try:
        if job.source == "-":
            data = sys.stdin.buffer.read() if sys.stdin is not None else b""
            if not data:
                raise InputError("stdin: no data (expected an encoded image)")
            image, info = read_image(data, data_range=dr)
        else:
            image, info = read_image(job.source, data_range=dr)
        mask = (
            None
            if job.mask is None
            else read_mask(
                job.decoded.get(job.mask, job.mask), image.shape, invert=ctx.opts.invert_mask
            )
        )
    except ImageError as e:
        raise InputError(str(e)) from None
    reference = None
    if job.reference is not None:
        try:
            reference, _ = read_image(job.decoded.get(job.reference, job.reference), data_range=dr)
        except ImageError as e:
            raise InputError(f"reference: {e}") from None
        if reference.shape != image.shape:
            raise InputError(
                f"reference {quote(job.reference)} is {_shape_text(reference.shape)}"
                f" but the image is {_shape_text(image.shape)}"
            )
    return image, info, mask, reference


def process(job: Job, ctx: RunContext) -> dict:
    """Restore one input; returns its record (raises InputError on a per-input error)."""
    opts, rep, settings = ctx.opts, ctx.reporter, ctx.settings
    record = _record(job, ctx)
    t0 = time.perf_counter()
    if job.error is not None:
        raise InputError(job.error)
    if job.skip:
        record["status"] = "skipped"
        return record
    for w in job.warnings:
        rep.warn(w)
    image, info, mask, reference = _load(job, ctx)
    units = info.data_range  # the input's units: σ in = σ / units, σ out = σ01 * units
    record.update(
        data_range=units,
        width=info.shape[1],
        height=info.shape[0],
        channels=info.channels,
        bit_depth="float" if info.is_float else info.bit_depth,
        alpha=info.has_alpha,
        missing_fraction=None if mask is None else float(mask.mean()),
    )
    rep.debug(
        f"{quote(job.source)}: {info.describe()}, data range {units:g}, preset {settings.preset}"
    )

    restored, result = _run_engine(job, ctx, image, mask, units)
    restored = np.asarray(restored, dtype=np.float32)
    ran = result.config  # the configuration that actually ran (the plan's)
    fe = result.free_energy
    record.update(
        sigma=float(result.sigma) * units,
        sigma_source=result.noise,
        free_energy=fe[-1] if fe else None,
        config=ran.to_dict(),
        epochs=ran.epochs,
    )

    if reference is not None:
        with_input = mask is None and opts.command == "denoise"
        _metrics(record, reference, restored, image, units, with_input, rep, job)
    _save(job, ctx, restored, info, result, record)
    record["seconds"] = time.perf_counter() - t0
    record["status"] = "ok"
    return record


def _run_engine(job: Job, ctx: RunContext, image, mask, units: float):
    """(restored, Result) of the library's ``denoise`` or ``inpaint`` on one loaded input, σ
    converted from the input's ``units``; library errors become one-line InputErrors."""
    settings, rep = ctx.settings, ctx.reporter
    kwargs = dict(
        sigma=None if settings.sigma is None else settings.sigma / units,
        config=settings.config,
        seed=settings.seed,
        device=ctx.device,
        callback=lambda state: rep.update(state, units),
        max_memory=settings.max_memory,
    )
    rep.start_file(job.source if job.source != "-" else "stdin")
    try:
        with warnings_as_lines(rep):
            return _call(ctx.opts.command, image, mask, kwargs)
    except ValueError as e:  # the library's parameters named as the command line's
        first = (str(e).strip().splitlines() or ["invalid input"])[0]
        raise InputError(first.replace("raise max_memory", "raise --max-memory")) from None
    except (RuntimeError, MemoryError) as e:
        msg = _oom_message(e, ctx, settings.config)
        if msg is None:
            raise
        raise InputError(msg) from None
    finally:
        rep.end_file()


def _call(command: str, image, mask, kwargs):
    from . import restore

    if command == "inpaint":
        return restore.inpaint(image, mask, **kwargs)
    return restore.denoise(image, mask=mask, **kwargs)


@contextlib.contextmanager
def warnings_as_lines(rep: Reporter):
    """Python warnings raised inside (the library's :class:`~evodenoise.device.EngineWarning`,
    torch's) reported as one ``warning:`` line each, once per message."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            seen = set()
            for w in caught:
                line = (str(w.message).strip().splitlines() or [w.category.__name__])[0]
                if line not in seen:
                    seen.add(line)
                    rep.warn(line)


def _metrics(record, reference, restored, image, units, with_input, rep, job) -> None:
    from .metrics import psnr, ssim

    record["psnr"] = psnr(reference * units, restored * units, data_range=units)
    try:
        record["ssim"] = ssim(reference * units, restored * units, data_range=units)
    except ValueError as e:  # images smaller than the SSIM window
        rep.warn(f"{quote(job.source)}: SSIM not computed: {e}")
    if with_input:
        record["psnr_input"] = psnr(reference * units, image * units, data_range=units)


def _save(job: Job, ctx: RunContext, restored, info: ImageInfo, result, record: dict) -> None:
    """The restored image, then the fields and the log; atomic writes."""
    opts, units = ctx.opts, info.data_range
    try:
        if job.output == "-":
            data = encode_image(restored, info, "png")
            image_to_stdout(data)
        else:
            if not opts.force and os.path.lexists(job.output):  # appeared while we worked
                raise InputError(f"{quote(job.output)} exists (use -f/--force to overwrite)")
            Path(job.output).parent.mkdir(parents=True, exist_ok=True)
            write_image(job.output, restored, info)
        if job.fields_path is not None:
            tiled = tile_fields(np.asarray(result.fields, dtype=np.float32))
            Path(job.fields_path).parent.mkdir(parents=True, exist_ok=True)
            write_image(
                job.fields_path,
                tiled,
                ImageInfo(
                    shape=tiled.shape[:2],
                    channels=1 if tiled.ndim == 2 else tiled.shape[2],
                    dtype="uint8",
                    data_range=255.0,
                ),
            )
        if job.log_path is not None:
            log = {
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
            Path(job.log_path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(job.log_path, (json.dumps(jsonable(log), indent=1) + "\n").encode())
    except ImageError as e:
        raise InputError(str(e)) from None
    except OSError as e:
        where = getattr(e, "filename", None) or job.output
        raise InputError(f"cannot write {quote(where)}: {e.strerror or type(e).__name__}") from None


def _in_units(entry: dict, units: float) -> dict:
    out = dict(entry)
    if out.get("sigma") is not None:
        out["sigma"] = float(out["sigma"]) * units
    return out


def _shape_text(shape) -> str:
    return f"{shape[1]}x{shape[0]}" + (f"x{shape[2]}" if len(shape) == 3 else "")


def _failed(job: Job, ctx: RunContext, message: str) -> dict:
    if job.source != "-" and not message.startswith(quote(job.source)):
        message = f"{quote(job.source)}: {message}"  # name the input the error is about
    record = _record(job, ctx)
    record.update(status="error", error=message, output=None)
    ctx.reporter.error(message)
    return record


def _process_or_fail(job: Job, ctx: RunContext) -> dict:
    """:func:`process`, with any failure of the input turned into its error record."""
    try:
        return process(job, ctx)
    except InputError as e:
        return _failed(job, ctx, str(e))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # a bug or an unexpected fault: one line, keep going
        first = (str(e).strip().splitlines() or [""])[0]
        record = _failed(job, ctx, f"unexpected {type(e).__name__}: {first}")
        if ctx.opts.verbose and sys.stderr is not None:
            sys.stderr.write(traceback.format_exc())
        return record


def run_batch(opts: Options) -> int:
    """The whole of ``denoise`` / ``inpaint``; returns the exit code (0 or 1)."""
    settings = check_options(opts)
    jobs = plan(opts, settings.shard)
    from .device import resolve_device
    from .memory import keep_freed_memory

    rep = Reporter(quiet=opts.quiet, verbose=opts.verbose)
    try:
        with warnings_as_lines(rep):
            device = resolve_device(opts.device)
    except ValueError as e:
        raise UsageError(f"--device: {e}") from None
    if device.type == "cpu":  # a process-wide allocator setting: the CLI's, not the library's
        keep_freed_memory()
    if (opts.json or opts.output == "-") and sys.stdout is None:
        rep.error(
            "stdout is closed; nothing was done (give -o FILE, drop --json, or keep stdout open)"
        )
        return 1
    ctx = RunContext(opts=opts, settings=settings, device=device, reporter=rep)
    sigma = settings.sigma
    shard = "" if settings.shard is None else ", shard {}/{}".format(*settings.shard)
    rep.debug(
        f"{opts.command}: {len(jobs)} input(s), device {device}, seed {settings.seed}, "
        f"σ {'learned' if sigma is None else f'{sigma:g} (input units)'}{shard}"
    )
    rep.debug("config: " + ", ".join(f"{k}={v}" for k, v in settings.config.to_dict().items()))
    counts = {"ok": 0, "skipped": 0, "error": 0}
    json_out, stream_failed = opts.json, False
    with rep:
        rep.start_files(len(jobs))
        for job in jobs:
            record = _process_or_fail(job, ctx)
            counts[record["status"]] += 1
            if record["status"] == "ok":
                rep.info(human_line(record))
            elif record["status"] == "skipped":
                rep.info(f"{quote(job.source)}: skipped, {quote(job.output)} exists")
            if json_out:
                try:
                    write_stdout(json_line(record))
                except StreamError as e:  # reported once; the batch goes on without JSON
                    rep.error(f"--json: {e}; no more JSON Lines are written")
                    json_out, stream_failed = False, True
            rep.advance_files()
            if record["status"] == "error" and opts.fail_fast:
                break
    if len(jobs) > 1:  # one input: its own line says it all
        rest = len(jobs) - sum(counts.values())
        summary = f"{counts['ok']} restored, {counts['skipped']} skipped, {counts['error']} failed"
        rep.info(summary + (f", {rest} not started (--fail-fast)" if rest else ""))
    if not jobs:
        rep.info(f"shard {settings.shard[0]}/{settings.shard[1]}: no inputs fall to this shard")
    return 1 if counts["error"] or stream_failed else 0
