"""Planning a batch: which inputs, which outputs, which masks and references, before any work.

:func:`plan` expands folders, takes this process's ``--shard``, names every output and side
file, pairs masks and references by stem, and refuses (exit code 2) collisions: two inputs
writing one file, an output that is an input, unwritable folders. Problems of one input (a
missing file, no mask for it, an existing output) become that job's ``error``. The checks on
output names and folders are ``outputs.py``'s, shared with ``corrupt``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .decode import Decoded, ImageError, decode, quote
from .encode import output_format
from .imageio import INPUT_SUFFIXES, read_image
from .options import Options, UsageError
from .outputs import check_not_inputs, check_stdout_target, check_writable_name, probe_dir

__all__ = ["Job", "plan", "expand_inputs"]


@dataclass
class Job:
    source: str  # a path, or "-" for stdin
    stem: str
    output: str | None = None  # a path, or "-" for stdout
    mask: str | None = None
    reference: str | None = None
    fields_path: str | None = None
    log_path: str | None = None
    compare_path: str | None = None
    error: str | None = None  # known before any work (missing file, no mask ...)
    skip: bool = False
    warnings: list[str] = field(default_factory=list)
    decoded: dict[str, Decoded] = field(default_factory=dict)  # side files decoded by plan


# ---- finding inputs ---------------------------------------------------------------------------


def _is_image_file(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in INPUT_SUFFIXES and not p.name.startswith(".")


def expand_inputs(
    inputs: list[str], *, recursive: bool, suffix: str, exclude_dirs: tuple[Path, ...] = ()
) -> list[tuple[str, Path | None]]:
    """Files and directories to a list of (file, the directory it was found in or None).

    Directories give their image files sorted by name (``recursive``: their subfolders too),
    leaving out hidden files, earlier outputs (stem ending in ``suffix``), masks written by
    ``corrupt`` (stem ending in ``_mask``) and anything under ``exclude_dirs``. Files named
    explicitly are always kept; a name that does not exist is kept too (it fails later, as
    one input of the batch).
    """
    out: list[tuple[str, Path | None]] = []
    excluded = [d.resolve() for d in exclude_dirs]
    for item in inputs:
        p = Path(item)
        if item == "-" or not p.is_dir():
            out.append((item, None))
            continue
        for q in sorted(p.rglob("*") if recursive else p.iterdir(), key=str):
            hidden = any(part.startswith(".") for part in q.relative_to(p).parts)
            if hidden or not _is_image_file(q):
                continue
            if (suffix and q.stem.endswith(suffix)) or q.stem.endswith("_mask"):
                continue
            if not any(q.resolve().is_relative_to(d) for d in excluded):
                out.append((str(q), p))
    return out


def _index_by_stem(directory: Path) -> dict[str, list[Path]]:
    index: dict[str, list[Path]] = {}
    for q in sorted(directory.iterdir()):
        if _is_image_file(q):
            index.setdefault(q.stem, []).append(q)
    return index


def _pair(
    index: dict[str, list[Path]], stems, source: str | None = None
) -> tuple[Path | None, str]:
    """The one file of ``index`` named by the first of ``stems`` that names any (never the
    input ``source`` itself); (None, why) when none does or several do."""
    for s in stems:
        cands = [c for c in index.get(s, []) if source is None or not _same_file(c, source)]
        if len(cands) == 1:
            return cands[0], ""
        if len(cands) > 1:
            return None, f"several candidates: {', '.join(quote(c.name) for c in cands)}"
    return None, "not found"


def _same_file(a: Path, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _template(path: str | None, stem: str, many: bool, flag: str) -> str | None:
    if path is None:
        return None
    if many and "{stem}" not in path:
        raise UsageError(
            f"{flag} with several inputs needs '{{stem}}' in the file name, "
            f"e.g. {flag} fields_{{stem}}.png"
        )
    return path.replace("{stem}", stem)


# ---- the plan -----------------------------------------------------------------------------------


def _check_flags(opts: Options, suffix: str, fmt: str) -> None:
    if os.sep in suffix or (os.altsep and os.altsep in suffix):
        raise UsageError(f"--suffix must not contain a path separator (got {suffix!r})")
    if fmt not in ("png", "tif", "tiff", "npy"):
        raise UsageError(f"--format must be png, tif or npy (got {opts.fmt!r})")
    for a, b, text in (
        (opts.output, opts.output_dir, "-o/--output and --output-dir"),
        (opts.mask, opts.mask_dir, "--mask and --mask-dir"),
        (opts.reference, opts.reference_dir, "--reference and --reference-dir"),
        (opts.force or None, opts.skip_existing or None, "-f/--force and --skip-existing"),
    ):
        if a is not None and b is not None:
            raise UsageError(f"{text} cannot be combined")
    if opts.command == "inpaint" and opts.mask is None and opts.mask_dir is None:
        raise UsageError(
            "inpaint needs a mask: --mask FILE or --mask-dir DIR (white/non-zero = missing)"
        )
    check_stdout_target(opts.output, opts.json)


def _decode_side_files(opts: Options) -> dict[str, Decoded]:
    """--mask and --reference: checked (usage error) and decoded once for every input."""
    decoded = {}
    for flag, value in (("--mask", opts.mask), ("--reference", opts.reference)):
        if value is None:
            continue
        if not os.path.exists(value):
            raise UsageError(f"{flag} {quote(value)}: no such file")
        if os.path.isdir(value):
            raise UsageError(f"{flag} {quote(value)}: is a directory")
        try:
            decoded[value] = decode(value, "mask" if flag == "--mask" else "image")
            if flag == "--reference":
                read_image(decoded[value], data_range=opts.data_range)
        except ImageError as e:
            raise UsageError(f"{flag}: {e}") from None
    for flag, value in (("--mask-dir", opts.mask_dir), ("--reference-dir", opts.reference_dir)):
        if value is not None and not os.path.isdir(value):
            raise UsageError(f"{flag} {quote(value)}: no such directory")
    return decoded


def _find(opts: Options, suffix: str) -> tuple[list, bool]:
    if not opts.inputs:
        raise UsageError("no input given")
    if "-" in opts.inputs and len(opts.inputs) > 1:
        raise UsageError("'-' (stdin) must be the only input")
    out_dir = Path(opts.output_dir) if opts.output_dir is not None else None
    exclude = (out_dir,) if out_dir is not None and out_dir.exists() else ()
    found = expand_inputs(
        opts.inputs, recursive=opts.recursive, suffix=suffix, exclude_dirs=exclude
    )
    if not found:
        raise UsageError(
            f"no image files found in {', '.join(map(quote, opts.inputs))} "
            f"(looked for {', '.join(INPUT_SUFFIXES)})"
        )
    if opts.output is not None and len(found) > 1:
        raise UsageError(
            f"-o/--output takes a single input ({len(found)} given); use --output-dir for several"
        )
    if found[0][0] == "-" and opts.output is None:
        raise UsageError("reading from stdin needs -o FILE (or -o - for stdout)")
    check_writable_name(opts.output, "-o")
    if opts.output not in (None, "-") and os.path.isdir(opts.output):
        raise UsageError(f"-o {quote(opts.output)}: is a directory (use --output-dir)")
    if opts.reference is not None and len(found) > 1:
        raise UsageError("--reference takes a single input; use --reference-dir for several")
    for flag, value, formats in (
        ("--save-fields", opts.save_fields, "a .png (or .tif / .npy)"),
        ("--compare", opts.compare, "a .png (or .tif)"),
    ):
        try:
            fmt = None if value is None else output_format(value)
        except ImageError:
            fmt = "?"
        if fmt == "?" or (fmt == "npy" and flag == "--compare"):
            raise UsageError(f"{flag} {quote(value)}: use {formats} file name")
    if opts.compare == "-":
        raise UsageError("--compare needs a file name (not '-')")
    return found, len(found) > 1


def _job(source, root, opts: Options, decoded, suffix, output_dir, ext) -> Job:
    """The job of one input: its output path (beside it, or under ``output_dir`` mirroring
    its folder below ``root``), and an error if the input is missing or a directory."""
    stem = "stdin" if source == "-" else Path(source).stem
    job = Job(source=source, stem=stem, decoded=decoded)
    if source != "-" and not os.path.exists(source):
        job.error = f"{quote(source)}: no such file"
    elif source != "-" and os.path.isdir(source):
        job.error = f"{quote(source)}: is a directory"
    if opts.output is not None:
        job.output = opts.output
    else:
        src = Path(source)
        below = src.parent.relative_to(root) if root is not None else Path()
        base = src.parent if output_dir is None else output_dir / below
        job.output = str(base / f"{stem}{suffix}{ext}")
    return job


def _pair_side_files(job: Job, opts: Options, mask_index, ref_index) -> None:
    """The job's mask and reference: the ones given, or its pair in --mask-dir and
    --reference-dir (a missing mask is an error, a missing reference a warning)."""
    stem = job.stem
    job.mask, job.reference = opts.mask, opts.reference
    if mask_index is not None:
        m, why = _pair(mask_index, (f"{stem}_mask", stem), job.source)
        if m is None and job.error is None:
            job.error = (
                f"no mask for {quote(stem)} in {quote(opts.mask_dir)} ({why}; "
                f"looked for {quote(stem)}_mask.* and {quote(stem)}.*)"
            )
        job.mask = None if m is None else str(m)
    if ref_index is not None:
        r, why = _pair(ref_index, (stem,), job.source)
        if r is None:
            job.warnings.append(
                f"no reference for {quote(stem)} in "
                f"{quote(opts.reference_dir)} ({why}); PSNR not reported"
            )
        job.reference = None if r is None else str(r)


def plan(opts: Options, shard: tuple[int, int] | None = None) -> list[Job]:
    """Every input of this process with its output and side files, checked before any work."""
    suffix = (
        opts.suffix
        if opts.suffix is not None
        else ("_inpainted" if opts.command == "inpaint" else "_denoised")
    )
    fmt = opts.fmt.lower().lstrip(".")
    _check_flags(opts, suffix, fmt)
    decoded = _decode_side_files(opts)
    found, many = _find(opts, suffix)
    mask_index = _index_by_stem(Path(opts.mask_dir)) if opts.mask_dir else None
    ref_index = _index_by_stem(Path(opts.reference_dir)) if opts.reference_dir else None
    output_dir = Path(opts.output_dir) if opts.output_dir is not None else None
    ext = {"tif": ".tif", "tiff": ".tif"}.get(fmt, "." + fmt)

    jobs = []
    for source, root in found:
        job = _job(source, root, opts, decoded, suffix, output_dir, ext)
        _pair_side_files(job, opts, mask_index, ref_index)
        job.fields_path = _template(opts.save_fields, job.stem, many, "--save-fields")
        job.log_path = _template(opts.save_log, job.stem, many, "--save-log")
        job.compare_path = _template(opts.compare, job.stem, many, "--compare")
        jobs.append(job)
    _check_collisions(jobs)  # over the whole batch: every shard refuses the same way
    if shard is not None:  # every N-th of the sorted list, from K: shards never overlap
        k, n = shard
        jobs = sorted(jobs, key=lambda job: job.source)[k::n]
    _check_existing(jobs, opts)
    _check_directories(jobs, opts, output_dir)
    return jobs


def _check_collisions(jobs: list[Job]) -> None:
    check_not_inputs(
        [
            (kind, p)
            for job in jobs
            for kind, p in (
                ("output", job.output),
                ("--save-fields", job.fields_path),
                ("--save-log", job.log_path),
                ("--compare", job.compare_path),
            )
        ],
        [p for job in jobs for p in (job.source, job.mask, job.reference)],
    )
    seen: dict[str, tuple[Job, str]] = {}
    for job in jobs:
        for kind, p in (
            ("the output", job.output),
            ("--save-fields", job.fields_path),
            ("--save-log", job.log_path),
            ("--compare", job.compare_path),
        ):
            if p is None or p == "-":
                continue
            key = os.path.realpath(p)
            if key in seen and seen[key][0] is job:  # one input, two of its files
                raise UsageError(
                    f"{kind} and {seen[key][1]} are the same file {quote(p)}; "
                    f"give them different names"
                )
            if key in seen:
                raise UsageError(
                    f"{quote(seen[key][0].source)} and {quote(job.source)} would both write "
                    f"{quote(p)}; use --output-dir / --suffix / {{stem}} to tell "
                    f"them apart"
                )
            seen[key] = (job, kind)


def _check_existing(jobs: list[Job], opts: Options) -> None:
    for job in jobs:
        if job.error is not None or job.output == "-":
            continue
        existing = [
            p
            for p in (job.output, job.fields_path, job.log_path, job.compare_path)
            if p is not None and os.path.lexists(p)
        ]
        special = [p for p in existing if os.path.exists(p) and not os.path.isfile(p)]
        if os.path.isdir(job.output):
            job.error = f"{quote(job.output)}: output path is a directory"
        elif special:  # a device, a FIFO, a socket (or a link to one): never replaced
            job.error = f"{quote(special[0])} exists and is not a regular file; never replaced"
        elif opts.skip_existing and os.path.islink(job.output) and not os.path.exists(job.output):
            job.error = (
                f"{quote(job.output)} is a broken symbolic link, not an output to skip "
                f"(remove it, or use -f/--force to replace it)"
            )
        elif opts.skip_existing and os.path.lexists(job.output):
            job.skip = True
        elif existing and not opts.force:
            job.error = (
                f"{quote(existing[0])} exists (use -f/--force to overwrite, or --skip-existing)"
            )


def _check_directories(jobs: list[Job], opts: Options, output_dir: Path | None) -> None:
    if output_dir is not None:
        probe_dir(output_dir, "output directory")
    elif opts.output not in (None, "-"):
        probe_dir(Path(opts.output).parent, "output directory")
    if len(jobs) == 1:
        for flag, value in (
            ("--save-fields", jobs[0].fields_path),
            ("--save-log", jobs[0].log_path),
            ("--compare", jobs[0].compare_path),
        ):
            if value is not None:
                probe_dir(Path(value).parent, f"{flag} directory")
    if output_dir is None and opts.output is None:
        checked: dict[str, str | None] = {}
        for job in jobs:
            if job.error is not None or job.skip:
                continue
            d = str(Path(job.output).parent)
            if d not in checked:
                try:
                    probe_dir(Path(d), "directory")
                    checked[d] = None
                except UsageError as e:
                    checked[d] = str(e)
            job.error = checked[d]
