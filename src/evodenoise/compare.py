"""``--compare``: one image to look at a result: the input, the result and (when given) the
reference side by side, above the same magnified detail of each, with a caption.

The detail is the square where the result differs most from the input (the mean absolute
change over the square, colour values only), so a look at it shows what the restoration did.
Panels of small images are enlarged, those of large ones reduced (whole factors, no
interpolation: every shown pixel is one of the image's or a mean of a block of them). Gray
and 16-bit images are shown as 8-bit RGB; an alpha channel is shown over a checkerboard.
Pure numpy and Pillow (its default font for the labels).
"""

from __future__ import annotations

import math

import numpy as np

from .report import psnr_text

__all__ = ["compare_image", "detail_box"]

MIN_SIDE = 192  # panels of smaller images are enlarged to at least this (whole factors)
MAX_SIDE = 1024  # panels of larger images are reduced to at most this
GAP = 4  # pixels between panels
TEXT = 14  # height of a line of text
BACKGROUND = 255  # white
MARK = np.array([230, 30, 30], dtype=np.uint8)  # the detail's frame on the panels


def _as_hwc(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)  # 32-bit: a 12-megapixel sheet stays within ~1 GB
    return a[:, :, None] if a.ndim == 2 else a


def _colour_channels(a: np.ndarray) -> np.ndarray:
    """(H, W, 1 or 3): the colour values without alpha."""
    return a[:, :, : 3 if a.shape[2] >= 3 else 1]


def to_rgb8(a: np.ndarray) -> np.ndarray:
    """An image on the [0, 1] scale (H, W[, C]), C = 1 to 4, as (H, W, 3) uint8; alpha (the
    2nd or 4th channel) composited over a light checkerboard; NaN shown as black."""
    a = np.nan_to_num(np.clip(_as_hwc(a), 0.0, 1.0), nan=0.0)
    colour = _colour_channels(a)
    rgb = np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour
    if a.shape[2] in (2, 4):
        alpha = a[:, :, -1:]
        yy, xx = np.indices(a.shape[:2])
        board = np.where(((yy // 8 + xx // 8) % 2)[:, :, None] == 0, 0.8, 0.95)
        rgb = rgb * alpha + board * (1 - alpha)
    return np.rint(rgb * 255).astype(np.uint8)


def detail_box(before: np.ndarray, after: np.ndarray, side: int) -> tuple[int, int]:
    """(top, left) of the ``side`` x ``side`` square where ``after`` differs most from
    ``before`` (mean absolute difference of the colour values; the first such square)."""
    diff = np.abs(_colour_channels(_as_hwc(after)) - _colour_channels(_as_hwc(before)))
    diff = np.nan_to_num(diff, nan=0.0, posinf=0.0, neginf=0.0).mean(axis=2, dtype=np.float64)
    h, w = diff.shape
    side = min(side, h, w)
    total = np.zeros((h + 1, w + 1))
    total[1:, 1:] = diff.cumsum(0).cumsum(1)
    sums = total[side:, side:] - total[:-side, side:] - total[side:, :-side] + total[:-side, :-side]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left)


def _rescale(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Enlarge by ``factor`` > 0 (pixel repetition) or reduce by ``-factor`` (block means)."""
    if factor >= 1:
        return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    k = -factor
    h, w = (rgb.shape[0] // k) * k, (rgb.shape[1] // k) * k
    blocks = rgb[:h, :w].reshape(h // k, k, w // k, k, 3).astype(np.float64)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def _panel_factor(h: int, w: int) -> int:
    """The whole factor panels are shown at: > 0 enlarges, < 0 reduces (see _rescale)."""
    if max(h, w) > MAX_SIDE:
        return -math.ceil(max(h, w) / MAX_SIDE)
    return max(1, math.ceil(MIN_SIDE / max(1, max(h, w))))


def _frame(rgb: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    out = rgb.copy()
    side = max(1, side)
    bottom, right = min(top + side, out.shape[0]) - 1, min(left + side, out.shape[1]) - 1
    out[top, left : right + 1] = out[bottom, left : right + 1] = MARK
    out[top : bottom + 1, left] = out[top : bottom + 1, right] = MARK
    return out


def _detail(rgb: np.ndarray, top: int, left: int, side: int, width: int) -> np.ndarray:
    crop = rgb[top : top + side, left : left + side]
    zoom = max(1, width // max(crop.shape[:2]))
    return _rescale(crop, zoom)


def caption(record: dict | None) -> str:
    """The line under the images: PSNR (with the input's), σ and the time, as known."""
    record = record or {}
    parts = []
    if record.get("psnr") is not None:
        parts.append(psnr_text(record))
    if record.get("sigma") is not None:
        parts.append(f"sigma {record['sigma']:.4g}")
    if record.get("seconds") is not None:
        parts.append(f"{record['seconds']:.1f} s")
    return "   ".join(parts)


def compare_image(image, restored, reference=None, info=None, record=None) -> np.ndarray:
    """The comparison sheet (H, W, 3) on the [0, 1] scale of input ``image``, ``restored``
    and ``reference`` (None: left out), all on the [0, 1] scale and of one shape.
    ``record``: the input's record, for the caption (PSNR only with a reference)."""
    from PIL import Image, ImageDraw

    views = [("input", image), ("result", restored)]
    if reference is not None:
        views.append(("reference", reference))
    h, w = _as_hwc(image).shape[:2]
    side = max(1, min(h, w, max(8, min(h, w) // 4)))
    top, left = detail_box(image, restored, side)
    factor = _panel_factor(h, w)
    scale = factor if factor >= 1 else 1 / -factor
    rgbs = [to_rgb8(v) for _, v in views]
    at = [round(v * scale) for v in (top, left, side)]
    panels = [_frame(_rescale(rgb, factor), *at) for rgb in rgbs]
    pw, ph = panels[0].shape[1], panels[0].shape[0]
    details = [_detail(rgb, top, left, side, pw) for rgb in rgbs]
    dh = details[0].shape[0]
    n = len(views)
    width = n * pw + (n + 1) * GAP
    height = TEXT + GAP + ph + GAP + dh + GAP + TEXT + GAP
    sheet = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    for k, (panel, det) in enumerate(zip(panels, details)):
        x = GAP + k * (pw + GAP)
        sheet[TEXT + GAP : TEXT + GAP + ph, x : x + pw] = panel
        y = TEXT + 2 * GAP + ph
        sheet[y : y + det.shape[0], x : x + det.shape[1]] = det
    canvas = Image.fromarray(sheet)
    draw = ImageDraw.Draw(canvas)
    zoom = max(1, pw // side)
    for k, (name, _) in enumerate(views):
        draw.text((GAP + k * (pw + GAP), 1), name, fill=(0, 0, 0))
    note = f"detail {side}x{side} at x={left}, y={top}, shown x{zoom}"
    if scale != 1:
        note += f"; panels x{scale:.3g}"
    line = "   ".join(p for p in (caption(record), note) if p)
    draw.text((GAP, height - TEXT - 1), line, fill=(0, 0, 0))
    return np.asarray(canvas, dtype=np.float32) / 255.0
