"""What the command line tells: messages and progress on stderr, JSON Lines on stdout.

Streams: human text (errors, warnings, the line per input, progress) goes to stderr; stdout
carries only what was asked for (JSON Lines with ``--json``, an image with ``-o -``). A closed,
full or broken stdout raises :class:`StreamError` (one line), never a traceback.

Progress: one bar per input driven by the library's ``progress`` (the fraction of the whole
run done; ``epoch/epochs`` when absent), with an ETA, animated on a terminal; otherwise a line
at every tenth of the run. With several inputs the same one live line also shows the files
done of the total and the batch's ETA (:class:`BatchProgress`, from the pixels done), and
the line of each finished input ends with both.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import numpy as np

from .decode import quote

__all__ = ["Reporter", "StreamError", "human_line", "json_line", "quote", "write_stdout"]


class StreamError(Exception):
    """stdout cannot take what we write (closed, full, broken pipe); the message is one line."""


def one_line(text: str) -> str:
    """``text`` with control characters escaped: a message stays on one line."""
    return (
        text
        if text.isprintable()
        else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    )


def write_stdout(data) -> None:
    """Write ``data`` (bytes: an image; str: text) to stdout and flush it."""
    stream = sys.stdout
    if stream is None:
        raise StreamError("stdout is closed")
    try:
        if isinstance(data, (bytes, bytearray)):
            stream.flush()
            stream.buffer.write(data)
            stream.buffer.flush()
        else:
            stream.write(data)
            stream.flush()
    except BrokenPipeError:
        _discard_stdout()
        raise StreamError("stdout was closed by the reader (broken pipe)") from None
    except ValueError:  # "I/O operation on closed file"
        raise StreamError("stdout is closed") from None
    except OSError as e:
        _discard_stdout()
        raise StreamError(f"cannot write to stdout: {e.strerror or type(e).__name__}") from None


def image_to_stdout(data: bytes) -> None:
    """An encoded image to stdout; a stream that cannot take it fails that input."""
    from .options import InputError

    try:
        write_stdout(data)
    except StreamError as e:
        raise InputError(str(e)) from None


def _discard_stdout() -> None:
    """Point fd 1 at /dev/null so that the interpreter's last flush of the unwritable buffer
    does not print 'Exception ignored' at exit."""
    try:
        fd = sys.stdout.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (AttributeError, OSError, ValueError):  # not a real file (tests), or already gone
        pass


def jsonable(value):
    """Floats that JSON can carry (NaN and infinities become null), numpy scalars as Python."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def emit_json(rep: Reporter, record: dict) -> bool:
    """Write ``record`` as one JSON line on stdout; False (reported once) if stdout failed."""
    try:
        write_stdout(json_line(record))
        return True
    except StreamError as e:
        rep.error(f"--json: {e}")
        return False


def json_line(record: dict) -> str:
    return json.dumps(jsonable(record)) + "\n"


def psnr_text(record: dict) -> str:
    """ "PSNR 31.20 dB (input 20.17 dB)" of a record with a PSNR."""
    text = f"PSNR {record['psnr']:.2f} dB"
    if record.get("psnr_input") is not None:
        text += f" (input {record['psnr_input']:.2f} dB)"
    return text


def human_line(record: dict) -> str:
    """The line printed for a restored input."""
    parts = [f"{quote(record['input'])} -> {quote(record['output'])}"]
    if record.get("sigma") is not None:
        source = record.get("sigma_source") or ("given" if record.get("sigma_given") else "learned")
        if (record.get("config") or {}).get("noise_model") == "poisson-gaussian":
            source += ", photon counts: σ at the mean"  # the noise grows with the signal
        parts.append(f"σ={record['sigma']:.2f}" + ("" if source == "given" else f" ({source})"))
    if record.get("psnr") is not None:
        parts.append(psnr_text(record))
    if record.get("ssim") is not None:
        parts.append(f"SSIM {record['ssim']:.4f}")
    if record.get("seconds") is not None:
        parts.append(f"{record['seconds']:.1f} s on {record['device']}")
    return "  ".join(parts)


def _fmt(value, spec: str) -> str:
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return "?"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def progress_fraction(state: dict) -> float:
    """The fraction of the run done: the library's ``progress``, else epoch / epochs."""
    value = state.get("progress")
    if value is None:
        epochs = state.get("epochs") or 0
        value = (state.get("epoch") or 0) / epochs if epochs else 0.0
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return min(max(value, 0.0), 1.0) if math.isfinite(value) else 0.0


def progress_stats(state: dict, sigma_units: float) -> str:
    """What a progress update shows: epoch, free energy, σ (input units) or the band."""
    if state.get("phase") == "estimate":
        return f"estimate band {state.get('band', '?')}/{state.get('bands', '?')}"
    return (
        f"epoch {state.get('epoch', '?')}/{state.get('epochs', '?')}  "
        f"F={_fmt(state.get('free_energy'), '.5g')}  "
        f"σ={_fmt(_times(state.get('sigma'), sigma_units), '.2f')}"
    )


def _times(value, factor: float):
    return None if value is None else value * factor


