"""Running a batch: for each input load it, call the library, save the result, record it.

Units: the library works on the [0, 1] scale. σ crosses that boundary once on the way in
(``--sigma`` / data range) and once on the way out (:meth:`Units.out`, for the record, the
log and the progress display). The record reports the configuration that actually ran
(``Result.config``), the preset resolved for the input, and everything of the run.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
import traceback
import warnings
from dataclasses import dataclass

import numpy as np

from .batch import Job, plan
from .config import Config
from .decode import ImageError, quote
from .imageio import read_image, read_mask
from .options import InputError, Options, Settings, UsageError, check_options
from .report import (
    Reporter,
    StreamError,
    human_line,
    json_line,
    write_stdout,
)
from .save import save_outputs

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
        "gain_given": ctx.settings.gain,
        "sigma_source": None,
        "noise_reading": None,
        "check": None,
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
        "compare": job.compare_path,
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
    if info.is_float and settings.data_range is None and 0 < float(np.max(image)) <= 1 / 255:
        rep.warn(
            f"{quote(job.source)}: every value is within 0..1 but float inputs are on a 0-255 "
            f"scale, so it reads as nearly black; if white is 1, give --data-range 1"
        )

    restored, result = _run_engine(job, ctx, image, mask, units)
    restored = np.asarray(restored, dtype=np.float32)
    _check_diverged(restored, result)
    ran = result.config  # the configuration that actually ran (the plan's)
    fe = result.free_energy
    record.update(
        sigma=float(result.sigma) * units,
        sigma_source=result.noise,
        free_energy=fe[-1] if fe else None,
        config=ran.to_dict(),
        epochs=ran.epochs,
    )
    _report_reading(job, record, result, rep)
    _report_check(job, record, result, rep)

    if reference is not None:
        with_input = mask is None and opts.command == "denoise"
        _metrics(record, reference, restored, image, units, with_input, rep, job)
    record["seconds"] = time.perf_counter() - t0
    views = (image, reference) if job.compare_path is not None else None
    saved = save_outputs(job, opts, restored, info, result, record, views)
    record["status"] = "ok" if saved else "skipped"
    if not saved:
        record["skipped_because"] = "appeared"
    return record


def _report_reading(job: Job, record: dict, result, rep: Reporter) -> None:
    """The noise as read where σ was estimated (noise.Reading) into the record, and one warning
    line where its kind, so the σ assumed, is uncertain."""
    reading = getattr(result, "reading", None)
    if reading is None:
        return
    record["noise_reading"] = reading.as_dict()
    if reading.unsure:
        rep.warn(
            f"{quote(job.source)}: σ {record['sigma']:.3g} is uncertain (whiteness "
            f"{reading.whiteness:.2f}: fine texture under weak white noise and noise correlated "
            f"between neighbours read alike); if you know σ, give --sigma"
        )


def _report_check(job: Job, record: dict, result, rep: Reporter) -> None:
    """The result's self-check (check.py) into the record, and one warning line if it failed."""
    check = getattr(result, "check", None)
    if check is not None:
        record["check"] = check.as_dict()
        said = check.said(sigma_given=result.noise == "given")
        if said:  # level and structure findings of an estimated σ: in the record only
            rep.warn(f"{quote(job.source)}: check: {said}")


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
    if settings.gain is not None:  # (only then: the call stays the plain one otherwise)
        kwargs["gain"] = settings.gain / units
    rep.start_file(job.source if job.source != "-" else "stdin", image.shape[0] * image.shape[1])
    try:
        with warnings_as_lines(rep):
            return _call(ctx.opts.command, image, mask, kwargs)
    except ValueError as e:  # the library's parameters named as the command line's
        first = (str(e).strip().splitlines() or ["invalid input"])[0]
        raise InputError(re.sub(r"(?<![-\w])max_memory", "--max-memory", first)) from None
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


