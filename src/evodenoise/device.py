"""Resolve a device name (``--device``, or the library's ``device=``) to a :class:`torch.device`, once.

Everything below the command line infers the device from its tensors.
"""

from __future__ import annotations

import re

__all__ = ["resolve_device", "DEVICE_CHOICES", "EngineWarning"]

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


class EngineWarning(RuntimeWarning):
    """The run goes on, differently than asked: the CPU for an unusable CUDA, eager for a
    training step that failed to compile. The command line prints it as one line."""


def resolve_device(spec="auto"):
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.

    Raises
    ------
    ValueError
        One line: an unknown name, CUDA asked for but not available (CPU-only build of torch
        or no GPU), or a GPU index that does not exist.
    """
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError(f"unknown device {spec!r} (use {DEVICE_CHOICES})")
    text = spec.strip().lower()
    if text == "auto":
        return torch.device("cuda") if _cuda_usable(torch) else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", text)
    if m is None:
        raise ValueError(f"unknown device {spec!r} (use {DEVICE_CHOICES})")
    if not _cuda_available(torch):
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA GPU found"
        raise ValueError(
            f"device {text!r} requested but CUDA is not available ({build}); use cpu or auto"
        )
    if m.group(1) is None:
        return torch.device("cuda")
    index = int(m.group(1))
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(
            f"device {text!r} requested but only {count} CUDA device(s) exist "
            f"(cuda:0 ... cuda:{count - 1})"
        )
    return torch.device("cuda", index)


def _cuda_usable(torch) -> bool:
    """CUDA present and working: a tensor can be made on it. A present but unusable CUDA (a
    driver too old for this torch, a GPU that fails to initialise) falls back to the CPU with
    an :class:`EngineWarning`."""
    if not _cuda_available(torch):
        return False
    try:
        torch.zeros(1, device="cuda")
        return True
    except Exception as e:  # noqa: BLE001 (any failure to initialise means: not usable)
        import warnings

        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        warnings.warn(
            EngineWarning(f"CUDA is present but unusable ({first}); using the CPU"), stacklevel=3
        )
        return False


def _cuda_available(torch) -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # broken driver installs raise instead of returning False
        return False
