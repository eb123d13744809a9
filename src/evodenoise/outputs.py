"""Checks on output names and folders, made before any work (``denoise``, ``inpaint`` and
``corrupt``): one line and exit code 2 (:class:`~evodenoise.options.UsageError`) on the first."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from .decode import ImageError, quote
from .encode import output_format
from .options import UsageError


def check_stdout_target(output: str | None, json_out: bool) -> None:
    """``-o -``: not together with --json, never to a terminal."""
    if output != "-":
        return
    if json_out:
        raise UsageError("-o - and --json both use stdout; write the image to a file instead")
    if sys.stdout is not None and sys.stdout.isatty():
        raise UsageError(
            "refusing to write image data to a terminal; redirect stdout or give -o FILE"
        )


def check_writable_name(path: str | None, flag: str) -> str | None:
    """The format of an output file name (png, tiff, npy); None for ``-``."""
    if path is None or path == "-":
        return None
    try:
        return output_format(path)
    except ImageError as e:
        raise UsageError(f"{flag}: {str(e).split(': ', 1)[-1]}") from None


def _file_keys(path: str) -> set:
    """Identity of an existing file: (device, inode) and its resolved path."""
    keys = {os.path.realpath(path)}
    try:
        st = os.stat(path)
        keys.add((st.st_dev, st.st_ino))
    except OSError:
        pass
    return keys


def check_not_inputs(targets, inputs) -> None:
    """No output may be (a link to) an input, not even with --force."""
    protected: set = set()
    for p in inputs:
        if p is not None and p != "-" and os.path.exists(p):
            protected |= _file_keys(p)
    for kind, p in targets:
        if p is not None and p != "-" and _file_keys(p) & protected:
            raise UsageError(
                f"{kind} {quote(p)} would overwrite an input; choose another name "
                f"(never allowed, even with --force)"
            )


def probe_dir(directory: Path, what: str) -> None:
    """Create ``directory`` when missing and check that a file can be made in it."""
    name = quote(str(directory))
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{what} {name} exists and is not a directory") from None
    except OSError as e:
        raise UsageError(f"cannot create {what} {name}: {e.strerror or type(e).__name__}") from None
    if not directory.is_dir():
        raise UsageError(f"{what} {name} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise UsageError(f"cannot write to {what} {name}: {why}") from None
