"""The ``evodenoise`` command line: parse, load, call the library, save, report.

Commands: ``denoise``, ``inpaint`` (both take any number of images or folders) and
``corrupt`` (make noisy / masked test inputs with the benchmark protocol).

Streams: images and JSON Lines go to stdout only when asked for (``-o -``, ``--json``); every
human message, warning, error and progress bar goes to stderr.

Exit codes: 0 every input succeeded (or was skipped), 1 at least one input failed,
2 usage error (bad option value, missing mask, unknown preset or device, output collisions),
130 interrupted (Ctrl-C; no partial output is left behind).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from . import __version__
from .config import PRESET_NOTES, PRESETS, Config, get_preset
from .imageio import (INPUT_SUFFIXES, ImageError, ImageInfo, encode_image,
                      output_format, read_image, read_mask, write_image)

_EXAMPLES = """\
[bold]Examples[/bold]

  [dim]# one image; σ in 8-bit units; writes photo_denoised.png beside it[/dim]
  evodenoise denoise photo.png --sigma 25

  [dim]# unknown noise: σ is learned and reported[/dim]
  evodenoise denoise photo.png -o clean.png

  [dim]# a folder (and its subfolders) into another folder, resumable[/dim]
  evodenoise denoise scans/ --recursive --output-dir restored/ --skip-existing

  [dim]# fill holes: white/non-zero mask pixels are missing[/dim]
  evodenoise inpaint photo.png --mask holes.png

  [dim]# pipe: read stdin, write PNG to stdout[/dim]
  cat noisy.png | evodenoise denoise - -o - > clean.png

  [dim]# scripting: one JSON object per input on stdout, exit code 1 if any failed[/dim]
  evodenoise denoise shots/*.png --output-dir out/ --json > results.jsonl

  [dim]# measure on your own image: add noise, restore, compare[/dim]
  evodenoise corrupt clean.png --sigma 25 -o noisy.npy
  evodenoise denoise noisy.npy --sigma 25 --reference clean.png

Exit codes: 0 all inputs succeeded, 1 some input failed, 2 usage error, 130 interrupted.
"""

app = typer.Typer(
    name="evodenoise",
    epilog=_EXAMPLES,
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# ============================================================================================
# errors and reporting


class UsageFail(Exception):
    """A usage error: reported as one line, exit code 2, before any work."""


class InputFail(Exception):
    """One input failed: reported as one line (and a JSON record); the batch goes on."""


class Reporter:
    """Human output on stderr; progress bars only when stderr is a terminal."""

    def __init__(self, quiet: bool = False, verbose: bool = False):
        self.quiet = quiet
        self.verbose = verbose
        self.progress = None
        self.file_task = None
        self.epoch_task = None
        self.animated = False
        if not quiet:
            try:
                from rich.console import Console

                console = Console(stderr=True)
                self.animated = console.is_terminal and not console.is_dumb_terminal
            except Exception:
                self.animated = False
            if self.animated:
                from rich.progress import (BarColumn, MofNCompleteColumn, Progress,
                                           SpinnerColumn, TextColumn, TimeElapsedColumn,
                                           TimeRemainingColumn)

                self.progress = Progress(
                    SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                    TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=console, transient=True)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.stop()
        return False

    def _emit(self, message: str) -> None:
        if self.progress is not None:
            self.progress.console.print(message, markup=False, highlight=False, soft_wrap=True)
        else:
            sys.stderr.write(message + "\n")
            sys.stderr.flush()

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
        if self.progress is not None and total > 1:
            self.file_task = self.progress.add_task("files", total=total, stats="")

    def advance_files(self) -> None:
        if self.progress is not None and self.file_task is not None:
            self.progress.advance(self.file_task)

    def start_epochs(self, name: str, total: int) -> None:
        self.epoch_start = time.perf_counter()
        self.epoch_name = name
        if self.progress is not None:
            self.epoch_task = self.progress.add_task(name, total=max(total, 1), stats="")

    def epoch(self, info: dict, data_range: float) -> None:
        epoch, epochs = int(info.get("epoch", 0)), int(info.get("epochs", 0) or 0)
        stats = f"F={_fmt(info.get('free_energy'), '.5g')}  σ={_fmt(_scale(info.get('sigma'), data_range), '.2f')}"
        if self.progress is not None and self.epoch_task is not None:
            self.progress.update(self.epoch_task, completed=epoch, total=max(epochs, 1),
                                 stats=stats)
        elif not self.quiet:  # not a terminal: a line at every tenth of the run
            every = max(1, epochs // 10)
            if epoch == 1 or epoch % every == 0 or epoch == epochs:
                elapsed = time.perf_counter() - getattr(self, "epoch_start", time.perf_counter())
                eta = elapsed / max(epoch, 1) * max(epochs - epoch, 0)
                self._emit(f"  {getattr(self, 'epoch_name', '')}: epoch {epoch}/{epochs}  {stats}"
                           f"  active={_fmt(info.get('mean_active'), '.2f')}"
                           f"  lr={_fmt(info.get('lr'), '.2e')}  ETA {_duration(eta)}")

    def end_epochs(self) -> None:
        if self.progress is not None and self.epoch_task is not None:
            self.progress.remove_task(self.epoch_task)
            self.epoch_task = None


def _fmt(value, spec: str) -> str:
    try:
        return format(float(value), spec)
    except (TypeError, ValueError):
        return "?"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _scale(value, data_range: float):
    return None if value is None else float(value) * data_range


def _jsonable(value):
    """Floats that JSON can carry (NaN and infinities become null)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _emit_json(record: dict) -> None:
    sys.stdout.write(json.dumps(_jsonable(record)) + "\n")
    sys.stdout.flush()


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return "; ".join(lines[:1]) or type(e).__name__


# ============================================================================================
# option parsing helpers (each raises UsageFail with one line)


def parse_sigma(text: Optional[str]) -> Optional[float]:
    """``--sigma``: a positive number or ``auto`` (None)."""
    if text is None or text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageFail(f"--sigma must be a positive number or 'auto' (got {text!r})") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageFail(f"--sigma must be a positive number or 'auto' (got {text!r}); "
                        f"for noise-free inpainting leave it out")
    return value


def parse_data_range(value: Optional[float]) -> Optional[float]:
    if value is None:
        return None
    if not math.isfinite(value) or value <= 0:
        raise UsageFail(f"--data-range must be a positive number (got {value:g})")
    return float(value)


def _parse_field_value(key: str, default, text: str):
    text = text.strip()
    try:
        if isinstance(default, bool):
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            value = float(text)
            if not math.isfinite(value):
                raise ValueError
            return value
        if isinstance(default, tuple):
            inner = text.strip("()[] ")
            return tuple(int(p) for p in inner.replace(" ", ",").split(",") if p.strip())
        return text
    except ValueError:
        kind = {int: "an integer", float: "a number", tuple: "comma-separated integers",
                bool: "true or false"}.get(type(default), "a value")
        raise UsageFail(f"--set {key}={text}: expected {kind}") from None


def build_config(preset: str, epochs: Optional[int], sets: Optional[list[str]]) -> Config:
    """The preset with ``--set KEY=VALUE`` overrides and ``--epochs`` applied."""
    try:
        config = get_preset(preset)
    except ValueError as e:
        raise UsageFail(f"--preset: {_one_line(e)}") from None
    fields = {f.name for f in dataclasses.fields(Config)}
    changes = {}
    for item in sets or []:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageFail(f"--set {item!r}: expected KEY=VALUE, e.g. --set n_states=32")
        if key not in fields:
            raise UsageFail(f"--set: unknown config key {key!r}; known: {', '.join(sorted(fields))}")
        changes[key] = _parse_field_value(key, getattr(config, key), value)
    if epochs is not None:
        changes["epochs"] = epochs
    if "epochs" in changes:  # an explicit epoch count is taken as it is
        changes.setdefault("min_visits", 0)
    try:
        return config.replace(**changes)
    except (ValueError, TypeError) as e:
        raise UsageFail(f"invalid configuration: {_one_line(e)}") from None


def resolve_device_or_fail(spec: str):
    from .device import resolve_device

    try:
        return resolve_device(spec)
    except ValueError as e:
        raise UsageFail(f"--device: {_one_line(e)}") from None


# ============================================================================================
# planning a batch


@dataclass
class Job:
    source: str  # a path, or "-" for stdin
    stem: str
    output: Optional[str] = None  # a path, or "-" for stdout
    mask: Optional[str] = None
    reference: Optional[str] = None
    fields_path: Optional[str] = None
    log_path: Optional[str] = None
    error: Optional[str] = None  # known before any work (missing file, no mask ...)
    skip: bool = False
    warnings: list[str] = field(default_factory=list)


def _is_image_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in INPUT_SUFFIXES and not p.name.startswith(".")


def expand_inputs(inputs: list[str], *, recursive: bool, suffix: str,
                  exclude_dirs: tuple[Path, ...] = ()) -> list[tuple[str, Optional[Path]]]:
    """Files and directories to a list of (file, the directory it was found in or None).

    Directories give their image files sorted by name (``recursive``: their subfolders too),
    leaving out hidden files, earlier outputs (stem ending in ``suffix``), masks written by
    ``corrupt`` (stem ending in ``_mask``) and anything under ``exclude_dirs``. Files named
    explicitly are always kept; a name that does not exist is kept too (it fails later, as
    one input of the batch).
    """
    out: list[tuple[str, Optional[Path]]] = []
    excluded = [d.resolve() for d in exclude_dirs]
    for item in inputs:
        if item == "-":
            out.append(("-", None))
            continue
        p = Path(item)
        if p.is_dir():
            found = sorted(p.rglob("*") if recursive else p.iterdir(), key=lambda q: str(q))
            for q in found:
                if not _is_image_file(q):
                    continue
                rel_parts = q.relative_to(p).parts
                if any(part.startswith(".") for part in rel_parts):
                    continue
                if suffix and q.stem.endswith(suffix):
                    continue
                if q.stem.endswith("_mask"):
                    continue
                rq = q.resolve()
                if any(rq.is_relative_to(d) for d in excluded):
                    continue
                out.append((str(q), p))
        else:
            out.append((item, None))
    return out


def _index_by_stem(directory: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for q in sorted(directory.iterdir()):
        if _is_image_file(q):
            index.setdefault(q.stem, []).append(q)
    return index


def _pair(index: dict[str, list[Path]], stem: str, extra_stems=()) -> tuple[Optional[Path], str]:
    for s in (stem, *extra_stems):
        cands = index.get(s, [])
        if len(cands) == 1:
            return cands[0], ""
        if len(cands) > 1:
            return None, f"several candidates: {', '.join(c.name for c in cands)}"
    return None, "not found"


def _file_key(path: str):
    """Identity of an existing file (device, inode), else its resolved path."""
    try:
        st = os.stat(path)
        return (st.st_dev, st.st_ino)
    except OSError:
        return os.path.realpath(path)


def _same_file(a: str, b_keys: set) -> bool:
    return _file_key(a) in b_keys or os.path.realpath(a) in b_keys


def _probe_dir(directory: Path, what: str) -> None:
    """Create ``directory`` when missing and check that a file can be made in it."""
    import tempfile

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageFail(f"{what} {str(directory)!r} exists and is not a directory") from None
    except OSError as e:
        raise UsageFail(f"cannot create {what} {str(directory)!r}: {e.strerror or _one_line(e)}") from None
    if not directory.is_dir():
        raise UsageFail(f"{what} {str(directory)!r} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise UsageFail(f"cannot write to {what} {str(directory)!r}: {e.strerror or _one_line(e)}") from None


def _template(path: Optional[str], stem: str, many: bool, flag: str) -> Optional[str]:
    if path is None:
        return None
    if many and "{stem}" not in path:
        raise UsageFail(f"{flag} with several inputs needs '{{stem}}' in the file name, "
                        f"e.g. {flag} fields_{{stem}}.png")
    try:
        return path.replace("{stem}", stem)
    except Exception:  # pragma: no cover
        return path


@dataclass
class Options:
    command: str
    inputs: list[str]
    output: Optional[str]
    output_dir: Optional[str]
    suffix: Optional[str]
    fmt: str
    force: bool
    skip_existing: bool
    recursive: bool
    sigma: Optional[str]
    data_range: Optional[float]
    mask: Optional[str]
    mask_dir: Optional[str]
    invert_mask: bool
    reference: Optional[str]
    reference_dir: Optional[str]
    preset: str
    epochs: Optional[int]
    sets: Optional[list[str]]
    seed: int
    device: str
    json: bool
    quiet: bool
    verbose: bool
    fail_fast: bool
    save_fields: Optional[str]
    save_log: Optional[str]


def plan(opts: Options) -> list[Job]:
    """Every input with its output and side files, checked for collisions before any work."""
    suffix = opts.suffix if opts.suffix is not None else (
        "_inpainted" if opts.command == "inpaint" else "_denoised")
    if os.sep in suffix or (os.altsep and os.altsep in suffix):
        raise UsageFail(f"--suffix must not contain a path separator (got {suffix!r})")
    fmt = opts.fmt.lower().lstrip(".")
    if fmt not in ("png", "tif", "tiff", "npy"):
        raise UsageFail(f"--format must be png, tif or npy (got {opts.fmt!r})")
    if opts.output is not None and opts.output_dir is not None:
        raise UsageFail("-o/--output and --output-dir cannot be combined")
    if opts.mask is not None and opts.mask_dir is not None:
        raise UsageFail("--mask and --mask-dir cannot be combined")
    if opts.reference is not None and opts.reference_dir is not None:
        raise UsageFail("--reference and --reference-dir cannot be combined")
    if opts.force and opts.skip_existing:
        raise UsageFail("-f/--force and --skip-existing cannot be combined")
    if opts.command == "inpaint" and opts.mask is None and opts.mask_dir is None:
        raise UsageFail("inpaint needs a mask: --mask FILE or --mask-dir DIR "
                        "(white/non-zero = missing)")
    if opts.output == "-" and opts.json:
        raise UsageFail("-o - and --json both use stdout; write the image to a file instead")
    if opts.output == "-" and sys.stdout.isatty():
        raise UsageFail("refusing to write image data to a terminal; redirect stdout or give "
                        "-o FILE")

    for flag, value in (("--mask", opts.mask), ("--reference", opts.reference)):
        if value is not None:
            if not os.path.exists(value):
                raise UsageFail(f"{flag} {value}: no such file")
            if os.path.isdir(value):
                raise UsageFail(f"{flag} {value}: is a directory")
    for flag, value in (("--mask-dir", opts.mask_dir), ("--reference-dir", opts.reference_dir)):
        if value is not None and not os.path.isdir(value):
            raise UsageFail(f"{flag} {value}: no such directory")
    if opts.mask is not None:
        try:
            read_image(opts.mask)
        except ImageError as e:
            raise UsageFail(f"--mask: {_one_line(e)}") from None
    if opts.reference is not None:
        try:
            read_image(opts.reference, data_range=opts.data_range)
        except ImageError as e:
            raise UsageFail(f"--reference: {_one_line(e)}") from None

    if not opts.inputs:
        raise UsageFail("no input given")
    if "-" in opts.inputs and len(opts.inputs) > 1:
        raise UsageFail("'-' (stdin) must be the only input")
    output_dir = Path(opts.output_dir) if opts.output_dir is not None else None
    exclude = (output_dir,) if output_dir is not None and output_dir.exists() else ()
    found = expand_inputs(opts.inputs, recursive=opts.recursive, suffix=suffix,
                          exclude_dirs=exclude)
    if not found:
        raise UsageFail(f"no image files found in {', '.join(opts.inputs)} "
                        f"(looked for {', '.join(INPUT_SUFFIXES)})")
    if opts.output is not None and len(found) > 1:
        raise UsageFail(f"-o/--output takes a single input ({len(found)} given); "
                        f"use --output-dir for several")
    if found[0][0] == "-" and opts.output is None:
        raise UsageFail("reading from stdin needs -o FILE (or -o - for stdout)")
    if opts.output is not None and opts.output != "-":
        try:
            output_format(opts.output)
        except ImageError as e:
            raise UsageFail(f"-o: {_one_line(e).split(': ', 1)[-1]}") from None
        if os.path.isdir(opts.output):
            raise UsageFail(f"-o {opts.output}: is a directory (use --output-dir)")
    if opts.reference is not None and len(found) > 1:
        raise UsageFail("--reference takes a single input; use --reference-dir for several")

    mask_index = _index_by_stem(Path(opts.mask_dir)) if opts.mask_dir else None
    ref_index = _index_by_stem(Path(opts.reference_dir)) if opts.reference_dir else None
    many = len(found) > 1
    ext = {"tif": ".tif", "tiff": ".tif"}.get(fmt, "." + fmt)

    jobs: list[Job] = []
    for source, root in found:
        stem = "stdin" if source == "-" else Path(source).stem
        job = Job(source=source, stem=stem)
        if source != "-":
            if not os.path.exists(source):
                job.error = f"{source}: no such file"
            elif os.path.isdir(source):
                job.error = f"{source}: is a directory"
        if opts.output is not None:
            job.output = opts.output
        else:
            src = Path(source)
            if output_dir is not None:
                sub = src.parent.relative_to(root) if root is not None else Path()
                base = output_dir / sub
            else:
                base = src.parent
            job.output = str(base / f"{stem}{suffix}{ext}")
        if opts.mask is not None:
            job.mask = opts.mask
        elif mask_index is not None:
            m, why = _pair(mask_index, stem, (f"{stem}_mask",))
            if m is None and job.error is None:
                job.error = f"no mask for {stem} in {opts.mask_dir} ({why}; looked for " \
                            f"{stem}.* and {stem}_mask.*)"
            job.mask = str(m) if m is not None else None
        if opts.reference is not None:
            job.reference = opts.reference
        elif ref_index is not None:
            r, why = _pair(ref_index, stem)
            if r is None:
                job.warnings.append(f"no reference for {stem} in {opts.reference_dir} ({why}); "
                                    f"PSNR not reported")
            job.reference = str(r) if r is not None else None
        job.fields_path = _template(opts.save_fields, stem, many, "--save-fields")
        job.log_path = _template(opts.save_log, stem, many, "--save-log")
        jobs.append(job)

    for flag, value in (("--save-fields", opts.save_fields),):
        if value is not None:
            try:
                output_format(value)
            except ImageError:
                raise UsageFail(f"{flag} {value}: use a .png (or .tif / .npy) file name") from None

    # --- collisions, checked before any work ------------------------------------------------
    protected: set = set()
    for job in jobs:
        for p in (job.source, job.mask, job.reference):
            if p is not None and p != "-" and os.path.exists(p):
                protected.add(_file_key(p))
                protected.add(os.path.realpath(p))
    seen: dict[str, str] = {}
    for job in jobs:
        for kind, p in (("output", job.output), ("--save-fields", job.fields_path),
                        ("--save-log", job.log_path)):
            if p is None or p == "-":
                continue
            if _same_file(p, protected):
                raise UsageFail(f"{kind} {p} would overwrite an input; choose another name "
                                f"(never allowed, even with --force)")
            key = os.path.realpath(p)
            if key in seen:
                raise UsageFail(f"{seen[key]} and {job.source} would both write {p}; "
                                f"use --output-dir / --suffix / {{stem}} to tell them apart")
            seen[key] = job.source

    # --- existing outputs ---------------------------------------------------------------------
    for job in jobs:
        if job.error is not None or job.output == "-":
            continue
        existing = [p for p in (job.output, job.fields_path, job.log_path)
                    if p is not None and os.path.lexists(p)]
        if job.output is not None and os.path.isdir(job.output):
            job.error = f"{job.output}: output path is a directory"
        elif opts.skip_existing and os.path.lexists(job.output):
            job.skip = True
        elif existing and not opts.force:
            job.error = f"{existing[0]} exists (use -f/--force to overwrite, or --skip-existing)"

    # --- output directories -----------------------------------------------------------------
    if output_dir is not None:
        _probe_dir(output_dir, "output directory")
    elif opts.output not in (None, "-"):
        _probe_dir(Path(opts.output).parent, "output directory")
    for flag, value in (("--save-fields", opts.save_fields), ("--save-log", opts.save_log)):
        if value is not None and len(jobs) == 1:
            _probe_dir(Path(jobs[0].fields_path if flag == "--save-fields" else jobs[0].log_path).parent,
                       f"{flag} directory")
    if output_dir is None and opts.output is None:
        checked: dict[str, Optional[str]] = {}
        for job in jobs:
            if job.error is not None or job.skip:
                continue
            d = str(Path(job.output).parent)
            if d not in checked:
                try:
                    _probe_dir(Path(d), "directory")
                    checked[d] = None
                except UsageFail as e:
                    checked[d] = str(e)
            if checked[d] is not None:
                job.error = checked[d]
    return jobs


# ============================================================================================
# running


@dataclass
class RunContext:
    opts: Options
    config: Config
    device: object
    sigma: Optional[float]  # input units, None = learn
    reporter: Reporter


def _base_record(job: Job, ctx: RunContext) -> dict:
    return {
        "input": job.source, "output": job.output, "status": None, "error": None,
        "command": ctx.opts.command, "psnr": None, "ssim": None, "psnr_input": None,
        "sigma": None, "sigma_given": ctx.sigma, "data_range": None, "seconds": None,
        "device": str(ctx.device), "seed": ctx.opts.seed, "preset": ctx.opts.preset,
        "config": ctx.config.to_dict(), "width": None, "height": None, "channels": None,
        "bit_depth": None, "alpha": None, "mask": job.mask, "missing_fraction": None,
        "reference": job.reference, "epochs": ctx.config.epochs, "free_energy": None,
        "fields": job.fields_path, "log": job.log_path,
    }


def _oom_message(e: BaseException, ctx: RunContext) -> Optional[str]:
    text = str(e).lower()
    is_oom = isinstance(e, MemoryError) or "out of memory" in text
    try:
        import torch

        is_oom = is_oom or isinstance(e, torch.cuda.OutOfMemoryError)
    except Exception:  # pragma: no cover
        pass
    if not is_oom:
        return None
    c = ctx.config
    return (f"out of memory on {ctx.device}: lower --set chunk_size=N (now {c.chunk_size}) "
            f"or --set batch_size=N (now {c.batch_size}), or use a smaller --preset")


def process(job: Job, ctx: RunContext) -> dict:
    """Restore one input; returns its record (raises InputFail on a per-input error)."""
    from .restore import denoise, inpaint

    opts, rep = ctx.opts, ctx.reporter
    record = _base_record(job, ctx)
    t0 = time.perf_counter()
    if job.error is not None:
        raise InputFail(job.error)
    if job.skip:
        record["status"] = "skipped"
        return record
    for w in job.warnings:
        rep.warn(w)

    # ---- load ---------------------------------------------------------------------------
    try:
        if job.source == "-":
            data = sys.stdin.buffer.read()
            if not data:
                raise InputFail("stdin: no data (expected an encoded image)")
            image, info = read_image(data, data_range=opts.data_range)
        else:
            image, info = read_image(job.source, data_range=opts.data_range)
    except ImageError as e:
        raise InputFail(_one_line(e)) from None
    dr = info.data_range
    record.update(data_range=dr, width=info.shape[1], height=info.shape[0],
                  channels=info.channels, bit_depth=info.bit_depth if not info.is_float else "float",
                  alpha=info.has_alpha)
    rep.debug(f"{job.source}: {info.describe()}, data range {dr:g}")
    mask = None
    if job.mask is not None:
        try:
            mask = read_mask(job.mask, image.shape, invert=opts.invert_mask)
        except ImageError as e:
            raise InputFail(_one_line(e)) from None
        record["missing_fraction"] = float(mask.mean())
    reference = None
    if job.reference is not None:
        try:
            reference, rinfo = read_image(job.reference, data_range=opts.data_range)
        except ImageError as e:
            raise InputFail(f"reference: {_one_line(e)}") from None
        if reference.shape != image.shape:
            raise InputFail(f"reference {job.reference} is {_shape_text(reference.shape)} but the "
                            f"image is {_shape_text(image.shape)}")

    # ---- restore --------------------------------------------------------------------------
    sigma01 = None if ctx.sigma is None else ctx.sigma / dr
    rep.start_epochs(job.stem, ctx.config.epochs)

    def callback(state: dict) -> None:
        if state.get("phase", "train") == "train":
            rep.epoch(state, dr)

    try:
        if opts.command == "inpaint":
            restored, result = inpaint(image, mask, sigma=sigma01, config=ctx.config,
                                       seed=opts.seed, device=ctx.device, callback=callback)
        else:
            restored, result = denoise(image, sigma01, config=ctx.config, seed=opts.seed,
                                       device=ctx.device, mask=mask, callback=callback)
    except ValueError as e:
        raise InputFail(_one_line(e)) from None
    except (RuntimeError, MemoryError) as e:
        msg = _oom_message(e, ctx)
        if msg is None:
            raise
        _free_cuda()
        raise InputFail(msg) from None
    finally:
        rep.end_epochs()
    restored = np.asarray(restored, dtype=np.float32)
    sigma_out = _scale(getattr(result, "sigma", None), dr)
    fe = list(getattr(result, "free_energy", []) or [])
    record.update(sigma=sigma_out, free_energy=fe[-1] if fe else None)

    # ---- metrics --------------------------------------------------------------------------
    if reference is not None:
        from .metrics import psnr, ssim

        record["psnr"] = psnr(reference * dr, restored * dr, data_range=dr)
        try:
            record["ssim"] = ssim(reference * dr, restored * dr, data_range=dr)
        except ValueError as e:  # images smaller than the SSIM window
            rep.warn(f"{job.source}: SSIM not computed: {_one_line(e)}")
        if opts.command == "denoise" and mask is None:
            record["psnr_input"] = psnr(reference * dr, image * dr, data_range=dr)

    # ---- save -----------------------------------------------------------------------------
    try:
        if job.output == "-":
            data = encode_image(restored, info, "png")
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            if not opts.force and os.path.lexists(job.output):  # appeared while we worked
                raise InputFail(f"{job.output} exists (use -f/--force to overwrite)")
            Path(job.output).parent.mkdir(parents=True, exist_ok=True)
            write_image(job.output, restored, info)
        if job.fields_path is not None:
            fields = getattr(result, "fields", None)
            if fields is None:
                rep.warn(f"{job.source}: the model returned no generative fields; "
                         f"{job.fields_path} not written")
                record["fields"] = None
            else:
                tiled = tile_fields(np.asarray(fields, dtype=np.float32))
                Path(job.fields_path).parent.mkdir(parents=True, exist_ok=True)
                write_image(job.fields_path, tiled, ImageInfo(
                    shape=tiled.shape[:2], channels=1 if tiled.ndim == 2 else tiled.shape[2],
                    dtype="uint8", data_range=255.0))
        if job.log_path is not None:
            from .imageio import atomic_write_bytes

            log = {"input": job.source, "command": opts.command, "seed": opts.seed,
                   "preset": opts.preset, "config": ctx.config.to_dict(),
                   "device": str(ctx.device), "data_range": dr, "sigma_units": dr,
                   "sigma": sigma_out, "seconds": getattr(result, "seconds", None),
                   "epochs": [_log_entry(e, dr) for e in (getattr(result, "log", None) or [])]}
            Path(job.log_path).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(job.log_path, (json.dumps(_jsonable(log), indent=1) + "\n").encode())
    except ImageError as e:
        raise InputFail(_one_line(e)) from None
    except OSError as e:
        raise InputFail(f"cannot write {getattr(e, 'filename', None) or job.output}: "
                        f"{e.strerror or _one_line(e)}") from None
    record["seconds"] = time.perf_counter() - t0
    record["status"] = "ok"
    return record


def _log_entry(entry: dict, dr: float) -> dict:
    out = dict(entry)
    if out.get("sigma") is not None:
        out["sigma"] = float(out["sigma"]) * dr
    return out


def _free_cuda() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # pragma: no cover
        pass


def _shape_text(shape) -> str:
    text = f"{shape[1]}x{shape[0]}"
    return text + (f"x{shape[2]}" if len(shape) == 3 else "")


def tile_fields(fields: np.ndarray, pad: int = 1) -> np.ndarray:
    """Generative fields (n, p, p[, C]) as one [0, 1] image: a near-square grid, each field
    scaled to its own min..max, separated by ``pad`` gray pixels."""
    fields = np.asarray(fields, dtype=np.float64)
    if fields.ndim == 2:
        fields = fields[None]
    n, p, q = fields.shape[:3]
    channels = fields.shape[3] if fields.ndim == 4 else None
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    shape = (rows * (p + pad) + pad, cols * (q + pad) + pad) + ((channels,) if channels else ())
    grid = np.full(shape, 0.5)
    for k in range(n):
        f = fields[k]
        lo, hi = float(np.min(f)), float(np.max(f))
        f = (f - lo) / (hi - lo) if hi > lo else np.full_like(f, 0.5)
        r, c = divmod(k, cols)
        y, x = pad + r * (p + pad), pad + c * (q + pad)
        grid[y:y + p, x:x + q] = f
    return grid.astype(np.float32)


def _human_line(record: dict) -> str:
    parts = [f"{record['input']} -> {record['output']}"]
    if record.get("sigma") is not None:
        learned = record.get("sigma_given") is None
        parts.append(f"σ={record['sigma']:.2f}" + (" (learned)" if learned else ""))
    if record.get("psnr") is not None:
        text = f"PSNR {record['psnr']:.2f} dB"
        if record.get("psnr_input") is not None:
            text += f" (input {record['psnr_input']:.2f} dB)"
        parts.append(text)
    if record.get("ssim") is not None:
        parts.append(f"SSIM {record['ssim']:.4f}")
    if record.get("seconds") is not None:
        parts.append(f"{record['seconds']:.1f} s on {record['device']}")
    return "  ".join(parts)


def run(opts: Options) -> int:
    """The whole of ``denoise`` / ``inpaint``; returns the exit code."""
    if opts.quiet and opts.verbose:
        raise UsageFail("-q/--quiet and -v/--verbose cannot be combined")
    if opts.seed < 0:
        raise UsageFail(f"--seed must be >= 0 (got {opts.seed})")
    sigma = parse_sigma(opts.sigma)
    parse_data_range(opts.data_range)
    config = build_config(opts.preset, opts.epochs, opts.sets)
    jobs = plan(opts)
    device = resolve_device_or_fail(opts.device)

    rep = Reporter(quiet=opts.quiet, verbose=opts.verbose)
    ctx = RunContext(opts=opts, config=config, device=device, sigma=sigma, reporter=rep)
    rep.debug(f"{opts.command}: {len(jobs)} input(s), device {device}, preset {opts.preset}, "
              f"seed {opts.seed}, σ {'learned' if sigma is None else f'{sigma:g} (input units)'}")
    rep.debug("config: " + ", ".join(f"{k}={v}" for k, v in config.to_dict().items()))
    counts = {"ok": 0, "skipped": 0, "error": 0}
    with rep:
        rep.start_files(len(jobs))
        for job in jobs:
            try:
                record = process(job, ctx)
            except InputFail as e:
                message = str(e)
                if job.source != "-" and not message.startswith(job.source):
                    message = f"{job.source}: {message}"  # name the input the error is about
                record = _base_record(job, ctx)
                record.update(status="error", error=message, output=None)
                rep.error(message)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as e:  # a bug or an unexpected fault: one line, keep going
                record = _base_record(job, ctx)
                message = f"{job.source}: unexpected {type(e).__name__}: {_one_line(e)}"
                record.update(status="error", error=message, output=None)
                rep.error(message)
                if opts.verbose:
                    sys.stderr.write(traceback.format_exc())
            counts[record["status"]] += 1
            if record["status"] == "ok":
                rep.info(_human_line(record))
            elif record["status"] == "skipped":
                rep.info(f"{job.source}: skipped, {job.output} exists")
            if opts.json:
                _emit_json(record)
            rep.advance_files()
            if record["status"] == "error" and opts.fail_fast:
                break
    if len(jobs) > 1 or counts["error"]:
        rest = len(jobs) - sum(counts.values())
        summary = f"{counts['ok']} restored, {counts['skipped']} skipped, {counts['error']} failed"
        if rest:
            summary += f", {rest} not started (--fail-fast)"
        rep.info(summary)
    return 1 if counts["error"] else 0


def _guarded(fn, *args) -> None:
    """Run a command body: one-line usage errors (exit 2), Ctrl-C (exit 130)."""
    try:
        code = fn(*args)
    except UsageFail as e:
        sys.stderr.write(f"error: {e}\n")
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted; no partial output was written\n")
        raise typer.Exit(130) from None
    raise typer.Exit(code)


# ============================================================================================
# commands

Inputs = Annotated[list[str], typer.Argument(
    metavar="INPUT", show_default=False,
    help="Image files or folders ([bold]-[/bold] reads one image from stdin). Folders give "
         "their image files sorted by name; earlier outputs (*_denoised.*, *_inpainted.*) and "
         "*_mask.* files in them are left out.")]
OutputOpt = Annotated[Optional[str], typer.Option(
    "--output", "-o", rich_help_panel="Inputs and outputs", metavar="FILE",
    help="Output file for a single input: .png (8 or 16 bit like the input), .tif (the input's "
         "bit depth) or .npy (float, input scale). [bold]-[/bold] writes PNG to stdout. "
         "Parent folders are created.")]
OutputDirOpt = Annotated[Optional[str], typer.Option(
    "--output-dir", "-O", rich_help_panel="Inputs and outputs", metavar="DIR",
    help="Write outputs here (created when missing; subfolders mirrored with --recursive) "
         "instead of beside each input.")]
FormatOpt = Annotated[str, typer.Option(
    "--format", rich_help_panel="Inputs and outputs",
    metavar="png|tif|npy", help="Format of default output names.")]
ForceOpt = Annotated[bool, typer.Option(
    "--force", "-f", rich_help_panel="Inputs and outputs",
    help="Overwrite existing outputs (inputs are never overwritten).")]
SkipOpt = Annotated[bool, typer.Option(
    "--skip-existing", rich_help_panel="Inputs and outputs",
    help="Skip inputs whose output exists (resume a batch).")]
RecursiveOpt = Annotated[bool, typer.Option(
    "--recursive", "-r", rich_help_panel="Inputs and outputs",
    help="Also take images from subfolders of folder inputs.")]
SigmaOpt = Annotated[Optional[str], typer.Option(
    "--sigma", "-s", rich_help_panel="Noise and masks", metavar="S|auto",
    help="Noise standard deviation in the input's units: 0-255 for 8-bit images, 0-65535 for "
         "16-bit, --data-range for float. Must be > 0. Leave out (or [bold]auto[/bold]) to "
         "learn it; the estimate is reported.")]
DataRangeOpt = Annotated[Optional[float], typer.Option(
    "--data-range", rich_help_panel="Noise and masks", metavar="R",
    help="Value of white in float inputs (.npy, float TIFF), and so the unit of --sigma for "
         "them. \\[default: 255]; integer images use their bit depth.")]
MaskDirOpt = Annotated[Optional[str], typer.Option(
    "--mask-dir", rich_help_panel="Noise and masks", metavar="DIR",
    help="Masks paired with the inputs by file stem (STEM.* or STEM_mask.*).")]
InvertOpt = Annotated[bool, typer.Option(
    "--invert-mask", rich_help_panel="Noise and masks",
    help="Mask polarity reversed: black/zero = missing.")]
ReferenceOpt = Annotated[Optional[str], typer.Option(
    "--reference", rich_help_panel="Reporting", metavar="CLEAN",
    help="Clean image: report PSNR (dB, peak = the data range, e.g. 255) and SSIM.")]
ReferenceDirOpt = Annotated[Optional[str], typer.Option(
    "--reference-dir", rich_help_panel="Reporting", metavar="DIR",
    help="Clean images paired with the inputs by file stem, for PSNR/SSIM in batches.")]
PresetOpt = Annotated[str, typer.Option(
    "--preset", "-p", rich_help_panel="Model", metavar="NAME",
    help="Hyperparameter preset. " + "; ".join(
        f"[bold]{name}[/bold]: {PRESET_NOTES[name]}" for name in PRESET_NOTES)
    + ". Times grow with the number of pixels.")]
EpochsOpt = Annotated[Optional[int], typer.Option(
    "--epochs", "-e", rich_help_panel="Model",
    metavar="N", help="Override the preset's number of epochs.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", rich_help_panel="Model", metavar="KEY=VALUE",
    help="Override any config field (repeatable), e.g. --set n_states=32 --set hidden=128,128 "
         "--set chunk_size=1024.")]
SeedOpt = Annotated[int, typer.Option("--seed", rich_help_panel="Model",
    help="Random seed (results are reproducible).")]
DeviceOpt = Annotated[str, typer.Option(
    "--device", "-d", rich_help_panel="Model", metavar="auto|cpu|cuda|cuda:N",
    help="Compute device; auto = CUDA when available, else CPU.")]
JsonOpt = Annotated[bool, typer.Option(
    "--json", rich_help_panel="Reporting",
    help="Print one JSON object per input on stdout (JSON Lines), failures "
                   "included; human output stays on stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel="Reporting",
    help="Only print errors.")]
VerboseOpt = Annotated[bool, typer.Option(
    "--verbose", "-v", rich_help_panel="Reporting",
    help="Print details: image info, device, full config.")]
FailFastOpt = Annotated[bool, typer.Option(
    "--fail-fast", rich_help_panel="Reporting",
    help="Stop at the first failed input (default: go on, exit 1 at the end).")]
FieldsOpt = Annotated[Optional[str], typer.Option(
    "--save-fields", rich_help_panel="Reporting", metavar="FILE.png",
    help="Write the learned generative fields (decoder output per single active latent) as a "
         "tiled image. With several inputs use {stem} in the name.")]
LogOpt = Annotated[Optional[str], typer.Option(
    "--save-log", rich_help_panel="Reporting", metavar="FILE.json",
    help="Write the per-epoch free energy, σ (input units), mean active latents and learning "
         "rate. With several inputs use {stem} in the name.")]


@app.command(epilog=_EXAMPLES)
def denoise(
    inputs: Inputs,
    output: OutputOpt = None,
    output_dir: OutputDirOpt = None,
    suffix: Annotated[Optional[str], typer.Option(
        "--suffix", rich_help_panel="Inputs and outputs",
        help="Appended to the input's stem for default output names. "
                         "\\[default: _denoised]")] = None,
    fmt: FormatOpt = "png",
    force: ForceOpt = False,
    skip_existing: SkipOpt = False,
    recursive: RecursiveOpt = False,
    sigma: SigmaOpt = None,
    data_range: DataRangeOpt = None,
    mask: Annotated[Optional[str], typer.Option(
        "--mask", "-m", rich_help_panel="Noise and masks", metavar="FILE",
        help="Also fill missing values (noisy + missing input): mask image of the same size, "
             "[bold]white/non-zero = missing[/bold], black/zero = observed.")] = None,
    mask_dir: MaskDirOpt = None,
    invert_mask: InvertOpt = False,
    reference: ReferenceOpt = None,
    reference_dir: ReferenceDirOpt = None,
    preset: PresetOpt = "fast",
    epochs: EpochsOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    fail_fast: FailFastOpt = False,
    save_fields: FieldsOpt = None,
    save_log: LogOpt = None,
) -> None:
    """Remove Gaussian noise from images (zero-shot: the model learns from each image itself).

    Writes [bold]{stem}_denoised.png[/bold] beside each input unless -o/--output-dir say otherwise; never overwrites without --force and never overwrites an input. Bit depth (8/16) and alpha are kept.

    Units: --sigma is in the input's units, 0-255 for 8-bit images. Float inputs (.npy, float TIFF) are on a 0-255 scale unless --data-range says otherwise.
    """
    opts = Options("denoise", inputs, output, output_dir, suffix, fmt, force, skip_existing,
                   recursive, sigma, data_range, mask, mask_dir, invert_mask, reference,
                   reference_dir, preset, epochs, sets, seed, device, json_out, quiet, verbose,
                   fail_fast, save_fields, save_log)
    _guarded(run, opts)


@app.command(epilog=_EXAMPLES)
def inpaint(
    inputs: Inputs,
    mask: Annotated[Optional[str], typer.Option(
        "--mask", "-m", rich_help_panel="Noise and masks", metavar="FILE",
        help="Mask image of the same size as the input(s): [bold]white/non-zero = missing[/bold]"
             ", black/zero = observed (--invert-mask swaps). A colour mask for a colour image "
             "marks each channel's values.")] = None,
    mask_dir: MaskDirOpt = None,
    invert_mask: InvertOpt = False,
    output: OutputOpt = None,
    output_dir: OutputDirOpt = None,
    suffix: Annotated[Optional[str], typer.Option(
        "--suffix", rich_help_panel="Inputs and outputs",
        help="Appended to the input's stem for default output names. "
                         "\\[default: _inpainted]")] = None,
    fmt: FormatOpt = "png",
    force: ForceOpt = False,
    skip_existing: SkipOpt = False,
    recursive: RecursiveOpt = False,
    sigma: Annotated[Optional[str], typer.Option(
        "--sigma", "-s", rich_help_panel="Noise and masks", metavar="S|auto",
        help="The observed values are also noisy with this σ (input units: 0-255 for 8-bit); "
             "then every value is restored, not only the missing ones. Leave out for clean "
             "observed values (σ is learned).")] = None,
    data_range: DataRangeOpt = None,
    reference: ReferenceOpt = None,
    reference_dir: ReferenceDirOpt = None,
    preset: PresetOpt = "inpaint",
    epochs: EpochsOpt = None,
    sets: SetOpt = None,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
    fail_fast: FailFastOpt = False,
    save_fields: FieldsOpt = None,
    save_log: LogOpt = None,
) -> None:
    """Fill in missing pixels/values marked by a mask (zero-shot).

    Mask polarity: [bold]white/non-zero = missing[/bold], black/zero = observed (--invert-mask swaps); the mask must have the image's size.

    Writes [bold]{stem}_inpainted.png[/bold] beside each input unless -o/--output-dir say otherwise. Observed values are kept as they are (unless --sigma says they are noisy too).
    """
    opts = Options("inpaint", inputs, output, output_dir, suffix, fmt, force, skip_existing,
                   recursive, sigma, data_range, mask, mask_dir, invert_mask, reference,
                   reference_dir, preset, epochs, sets, seed, device, json_out, quiet, verbose,
                   fail_fast, save_fields, save_log)
    _guarded(run, opts)


@app.command(epilog="""\
[bold]Examples[/bold]

  [dim]# noise exactly as the benchmarks add it (float, unclipped): keep it in .npy[/dim]
  evodenoise corrupt clean.png --sigma 25 --seed 0 -o noisy.npy

  [dim]# drop 50 % of the values; writes holes.png and holes_mask.png[/dim]
  evodenoise corrupt clean.png --missing 0.5 -o holes.png
""")
def corrupt(
    clean: Annotated[str, typer.Argument(metavar="CLEAN", help="Clean image to corrupt.")],
    output: Annotated[str, typer.Option(
        "--output", "-o", rich_help_panel="Inputs and outputs", metavar="OUT",
        help="Corrupted image: .npy or .tif keep the noise as float, unclipped (the benchmark "
             "protocol); .png clips and rounds it. [bold]-[/bold] = PNG to stdout.")],
    sigma: Annotated[Optional[float], typer.Option(
        "--sigma", "-s", rich_help_panel="Noise and masks", metavar="S",
        help="Add Gaussian noise of this standard deviation (input units: 0-255 for 8-bit).")
    ] = None,
    missing: Annotated[Optional[float], typer.Option(
        "--missing", rich_help_panel="Noise and masks", metavar="P",
        help="Drop each value independently with probability P (0 < P < 1); dropped values "
             "become 0 and the mask (white = missing) is written too.")] = None,
    mask_out: Annotated[Optional[str], typer.Option(
        "--mask-out", rich_help_panel="Inputs and outputs",
        metavar="FILE", help="Where to write the mask. \\[default: OUT_mask.png]")
    ] = None,
    per_pixel: Annotated[bool, typer.Option(
        "--per-pixel", rich_help_panel="Noise and masks",
        help="Drop whole pixels (all channels together) instead of single values.")
    ] = False,
    seed: SeedOpt = 0,
    data_range: DataRangeOpt = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Make test inputs: add noise and/or drop values with the benchmark protocol."""
    _guarded(_corrupt, clean, output, sigma, missing, mask_out, per_pixel, seed, data_range,
             force, json_out, quiet)


def _corrupt(clean, output, sigma, missing, mask_out, per_pixel, seed, data_range, force,
             json_out, quiet) -> int:
    from dataclasses import replace as dc_replace

    from .corrupt import add_noise, random_mask

    rep = Reporter(quiet=quiet)
    if sigma is None and missing is None:
        raise UsageFail("give --sigma S and/or --missing P")
    if sigma is not None and (not math.isfinite(sigma) or sigma <= 0):
        raise UsageFail(f"--sigma must be a positive number (got {sigma:g})")
    if missing is not None and not (0 < missing < 1):
        raise UsageFail(f"--missing must be between 0 and 1, exclusive (got {missing:g})")
    if seed < 0:
        raise UsageFail(f"--seed must be >= 0 (got {seed})")
    parse_data_range(data_range)
    if output == "-" and json_out:
        raise UsageFail("-o - and --json both use stdout; write the image to a file instead")
    if output == "-" and sys.stdout.isatty():
        raise UsageFail("refusing to write image data to a terminal; redirect stdout or give -o FILE")
    if output != "-":
        try:
            out_fmt = output_format(output)
        except ImageError as e:
            raise UsageFail(f"-o: {_one_line(e).split(': ', 1)[-1]}") from None
    else:
        out_fmt = "png"
    if missing is not None and mask_out is None:
        if output == "-":
            raise UsageFail("with -o - and --missing, give --mask-out FILE for the mask")
        mask_out = str(Path(output).with_name(Path(output).stem + "_mask.png"))
    if mask_out is not None:
        try:
            output_format(mask_out)
        except ImageError as e:
            raise UsageFail(f"--mask-out: {_one_line(e).split(': ', 1)[-1]}") from None
    protected = {_file_key(clean), os.path.realpath(clean)}
    targets = [p for p in (output, mask_out) if p not in (None, "-")]
    for p in targets:
        if _same_file(p, protected):
            raise UsageFail(f"{p} would overwrite the input; choose another name")
    if len(targets) == 2 and os.path.realpath(targets[0]) == os.path.realpath(targets[1]):
        raise UsageFail("the image and the mask would be written to the same file")
    for p in targets:
        _probe_dir(Path(p).parent, "output directory")
    record = {"input": clean, "output": output, "mask": mask_out, "status": "ok", "error": None,
              "sigma": sigma, "missing": missing, "seed": seed, "missing_fraction": None,
              "psnr": None, "data_range": None}
    try:
        existing = [p for p in targets if os.path.lexists(p)]
        if existing and not force:
            raise InputFail(f"{existing[0]} exists (use -f/--force to overwrite)")
        try:
            image, info = read_image(clean, data_range=data_range)
        except ImageError as e:
            raise InputFail(_one_line(e)) from None
        dr = info.data_range
        record["data_range"] = dr
        units = image.astype(np.float64) * dr  # the clean image on its own scale
        corrupted = units
        if sigma is not None:
            corrupted = add_noise(units, sigma, seed=seed).astype(np.float64)
        mask = None
        if missing is not None:
            shape = image.shape[:2] if per_pixel else image.shape
            mask = random_mask(shape, missing, seed=seed)
            corrupted = corrupted.copy()
            corrupted[mask] = 0.0
            record["missing_fraction"] = float(mask.mean())
        out01 = (corrupted / dr).astype(np.float32)
        if out_fmt in ("npy", "tiff"):
            out_info = dc_replace(info, dtype="float32")
            data = encode_image(out01, out_info, out_fmt, clip=False)
        else:
            if sigma is not None:
                rep.warn("PNG output clips and rounds the noise; use .npy or .tif to keep it "
                         "exactly as the benchmark protocol adds it")
            data = encode_image(out01, info, "png")
        try:
            from .metrics import psnr

            if sigma is not None and mask is None:
                record["psnr"] = psnr(units, corrupted, data_range=dr)
        except Exception:  # pragma: no cover - metrics are a nicety here
            pass
        from .imageio import atomic_write_bytes

        if output == "-":
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            atomic_write_bytes(output, data)
        if mask is not None:
            mask_info = ImageInfo(shape=info.shape, channels=1 if mask.ndim == 2 else mask.shape[2],
                                  dtype="uint8", data_range=255.0)
            write_image(mask_out, mask.astype(np.float32), mask_info)
    except InputFail as e:
        record.update(status="error", error=str(e))
        rep.error(str(e))
    except OSError as e:
        record.update(status="error", error=f"cannot write: {e.strerror or _one_line(e)}")
        rep.error(record["error"])
    if record["status"] == "ok":
        parts = [f"{clean} -> {output}"]
        if sigma is not None:
            parts.append(f"σ={sigma:g}")
        if record["psnr"] is not None:
            parts.append(f"PSNR {record['psnr']:.2f} dB")
        if mask is not None:
            parts.append(f"{100 * record['missing_fraction']:.1f} % missing, mask -> {mask_out}")
        rep.info("  ".join(parts))
    if json_out:
        _emit_json(record)
    return 0 if record["status"] == "ok" else 1


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"evodenoise {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_version_callback, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """Zero-shot image denoising and inpainting with an evolutionary binary-latent VAE.

    No training data, no pre-trained weights: a sparse binary code of each image's patches is learned from the image itself. Reads 8/16-bit PNG and TIFF, JPEG, float .npy/TIFF; --sigma is in the image's units (0-255 for 8-bit). Run [bold]evodenoise COMMAND --help[/bold] for the options.
    """


def main(argv: Optional[list[str]] = None) -> None:
    """Console entry point (``evodenoise``); SIGTERM is handled like Ctrl-C (no partial files)."""
    def _terminate(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, _terminate)
    except (ValueError, OSError):  # not in the main thread
        pass
    # click's UsageError (vendored inside newer Typer): the public BadParameter's base class.
    usage_error = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
    try:
        rc = app(args=argv, prog_name="evodenoise", standalone_mode=False)
    except usage_error as e:  # Typer's own parse errors: one line, exit 2
        where = e.ctx.command_path if e.ctx is not None else "evodenoise"
        first = (e.format_message().strip().splitlines() or ["usage error"])[0]
        print(f"{where}: error: {first} (see '{where} --help')", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
