"""The options of ``denoise`` / ``inpaint`` and their checks, done once before any work.

:class:`Options` holds what was typed (built by keyword); :func:`check_options` checks and
converts every value that does not need an input file (σ, data range, seed, memory size,
shard, the configuration) and raises :class:`UsageError` (exit code 2) with one line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .config import Config
from .presets import preset_name, resolve_config

__all__ = [
    "InputError",
    "Options",
    "Settings",
    "UsageError",
    "check_options",
    "parse_seed",
    "parse_positive",
    "parse_size",
    "parse_shard",
]

#: Largest seed: the run's torch generator takes a signed 64-bit seed.
MAX_SEED = 2**63 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_FLOAT32_TINY = float(np.finfo(np.float32).tiny)


class UsageError(Exception):
    """A usage error: reported as one line, exit code 2, before any work."""


class InputError(Exception):
    """One input failed: reported as one line (and a JSON record); the batch goes on."""


@dataclass(frozen=True)
class Options:
    """Everything given to ``denoise`` or ``inpaint``, as typed."""

    command: str
    inputs: list[str]
    output: str | None = None
    output_dir: str | None = None
    suffix: str | None = None
    fmt: str = "png"
    force: bool = False
    skip_existing: bool = False
    recursive: bool = False
    shard: str | None = None
    sigma: str | None = None
    gain: str | None = None
    noise: str | None = None
    data_range: float | None = None
    mask: str | None = None
    mask_dir: str | None = None
    invert_mask: bool = False
    reference: str | None = None
    reference_dir: str | None = None
    preset: str | None = None
    epochs: int | None = None
    sets: list[str] | None = None
    seed: int = 0
    device: str = "auto"
    max_memory: str | None = None
    json: bool = False
    quiet: bool = False
    verbose: bool = False
    fail_fast: bool = False
    save_fields: str | None = None
    save_log: str | None = None
    compare: str | None = None


@dataclass(frozen=True)
class Settings:
    """The checked values of :class:`Options` (σ in input units, None = learn it)."""

    sigma: float | None
    gain: float | None  # photon-counting noise's gain, input units (None: not given)
    data_range: float | None
    seed: int
    max_memory: int | None  # bytes
    shard: tuple[int, int] | None  # (K, N)
    preset: str  # the preset named, or the command's default
    config: (
        Config  # the preset with --set and --epochs applied (plan.py settles the rest per image)
    )


def check_options(opts: Options) -> Settings:
    """Every check of the options that needs no input file; :class:`UsageError` on the first."""
    if opts.quiet and opts.verbose:
        raise UsageError("-q/--quiet and -v/--verbose cannot be combined")
    if opts.invert_mask and opts.mask is None and opts.mask_dir is None:
        raise UsageError("--invert-mask needs a mask (--mask or --mask-dir)")
    sigma = parse_sigma(opts.sigma)
    gain = None if opts.gain is None else parse_number("--gain", opts.gain)
    data_range = (
        None if opts.data_range is None else parse_positive("--data-range", opts.data_range)
    )
    try:
        config = resolve_config(
            opts.preset,
            command=opts.command,
            epochs=opts.epochs,
            overrides=[*(opts.sets or ()), *([f"noise_model={opts.noise}"] if opts.noise else [])],
        )
    except ValueError as e:
        raise UsageError(f"invalid configuration: {e}") from None
    if gain is not None and opts.noise == "gaussian":  # (a preset's gaussian: the gain wins)
        raise UsageError(
            "--gain describes photon-counting noise: it cannot go with --noise gaussian"
        )
    return Settings(
        sigma=sigma,
        gain=gain,
        data_range=data_range,
        seed=parse_seed(opts.seed),
        max_memory=None if opts.max_memory is None else parse_size(opts.max_memory),
        shard=None if opts.shard is None else parse_shard(opts.shard),
        preset=preset_name(opts.preset, command=opts.command),
        config=config,
    )


def parse_sigma(text: str | None) -> float | None:
    """``--sigma``: a positive number or ``auto`` (None)."""
    if text is None or text.strip().lower() == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"--sigma must be a positive number or 'auto' (got {text!r})") from None
    if not math.isfinite(value) or value <= 0:
        raise UsageError(
            f"--sigma must be a positive number or 'auto' (got {text!r}); "
            f"for noise-free inpainting leave it out"
        )
    return parse_positive("--sigma", value)


def parse_number(flag: str, text: str) -> float:
    """A positive number given as text (``--gain``)."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{flag} must be a positive number (got {text!r})") from None
    return parse_positive(flag, value)


def parse_positive(flag: str, value: float) -> float:
    """A positive number that float32 represents (neither 0 nor infinite after conversion)."""
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"{flag} must be a positive number (got {value:g})")
    if not _FLOAT32_TINY <= value <= _FLOAT32_MAX:
        raise UsageError(
            f"{flag} {value:g} is outside the range of 32-bit floats "
            f"({_FLOAT32_TINY:.3g} to {_FLOAT32_MAX:.3g})"
        )
    return float(value)


def parse_seed(seed: int) -> int:
    """``--seed``: 0 ... 2**63 - 1 (what the run's generator takes)."""
    if not 0 <= seed <= MAX_SEED:
        raise UsageError(f"--seed must be between 0 and {MAX_SEED} (got {seed})")
    return int(seed)


_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``--max-memory``: bytes, or a number with K, M, G or T (powers of 1024; a trailing
    B or iB is allowed: ``4G``, ``512M``, ``1.5GB``, ``2GiB``, ``1000000``)."""
    m = _SIZE.fullmatch(text or "")
    if m is None:
        raise UsageError(f"--max-memory must be a size such as 4G, 512M or 1.5GB (got {text!r})")
    value = float(m.group(1)) * 1024 ** "_kmgt".index(m.group(2).lower() or "_")
    if not (math.isfinite(value) and value >= 1):
        raise UsageError(f"--max-memory must be at least 1 byte (got {text!r})")
    if value > 2**62:
        raise UsageError(f"--max-memory {text!r} is too large")
    return int(value)


def parse_shard(text: str) -> tuple[int, int]:
    """``--shard K/N``: this process takes inputs K, K+N, K+2N ... of the sorted input list
    (0 <= K < N)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
    if m is None:
        raise UsageError(f"--shard must be K/N with 0 <= K < N, e.g. 0/4 (got {text!r})")
    k, n = int(m.group(1)), int(m.group(2))
    if not 0 <= k < n:
        raise UsageError(f"--shard {text}: need 0 <= K < N (K counts from 0)")
    return k, n
