"""Public entry points: ``denoise`` and ``inpaint`` (engine lands here; signatures are final)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .config import Config


@dataclass
class Result:
    """What a restoration run reports besides the image."""

    config: Config
    seed: int
    device: str
    sigma: float  # final model sigma, in image units ([0, 1] scale)
    seconds: float
    free_energy: list[float] = field(default_factory=list)  # per epoch
    log: list[dict] = field(default_factory=list)  # per epoch: epoch, free_energy, sigma, mean_active, lr
    fields: np.ndarray | None = None  # (H, p, p[, C]) generative fields, image units


def denoise(image, sigma=None, *, config: Config | str = "fast", seed: int = 0, device="cpu",
            mask=None, callback: Callable[[dict], None] | None = None):
    raise NotImplementedError


def inpaint(image, mask, *, sigma=None, config: Config | str = "fast", seed: int = 0, device="cpu",
            callback: Callable[[dict], None] | None = None):
    raise NotImplementedError
