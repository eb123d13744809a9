"""Image files in: every format the command line accepts, on the library's [0, 1] scale.

Reading returns a float32 array on the [0, 1] scale plus an :class:`ImageInfo` that records
everything needed to write the result "like the input" (bit depth, channels, alpha, scale).

Supported inputs
----------------
* PNG (8-bit gray / gray+alpha / RGB / RGBA / palette, 16-bit gray and 16-bit colour),
  JPEG, 8/16-bit TIFF, and anything else Pillow opens (BMP, GIF, WebP ...).
* Float arrays: ``.npy`` (``(H, W)``, ``(H, W, 1|2|3|4)``) and 32-bit float TIFF. Their values
  are on a 0-255 scale unless ``data_range`` says otherwise; they may leave that range
  (noise added without clipping, the benchmark protocol) and are passed on unclipped.
* EXIF orientation is applied (the returned array is upright); the output carries no EXIF.
* Palette images become RGB, or L when the palette is gray; an alpha channel (or a palette's
  transparency) is kept aside untouched and written back unchanged.

The format is detected from the content, never from the file name. Every failure is an
:class:`ImageError` (a ``ValueError``) with a one-line message.

Writing "like the input" is ``encode.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .decode import ImageError, apply_orientation, decode, encode_png16

__all__ = [
    "ImageError",
    "ImageInfo",
    "INPUT_SUFFIXES",
    "OUTPUT_SUFFIXES",
    "read_image",
    "read_mask",
    "encode_png16",
    "apply_orientation",
]

#: File suffixes picked up when a directory is given as input.
INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".bmp", ".webp", ".gif")
#: File suffixes that can be written.
OUTPUT_SUFFIXES = (".png", ".tif", ".tiff", ".npy")

#: Largest magnitude of a float input value, in units of its data range: values beyond are
#: not noise but a wrong --data-range (or garbage), and would overflow float32 arithmetic.
MAX_FLOAT_RANGE = 1e6


@dataclass(frozen=True)
class ImageInfo:
    """How an image was stored, so that the result can be written like it.

    ``data_range`` is the value that maps to 1.0 on the library's scale (255 for 8-bit,
    65535 for 16-bit, the ``data_range`` given for float input, 255 by default) and the unit
    of ``--sigma``. ``alpha`` holds the input's alpha channel exactly as stored (same dtype and
    scale as the input values), or ``None``.
    """

    shape: tuple[int, int]  # (height, width) after EXIF orientation
    channels: int  # colour channels without alpha: 1 (gray) or 3 (RGB)
    dtype: str  # storage of the values: "uint8", "uint16" or "float32"
    data_range: float
    format: str = "png"  # source format: png, jpeg, tiff, npy, or Pillow's name lowercased
    channel_axis: bool = False  # a gray input had an explicit channel axis, (H, W, 1)
    orientation: int = 1  # EXIF orientation that was applied
    source: str = ""
    alpha: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def has_alpha(self) -> bool:
        return self.alpha is not None

    @property
    def is_float(self) -> bool:
        return self.dtype == "float32"

    @property
    def bit_depth(self) -> int:
        """8, 16 or 32 (float)."""
        return {"uint8": 8, "uint16": 16}.get(self.dtype, 32)

    @property
    def mode(self) -> str:
        """Pillow-style name of the layout: L, LA, RGB or RGBA."""
        return ("L" if self.channels == 1 else "RGB") + ("A" if self.has_alpha else "")

    def describe(self) -> str:
        depth = "float" if self.is_float else f"{self.bit_depth}-bit"
        return f"{self.shape[1]}x{self.shape[0]} {self.mode} {depth} {self.format}"


# --------------------------------------------------------------------------------------------
# reading


def read_image(source, *, data_range: float | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Read an image file (path) or encoded image (``bytes``) onto the [0, 1] scale.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        A file path, or the encoded file content (e.g. read from stdin).
    data_range : float, optional
        Scale of float input (``.npy``, float TIFF): the value that means white. Default 255.
        Ignored for integer images, whose scale is their bit depth (255 or 65535).

    Returns
    -------
    image : numpy.ndarray
        float32, ``(H, W)`` for gray or ``(H, W, 3)`` for colour, values / data_range (float
        input may lie outside [0, 1]; it is never clipped).
    info : ImageInfo

    Raises
    ------
    ImageError
        Missing or unreadable file, unknown format, truncated data, unsupported shape or
        type, NaN or infinite values.
    """
    if data_range is not None:
        data_range = float(data_range)
        if not np.isfinite(data_range) or data_range <= 0:
            raise ImageError(f"data range must be a positive number (got {data_range:g})")
    raw, meta, name = decode(source)
    return _to_unit_scale(raw, meta, name, data_range)