class BatchProgress:
    """Where a batch of ``total`` inputs is: files done, and an ETA from the pixels done.

    The time per pixel so far (failed and skipped inputs included, at their cost) times the
    pixels left: the input in progress (``fraction`` of it done) and, for inputs not yet
    started, the mean size of those started.
    """

    def __init__(self, total: int, clock=time.perf_counter):
        self.total, self.clock, self.t0 = total, clock, clock()
        self.done = self.sized = 0  # inputs finished; of them, restored (with pixels)
        self.pixels_done = 0
        self.current = 0  # pixels of the input in progress (0: none, or not yet loaded)

    def start(self, pixels: int) -> None:
        self.current = max(0, int(pixels))

    def finish(self, pixels: int = 0) -> None:
        self.done += 1
        if pixels > 0:
            self.pixels_done += int(pixels)
            self.sized += 1
        self.current = 0

    def eta(self, fraction: float = 0.0) -> float | None:
        """Seconds left for the whole batch; None until some pixels are done."""
        done = self.pixels_done + fraction * self.current
        if done <= 0:
            return None
        in_progress = 1 if self.current else 0
        mean = (self.pixels_done + self.current) / max(1, self.sized + in_progress)
        left = self.total - self.done - in_progress
        total = self.pixels_done + self.current + mean * max(0, left)
        return (self.clock() - self.t0) / done * max(0.0, total - done)

    def text(self, fraction: float = 0.0) -> str:
        """``[2/5 files, batch ETA 0:01:10]`` (no ETA when unknown or finished)."""
        eta = None if self.done >= self.total else self.eta(fraction)
        tail = "" if eta is None else f", batch ETA {_duration(eta)}"
        return f"[{self.done}/{self.total} files{tail}]"


class Reporter:
    """Human output on stderr; an animated bar only when stderr is a terminal."""

    STEPS = 1000  # resolution of the per-file bar

    def __init__(self, quiet: bool = False, verbose: bool = False):
        self.quiet, self.verbose = quiet, verbose
        self.progress = None
        self.file_task = self.bar = None
        self.name, self.started, self.next_line = "", 0.0, 0.1
        self.batch: BatchProgress | None = None  # several inputs
        if not quiet and sys.stderr is not None:
            try:
                from rich.console import Console

                console = Console(stderr=True)
                animated = console.is_terminal and not console.is_dumb_terminal
            except Exception:
                animated = False
            if animated:
                from rich.progress import (
                    BarColumn,
                    Progress,
                    SpinnerColumn,
                    TaskProgressColumn,
                    TextColumn,
                    TimeElapsedColumn,
                    TimeRemainingColumn,
                )

                self.progress = Progress(
                    SpinnerColumn(),
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TaskProgressColumn(),
                    TextColumn("{task.fields[stats]}"),
                    TimeElapsedColumn(),
                    TextColumn("ETA"),
                    TimeRemainingColumn(),
                    TextColumn("{task.fields[batch]}"),
                    console=console,
                    transient=True,
                )

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False

    def _emit(self, message: str) -> None:
        message = one_line(message)
        try:
            if self.progress is not None:
                self.progress.console.print(message, markup=False, highlight=False, soft_wrap=True)
            elif sys.stderr is not None:
                sys.stderr.write(message + "\n")
                sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed or full: nowhere left to report
            pass

    def error(self, message: str) -> None:
        self._emit(f"error: {message}")

    def warn(self, message: str) -> None:
        if not self.quiet:
            self._emit(f"warning: {message}")

    def info(self, message: str) -> None:
        if not self.quiet:
            self._emit(message)

    def debug(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self._emit(message)

    # ---- progress -------------------------------------------------------------------------

    def start_files(self, total: int) -> None:
        self.batch = BatchProgress(total) if total > 1 else None

    def advance_files(self, pixels: int = 0) -> None:
        """An input finished (``pixels``: its size when it was restored, else 0)."""
        if self.batch is not None:
            self.batch.finish(pixels)

    def batch_text(self) -> str:
        """What a finished input's line ends with: files done and the batch's ETA."""
        return "" if self.batch is None else "  " + self.batch.text()

    def start_file(self, name: str, pixels: int = 0) -> None:
        self.name, self.started, self.next_line = quote(name), time.perf_counter(), 0.1
        if self.progress is not None:  # the batch has its own column
            batch = "" if self.batch is None else self.batch.text()
            self.bar = self.progress.add_task(self.name, total=self.STEPS, stats="", batch=batch)
        if self.batch is not None:
            self.batch.start(pixels)
            self.name = f"[{self.batch.done + 1}/{self.batch.total}] {self.name}"

    def update(self, state: dict, sigma_units: float) -> None:
        """One callback of the library; ``sigma_units`` turns its σ into input units."""
        done = progress_fraction(state)
        stats = progress_stats(state, sigma_units)
        if self.progress is not None and self.bar is not None:
            batch = "" if self.batch is None else self.batch.text(done)
            self.progress.update(
                self.bar, completed=round(done * self.STEPS), stats=stats, batch=batch
            )
        elif not self.quiet and done >= self.next_line - 1e-9:  # a line per tenth of the run
            while self.next_line <= done + 1e-9:
                self.next_line += 0.1
            elapsed = time.perf_counter() - self.started
            eta = elapsed / done * (1 - done) if done > 0 else 0.0
            extra = (
                ""
                if state.get("phase") == "estimate"
                else (
                    f"  active={_fmt(state.get('mean_active'), '.2f')}"
                    f"  lr={_fmt(state.get('lr'), '.2e')}"
                )
            )
            self._emit(f"  {self.name}: {100 * done:3.0f}%  {stats}{extra}  ETA {_duration(eta)}")

    def end_file(self) -> None:
        if self.progress is not None and self.bar is not None:
            self.progress.remove_task(self.bar)
        self.bar = None
