"""Overlapping patches of an image and their inverse (per-pixel averaging).

Images here are torch tensors shaped (C, H, W). A patch vector is ordered (C, p, p), so
D = C·p·p, and patches are listed in raster order of their top-left corner:
N = (H − p + 1)·(W − p + 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def extract_patches(image: torch.Tensor, patch_size: int) -> torch.Tensor:
    """All p×p patches at stride 1: (C, H, W) -> (N, C·p·p)."""
    c, h, w = image.shape
    if patch_size > min(h, w):
        raise ValueError(
            f"image of {h}x{w} pixels is smaller than the {patch_size}x{patch_size} patch"
        )
    cols = F.unfold(image[None], kernel_size=patch_size)  # (1, D, N)
    return cols[0].T.contiguous()


def patch_weights(patch_size: int, kind: str = "mean", *, device=None) -> torch.Tensor:
    """Per-pixel weight of a patch estimate in the merge, shape (p·p,).

    ``mean`` weighs every pixel of a patch equally; ``gaussian`` favours the patch centre
    (standard deviation p/4), where an estimate sees the most context.
    """
    if kind == "mean":
        return torch.ones(patch_size * patch_size, device=device)
    if kind == "gaussian":
        r = torch.arange(patch_size, device=device, dtype=torch.float32) - (patch_size - 1) / 2
        g = torch.exp(-0.5 * (r / (patch_size / 4)) ** 2)
        return torch.outer(g, g).flatten()
    raise ValueError(f"unknown merge {kind!r}")


def merge_patches(
    patches: torch.Tensor,
    shape: tuple[int, int, int],
    patch_size: int,
    weights: torch.Tensor | None = None,
    band: int = 65536,
) -> torch.Tensor:
    """Inverse of :func:`extract_patches`: each pixel is the (weighted) average of all patch
    estimates covering it. (N, C·p·p) -> (C, H, W).

    Folds whole rows of patches, about ``band`` patches at a time, into the image: besides the
    input, memory is O(H·W + band·D) however large the image.
    """
    c, h, w = shape
    num = torch.zeros(c, h, w, dtype=patches.dtype, device=patches.device)
    den = torch.zeros_like(num)
    cols = w - patch_size + 1  # patches per row
    rows = max(1, band // cols)  # patch rows per band
    for r0 in range(0, h - patch_size + 1, rows):
        r1 = min(r0 + rows, h - patch_size + 1)
        fold_rows(num, den, patches[r0 * cols : r1 * cols], r0, patch_size, weights)
    return num / den


def fold_rows(
    num: torch.Tensor,
    den: torch.Tensor,
    part: torch.Tensor,
    r0: int,
    patch_size: int,
    weights: torch.Tensor | None = None,
) -> None:
    """Add the estimates ``part`` (n, C·p·p) of whole patch rows starting at row ``r0`` into the
    weighted sums ``num`` and their weights ``den`` (both (C, H, W)), in place. ``weights``:
    (p·p,) for every patch alike, or (n, C·p·p) per value."""
    c, _, w = num.shape
    pp = patch_size * patch_size
    if weights is None:
        weights = torch.ones(pp, device=part.device, dtype=part.dtype)
    # (D, 1) per patch pixel, or (D, n) per value when weights (n, D) are given per patch
    wd = weights.to(part.dtype).repeat(c)[:, None] if weights.dim() == 1 else weights.T
    rows = part.shape[0] // (w - patch_size + 1)
    size = (rows + patch_size - 1, w)
    part = part.T  # (D, n)
    num[:, r0 : r0 + size[0]] += F.fold((part * wd)[None], size, patch_size)[0]
    den[:, r0 : r0 + size[0]] += F.fold(wd.expand_as(part)[None], size, patch_size)[0]


def band_patches(image: torch.Tensor, r0: int, r1: int, patch_size: int) -> torch.Tensor:
    """The patches whose top-left corners lie in rows r0 … r1-1, raster order: (n, C·p·p)."""
    return extract_patches(image[:, r0 : r1 + patch_size - 1], patch_size)


def gather_patches(image: torch.Tensor, idx: torch.Tensor, patch_size: int) -> torch.Tensor:
    """The patches with raster indices ``idx`` (M,), as rows of :func:`extract_patches`:
    (C, H, W) -> (M, C·p·p), without building the other patches."""
    c, h, w = image.shape
    cols = w - patch_size + 1
    k = torch.arange(patch_size, device=image.device)
    rows = (idx // cols)[:, None] + k  # (M, p)
    cols_ = (idx % cols)[:, None] + k  # (M, p)
    out = image[:, rows[:, :, None], cols_[:, None, :]]  # (C, M, p, p)
    return out.permute(1, 0, 2, 3).reshape(idx.numel(), c * patch_size * patch_size)


def fill_missing(
    image: torch.Tensor, estimate: torch.Tensor, missing: torch.Tensor
) -> torch.Tensor:
    """Keep observed values of ``image``, take ``estimate`` where ``missing`` is True."""
    return torch.where(missing, estimate, image)


def on_grid(r0: int, r1: int, cols: int, rows: int, stride: int, device=None) -> torch.Tensor:
    """Which patches of patch rows r0 … r1-1 (raster order, ``cols`` per row, ``rows`` rows in
    all) start on every ``stride``-th row and column, the last row and column included, so
    that every pixel stays covered: (n,) bool.

    Examples
    --------
    >>> on_grid(0, 1, 5, 3, 2).tolist()  # the first row of a 3 x 5 grid of patches
    [True, False, True, False, True]
    >>> on_grid(1, 3, 4, 3, 2).tolist()  # rows 1 (off the grid) and 2 (the last)
    [False, False, False, False, True, False, True, True]
    """
    r = torch.arange(r0, r1, device=device)[:, None]
    c = torch.arange(cols, device=device)[None]
    return (((r % stride == 0) | (r == rows - 1)) & ((c % stride == 0) | (c == cols - 1))).flatten()


def count_patches(h: int, w: int, patch_size: int) -> int:
    return max(h - patch_size + 1, 0) * max(w - patch_size + 1, 0)


def chunks(n: int, size: int):
    """Slices covering range(n) in pieces of at most ``size``."""
    for i in range(math.ceil(n / size)):
        yield slice(i * size, min((i + 1) * size, n))