def read_mask(source, image_shape, *, invert: bool = False) -> np.ndarray:
    """Read a mask image: non-zero (white) = missing, zero (black) = observed.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        Any image format :func:`read_image` reads (PNG recommended; a bool/number ``.npy``
        works too). An alpha channel is ignored.
    image_shape : tuple
        Shape of the image the mask belongs to, ``(H, W)`` or ``(H, W, C)``.
    invert : bool
        Swap the polarity (zero/black = missing).

    Returns
    -------
    numpy.ndarray
        bool, ``True`` = missing; ``(H, W)`` (the same for every channel) or ``(H, W, C)``
        when both the mask and the image have C colour channels (each value on its own).

    Raises
    ------
    ImageError
        Unreadable mask, size mismatch, a mask with nothing missing or everything missing.
    """
    raw, meta, name = decode(source, what="mask")
    if meta.get("alpha", False):
        raw = raw[..., :-1]
    if raw.ndim == 3 and raw.shape[2] == 1:
        raw = raw[..., 0]
    if raw.dtype.kind == "f" and not np.all(np.isfinite(raw)):
        raise ImageError(f"{name}: mask contains NaN or infinite values")
    mask = raw != 0
    image_shape = tuple(int(s) for s in image_shape)
    h, w = image_shape[:2]
    if mask.shape[:2] != (h, w):
        raise ImageError(
            f"{name}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
            f"{w}x{h} (width x height); they must match"
        )
    if mask.ndim == 3:
        img_c = image_shape[2] if len(image_shape) == 3 else 1
        if mask.shape[2] != img_c:
            # A colour mask for a gray image (or vice versa): a pixel is missing if any
            # channel marks it.
            mask = mask.any(axis=2)
        elif np.all(mask == mask[..., :1]):
            mask = mask[..., 0]  # the same for every channel: keep it per pixel
    if invert:
        mask = ~mask
    if not mask.any():
        raise ImageError(
            f"{name}: mask marks nothing as missing (white/non-zero = missing; "
            f"use --invert-mask for the opposite polarity)"
        )
    if mask.all():
        raise ImageError(
            f"{name}: mask marks every value as missing; nothing to restore from "
            f"(white/non-zero = missing)"
        )
    return mask


def _to_unit_scale(raw, meta, name, data_range):
    has_alpha = bool(meta.get("alpha", False))
    channel_axis = False
    if raw.ndim == 2:
        color, alpha = raw, None
    elif raw.ndim == 3 and raw.shape[2] in (1, 2, 3, 4):
        c = raw.shape[2]
        if c == 2 or c == 4:
            has_alpha = True
        if has_alpha and c in (2, 4):
            color, alpha = raw[..., :-1], raw[..., -1]
        else:
            color, alpha = raw, None
        if color.shape[2] == 1:
            color = color[..., 0]
            channel_axis = c == 1
    else:
        raise ImageError(
            f"{name}: unsupported image shape {tuple(raw.shape)} (need H x W or H x W x 1/2/3/4)"
        )
    if color.shape[0] < 1 or color.shape[1] < 1:
        raise ImageError(f"{name}: image has no pixels (shape {tuple(raw.shape)})")
    kind = raw.dtype.kind
    if raw.dtype == np.uint8:
        dtype, scale = "uint8", 255.0
    elif raw.dtype == np.uint16:
        dtype, scale = "uint16", 65535.0
    elif kind in "fiu" and raw.dtype.itemsize <= 8:
        dtype = "float32"
        scale = 255.0 if data_range is None else data_range
        if kind == "f" and not np.all(np.isfinite(raw)):
            bad = int(np.size(raw) - np.count_nonzero(np.isfinite(raw)))
            raise ImageError(f"{name}: contains {bad} NaN or infinite value(s)")
        peak = float(np.max(np.abs(color), initial=0.0))  # float64 max is finite here
        if peak > MAX_FLOAT_RANGE * scale:
            raise ImageError(
                f"{name}: values up to {peak:.3g} are more than {MAX_FLOAT_RANGE:g}"
                f" times the data range {scale:g} (wrong --data-range?)"
            )
    else:
        raise ImageError(f"{name}: unsupported value type {raw.dtype}")
    if dtype == "float32":  # float input: scale in float64, then store as float32
        image = (color.astype(np.float64) / scale).astype(np.float32)
    else:  # integers are exact in float32: one pass, no float64 temporary
        image = color.astype(np.float32)
        image /= np.float32(scale)
    if alpha is not None:
        alpha = alpha.astype(np.float32) if dtype == "float32" else alpha.copy()
    info = ImageInfo(
        shape=(int(color.shape[0]), int(color.shape[1])),
        channels=1 if color.ndim == 2 else int(color.shape[2]),
        dtype=dtype,
        data_range=float(scale),
        format=meta.get("format", "unknown"),
        channel_axis=channel_axis,
        orientation=int(meta.get("orientation", 1)),
        source=name,
        alpha=alpha,
    )
    return np.ascontiguousarray(image), info