def _shape_text(shape) -> str:
    return f"{shape[1]}x{shape[0]}" + (f"x{shape[2]}" if len(shape) == 3 else "")


def _check_diverged(restored, result) -> None:
    """A run whose result is not finite diverged: say so (and what to lower), rather than
    only refusing to write NaN."""
    if np.isfinite(restored).all():
        return
    fe = [f for f in (result.free_energy or []) if f is not None]
    bad = next((i for i, f in enumerate(fe) if not np.isfinite(f)), None)
    when = f" (free energy {fe[bad]} at epoch {bad + 1})" if bad is not None else ""
    lr = getattr(result.config, "lr_max", None)
    raise InputError(
        f"training diverged{when}: the result is not finite; nothing written "
        f"(lower --set lr_max, now {lr:g}, or use another --seed)"
        if lr is not None
        else f"training diverged{when}: the result is not finite; nothing written"
    )


def _failed(job: Job, ctx: RunContext, message: str, output: str | None = None) -> dict:
    if job.source != "-" and not message.startswith(quote(job.source)):
        message = f"{quote(job.source)}: {message}"  # name the input the error is about
    record = _record(job, ctx)
    record.update(status="error", error=message, output=output)
    ctx.reporter.error(message)
    return record


def _process_or_fail(job: Job, ctx: RunContext) -> dict:
    """:func:`process`, with any failure of the input turned into its error record."""
    try:
        return process(job, ctx)
    except InputError as e:  # a side file's failure keeps the output written before it
        return _failed(job, ctx, str(e), getattr(e, "written", None))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # a bug or an unexpected fault: one line, keep going
        first = (str(e).strip().splitlines() or [""])[0]
        record = _failed(job, ctx, f"unexpected {type(e).__name__}: {first}")
        if ctx.opts.verbose and sys.stderr is not None:
            sys.stderr.write(traceback.format_exc())
        return record


def _tell(rep: Reporter, job: Job, record: dict) -> None:
    """The line of a finished input (a failure's was printed when it failed), with the
    batch's count and ETA."""
    ok = record["status"] == "ok"
    rep.advance_files(record["width"] * record["height"] if ok else 0)
    if ok:
        rep.info(human_line(record) + rep.batch_text())
    elif record.pop("skipped_because", None):
        why = "was made meanwhile (another process?)"
        rep.info(f"{quote(job.source)}: skipped, {quote(job.output)} {why}{rep.batch_text()}")
    elif record["status"] == "skipped":
        rep.info(f"{quote(job.source)}: skipped, {quote(job.output)} exists{rep.batch_text()}")


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
        f"σ {'learned' if sigma is None else f'{sigma:g} (input units)'}"
        f"{'' if settings.gain is None else f', gain {settings.gain:g}'}{shard}"
    )
    rep.debug("config: " + ", ".join(f"{k}={v}" for k, v in settings.config.to_dict().items()))
    counts = {"ok": 0, "skipped": 0, "error": 0}
    json_out, stream_failed = opts.json, False
    with rep:
        rep.start_files(len(jobs))
        for job in jobs:
            record = _process_or_fail(job, ctx)
            counts[record["status"]] += 1
            _tell(rep, job, record)
            if json_out:
                try:
                    write_stdout(json_line(record))
                except StreamError as e:  # reported once; the batch goes on without JSON
                    rep.error(f"--json: {e}; no more JSON Lines are written")
                    json_out, stream_failed = False, True
            if record["status"] == "error" and opts.fail_fast:
                break
    if len(jobs) > 1:  # one input: its own line says it all
        rest = len(jobs) - sum(counts.values())
        summary = f"{counts['ok']} restored, {counts['skipped']} skipped, {counts['error']} failed"
        rep.info(summary + (f", {rest} not started (--fail-fast)" if rest else ""))
    if not jobs:
        rep.info(f"shard {settings.shard[0]}/{settings.shard[1]}: no inputs fall to this shard")
    return 1 if counts["error"] or stream_failed else 0
