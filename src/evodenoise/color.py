"""Colour: RGB to an orthonormal luminance/chroma basis and back.

Rows of :data:`OPPONENT`: luminance, red−blue, green−magenta. The transform is orthonormal, so
white noise of σ per RGB value stays white noise of σ per opponent value and the likelihood is
unchanged; luminance and chroma then get models of their own (see ``plan.py``).
"""

from __future__ import annotations

import math

import torch

from .config import Config

OPPONENT = torch.tensor(
    [
        [1 / math.sqrt(3)] * 3,
        [1 / math.sqrt(2), 0.0, -1 / math.sqrt(2)],
        [1 / math.sqrt(6), -2 / math.sqrt(6), 1 / math.sqrt(6)],
    ]
)


def use_opponent(channels: int, cfg: Config, missing: torch.Tensor | None) -> bool:
    """Whether a run on ``channels`` planes restores in the opponent basis: RGB with
    ``cfg.color == "opponent"``, unless ``missing`` (C, H, W) differs between channels (a
    per-value mask would mix observed and missing values under the transform)."""
    same_mask = missing is None or bool((missing == missing[:1]).all())
    return channels == 3 and cfg.color == "opponent" and same_mask


def to_opponent(x: torch.Tensor) -> torch.Tensor:
    """RGB planes (3, H, W) in the opponent basis (3, H, W)."""
    return torch.einsum("kc,chw->khw", OPPONENT.to(x.device), x)


def from_opponent(x: torch.Tensor) -> torch.Tensor:
    """Opponent planes (3, H, W) back to RGB (the inverse is the transpose)."""
    return torch.einsum("kc,khw->chw", OPPONENT.to(x.device), x)


def fields_from_opponent(fields: torch.Tensor) -> torch.Tensor:
    """Generative fields (n, 3, p, p) in the opponent basis back to RGB."""
    return torch.einsum("kc,nkij->ncij", OPPONENT.to(fields.device), fields)
