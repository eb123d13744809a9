"""Image files in and out: every format the command line accepts, on the library's [0, 1] scale.

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

Writing (:func:`write_image`, :func:`encode_image`) picks the format from the file suffix:
``.png`` (8 or 16 bit like the input; float inputs give 8-bit, or 16-bit when their
``data_range`` exceeds 255), ``.tif``/``.tiff`` (the input's bit depth: uint8, uint16 or
float32), ``.npy`` (float32 on the input's scale). Files are written atomically: a temporary
file in the target directory, then ``os.replace``; nothing is left behind on an error or
``KeyboardInterrupt``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

__all__ = [
    "ImageError",
    "ImageInfo",
    "INPUT_SUFFIXES",
    "OUTPUT_SUFFIXES",
    "read_image",
    "read_mask",
    "write_image",
    "encode_image",
    "encode_png",
    "atomic_write_bytes",
    "output_format",
    "apply_orientation",
]

#: File suffixes picked up when a directory is given as input.
INPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".bmp", ".webp", ".gif")
#: File suffixes that can be written.
OUTPUT_SUFFIXES = (".png", ".tif", ".tiff", ".npy")

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_NPY_MAGIC = b"\x93NUMPY"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class ImageError(ValueError):
    """An image (or mask) could not be read or written; the message is one line."""


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

    @property
    def array_shape(self) -> tuple[int, ...]:
        """Shape of the array :func:`read_image` returns (alpha excluded)."""
        h, w = self.shape
        return (h, w) if self.channels == 1 else (h, w, self.channels)

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
    raw, meta, name = _decode_any(source)
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
    raw, meta, name = _decode_any(source, what="mask")
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
        raise ImageError(f"{name}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                         f"{w}x{h} (width x height); they must match")
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
        raise ImageError(f"{name}: mask marks nothing as missing (white/non-zero = missing; "
                         f"use --invert-mask for the opposite polarity)")
    if mask.all():
        raise ImageError(f"{name}: mask marks every value as missing; nothing to restore from "
                         f"(white/non-zero = missing)")
    return mask


def _decode_any(source, what: str = "image"):
    """(raw array, meta dict, display name). raw: (H, W) or (H, W, C), native dtype, upright."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "<stdin>"
    else:
        path = Path(os.fspath(source))
        name = str(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{name}: is a directory, not an {what} file") from None
        except PermissionError:
            raise ImageError(f"{name}: permission denied") from None
        except OSError as e:
            raise ImageError(f"{name}: cannot read: {_one_line(e)}") from None
    if not data:
        raise ImageError(f"{name}: empty file, not an {what}")
    try:
        if data.startswith(_NPY_MAGIC):
            raw, meta = _decode_npy(data)
        elif data[:4] in _TIFF_MAGICS:
            raw, meta = _decode_tiff(data)
        elif data.startswith(_PNG_MAGIC) and _png_is_16bit_colour(data):
            raw, meta = _decode_png16(data)
        else:
            raw, meta = _decode_pillow(data)
    except ImageError as e:
        raise ImageError(f"{name}: {e}") from None
    except MemoryError:
        raise ImageError(f"{name}: {what} too large to load") from None
    except Exception as e:  # decoders raise anything on corrupt input; report it as one line
        raise ImageError(f"{name}: cannot read {what}: {_one_line(e)}") from None
    return raw, meta, name


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
        raise ImageError(f"{name}: unsupported image shape {tuple(raw.shape)} "
                         f"(need H x W or H x W x 1/2/3/4)")
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
    else:
        raise ImageError(f"{name}: unsupported value type {raw.dtype}")
    image = (color.astype(np.float64) / scale).astype(np.float32)
    if alpha is not None:
        alpha = alpha.astype(np.float32) if dtype == "float32" else alpha.copy()
    info = ImageInfo(shape=(int(color.shape[0]), int(color.shape[1])),
                     channels=1 if color.ndim == 2 else int(color.shape[2]), dtype=dtype,
                     data_range=float(scale), format=meta.get("format", "unknown"),
                     channel_axis=channel_axis, orientation=int(meta.get("orientation", 1)),
                     source=name, alpha=alpha)
    return np.ascontiguousarray(image), info


def _decode_npy(data: bytes):
    f = io.BytesIO(data)
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
    elif version in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    else:
        raise ImageError(f"unsupported .npy version {version}")
    if dtype.hasobject or dtype.kind not in "biuf":
        raise ImageError(f"unsupported .npy value type {dtype}")
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if count * dtype.itemsize > len(data) - f.tell():
        raise ImageError(f"truncated .npy file (header says shape {shape})")
    f.seek(0)
    arr = np.load(f, allow_pickle=False)
    if arr.dtype.kind == "b":
        arr = arr.astype(np.uint8)
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return np.ascontiguousarray(arr), {"format": "npy"}


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Decoders log every oddity of a damaged file; errors are raised anyway."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


def _decode_tiff(data: bytes):
    with _quiet_logger("tifffile"):
        return _decode_tiff_inner(data)


def _decode_tiff_inner(data: bytes):
    import tifffile

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        if not tif.series:
            raise ImageError("TIFF file holds no image")
        series = tif.series[0]
        page = series.pages[0] if series.pages else tif.pages[0]
        photometric = int(getattr(page, "photometric", 1))
        # MINISBLACK (1) and RGB (2) with plain sample types go through tifffile; palette,
        # white-is-zero, CMYK, YCbCr, bilevel ... are left to Pillow.
        if photometric not in (1, 2) or page.bitspersample not in (8, 16, 32, 64) \
                or int(getattr(page, "planarconfig", 1)) not in (1, 2):
            return _decode_pillow(data)
        arr = series.asarray()
        axes = series.axes
        orientation = 1
        tag = page.tags.get("Orientation")
        if tag is not None:
            try:
                orientation = int(tag.value)
            except (TypeError, ValueError):
                orientation = 1
    axes = axes.replace("C", "S")
    if axes == "SYX":
        arr = np.moveaxis(arr, 0, -1)
    elif axes not in ("YX", "YXS"):
        raise ImageError(f"multi-page or stacked TIFF is not supported (axes {series.axes})")
    meta = {"format": "tiff", "orientation": orientation}
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        meta["alpha"] = True
    return apply_orientation(np.ascontiguousarray(arr), orientation), meta


def _decode_pillow(data: bytes):
    from PIL import Image

    with warnings.catch_warnings(), _quiet_logger("PIL"):
        warnings.simplefilter("ignore")  # damaged files make Pillow warn before it raises
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return _decode_pillow_inner(data)


def _decode_pillow_inner(data: bytes):
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise ImageError("not an image file (or an unsupported format; "
                         "use PNG, JPEG, TIFF or .npy)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageError(_one_line(e)) from None
    fmt = (im.format or "unknown").lower()
    im.load()  # raises on truncated data
    orientation = 1
    try:
        orientation = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block is not worth failing for
        orientation = 1
    mode = im.mode
    alpha = False
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        has_transparency = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_transparency else "RGB")
        arr = np.asarray(im)
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            arr = arr[..., [0, 3]] if has_transparency else arr[..., 0]
        return apply_orientation(np.ascontiguousarray(arr), orientation), \
            {"format": fmt, "orientation": orientation, "alpha": has_transparency}
    elif mode in ("La",):
        im = im.convert("LA")
    elif mode in ("RGBa",):
        im = im.convert("RGBA")
    elif mode in ("RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    mode = im.mode
    if mode in ("L", "RGB"):
        arr = np.asarray(im)
    elif mode in ("LA", "RGBA"):
        arr = np.asarray(im)
        alpha = True
    elif mode.startswith("I;16"):
        arr = np.asarray(im).astype(np.uint16)
    elif mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageError("32-bit integer images are not supported")
        arr = arr.astype(np.uint16)
    elif mode == "F":
        arr = np.asarray(im).astype(np.float32)
    else:
        raise ImageError(f"unsupported image mode {mode}")
    return apply_orientation(np.ascontiguousarray(arr), orientation), \
        {"format": fmt, "orientation": orientation, "alpha": alpha}


def apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an array stored with EXIF ``orientation`` (1-8) upright (like Pillow's
    ``ImageOps.exif_transpose``)."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = np.rot90(arr, -1)
    elif orientation == 7:
        arr = arr[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        arr = np.rot90(arr, 1)
    return np.ascontiguousarray(arr)


# ---- 16-bit colour PNG (Pillow reads these as 8-bit, losing precision) ----------------------

_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _png_is_16bit_colour(data: bytes) -> bool:
    # IHDR is the first chunk: length(4) type(4) width(4) height(4) depth(1) colour type(1)
    if len(data) < 33 or data[12:16] != b"IHDR":
        return False
    return data[24] == 16 and data[25] in (2, 4, 6)


def _png_chunks(data: bytes):
    pos = 8
    while pos + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc_bytes = data[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc_bytes) != 4:
            raise ImageError("truncated PNG file")
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != struct.unpack(">I", crc_bytes)[0]:
            raise ImageError(f"corrupt PNG file (bad checksum in {ctype!r} chunk)")
        yield ctype, body
        pos += 12 + length
        if ctype == b"IEND":
            return
    raise ImageError("truncated PNG file (no IEND chunk)")


def _decode_png16(data: bytes):
    ihdr = None
    idat = []
    for ctype, body in _png_chunks(data):
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"IDAT":
            idat.append(body)
    if ihdr is None or not idat:
        raise ImageError("corrupt PNG file (missing IHDR or IDAT)")
    width, height, depth, ctype_, _comp, _filt, interlace = ihdr
    if interlace:
        raise ImageError("interlaced 16-bit colour PNG is not supported; save it without "
                         "interlacing or as TIFF")
    if width == 0 or height == 0 or width * height > 2**28:
        raise ImageError(f"unsupported PNG size {width}x{height}")
    channels = _PNG_CHANNELS[ctype_]
    bpp = 2 * channels
    stride = width * bpp
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error:
        raise ImageError("truncated or corrupt PNG image data") from None
    if len(raw) < height * (stride + 1):
        raise ImageError("truncated PNG image data")
    rows = np.frombuffer(raw, np.uint8, count=height * (stride + 1)).reshape(height, stride + 1)
    out = np.empty((height, stride), np.uint8)
    prior = np.zeros(stride, np.uint8)
    for y in range(height):
        ftype = int(rows[y, 0])
        line = rows[y, 1:]
        if ftype == 0:
            cur = line.copy()
        elif ftype == 1:  # Sub: running sum per byte position within the pixel
            cur = (np.cumsum(line.reshape(width, bpp).astype(np.uint32), axis=0) & 0xFF) \
                .astype(np.uint8).reshape(-1)
        elif ftype == 2:  # Up
            cur = line + prior
        elif ftype in (3, 4):
            cur = _unfilter_sequential(ftype, line, prior, bpp)
        else:
            raise ImageError(f"corrupt PNG image data (filter type {ftype})")
        out[y] = cur
        prior = cur
    arr = out.view(">u2").reshape(height, width, channels).astype(np.uint16)
    orientation = _pillow_orientation(data)
    meta = {"format": "png", "orientation": orientation, "alpha": channels in (2, 4)}
    return apply_orientation(arr, orientation), meta


def _unfilter_sequential(ftype: int, line: np.ndarray, prior: np.ndarray, bpp: int):
    """Average (3) and Paeth (4) filters: each byte depends on its left neighbour."""
    x = bytearray(line.tobytes())
    b = prior.tobytes()
    n = len(x)
    if ftype == 3:
        for i in range(n):
            left = x[i - bpp] if i >= bpp else 0
            x[i] = (x[i] + ((left + b[i]) >> 1)) & 0xFF
    else:
        for i in range(n):
            if i >= bpp:
                a, c = x[i - bpp], b[i - bpp]
            else:
                a = c = 0
            up = b[i]
            p = a + up - c
            pa, pb, pc = abs(p - a), abs(p - up), abs(p - c)
            if pa <= pb and pa <= pc:
                pred = a
            elif pb <= pc:
                pred = up
            else:
                pred = c
            x[i] = (x[i] + pred) & 0xFF
    return np.frombuffer(bytes(x), np.uint8)


def _pillow_orientation(data: bytes) -> int:
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1


def _encode_png16(arr: np.ndarray) -> bytes:
    """16-bit PNG of a uint16 (H, W) or (H, W, 2|3|4) array (Sub filter, zlib level 6)."""
    if arr.ndim == 2:
        arr = arr[..., None]
    h, w, c = arr.shape
    ctype = {1: 0, 3: 2, 2: 4, 4: 6}[c]
    bpp = 2 * c
    be = np.ascontiguousarray(arr, dtype=">u2").view(np.uint8).reshape(h, w, bpp)
    sub = be.copy()
    sub[:, 1:] = be[:, 1:] - be[:, :-1]  # uint8 arithmetic wraps mod 256 as PNG wants
    rows = np.concatenate([np.ones((h, 1), np.uint8), sub.reshape(h, w * bpp)], axis=1)

    def chunk(ctype_: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + ctype_ + body + \
            struct.pack(">I", zlib.crc32(ctype_ + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)
    return _PNG_MAGIC + chunk(b"IHDR", ihdr) + \
        chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------------
# writing


def output_format(path) -> str:
    """``png``, ``tiff`` or ``npy`` from a path's suffix; :class:`ImageError` otherwise."""
    suffix = Path(os.fspath(path)).suffix.lower()
    fmt = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy"}.get(suffix)
    if fmt is None:
        raise ImageError(f"{os.fspath(path)}: cannot write {suffix or 'files without a suffix'}"
                         f" (use .png, .tif or .npy)")
    return fmt


def encode_image(array: np.ndarray, info: ImageInfo, fmt: str = "png", *,
                 clip: bool = True) -> bytes:
    """Encode ``array`` ([0, 1] scale, the shape :func:`read_image` returned) like ``info``.

    ``fmt``: ``png`` (8-bit, or 16-bit for 16-bit input or float input with a data range
    above 255), ``tiff`` (the input's storage type), ``npy`` (float32 on the input's scale).
    Values are clipped to [0, 1] unless ``clip=False``, which only float formats honour
    (npy, and TIFF of float input). The alpha channel of ``info`` is appended unchanged.
    """
    array = np.asarray(array, dtype=np.float32)
    h, w = info.shape
    if array.shape[:2] != (h, w) or array.shape not in ((h, w), (h, w, info.channels)):
        if not (info.channels == 1 and array.shape == (h, w, 1)):
            raise ImageError(f"array of shape {array.shape} does not fit image {info.describe()}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not np.all(np.isfinite(array)):
        raise ImageError("refusing to write an image with NaN or infinite values")
    if fmt == "png":
        depth = 16 if (info.dtype == "uint16" or (info.is_float and info.data_range > 255)) else 8
        store = np.uint8 if depth == 8 else np.uint16
    elif fmt == "tiff":
        store = {"uint8": np.uint8, "uint16": np.uint16}.get(info.dtype, np.float32)
    elif fmt == "npy":
        store = np.float32
    else:
        raise ImageError(f"unknown output format {fmt!r}")

    if store is np.float32:
        values = np.clip(array, 0.0, 1.0) if clip else array
        values = (values.astype(np.float64) * info.data_range).astype(np.float32)
    else:
        maxval = np.iinfo(store).max
        values = np.rint(np.clip(array, 0.0, 1.0).astype(np.float64) * maxval).astype(store)
    if info.channels == 1 and info.channel_axis and fmt != "png":
        values = values[..., None]
    if info.alpha is not None:
        values = np.concatenate([values if values.ndim == 3 else values[..., None],
                                 _convert_alpha(info, store)[..., None]], axis=2)

    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(values), allow_pickle=False)
        return buf.getvalue()
    if fmt == "tiff":
        import tifffile

        buf = io.BytesIO()
        c = values.shape[2] if values.ndim == 3 else 1
        kwargs = {}
        if c in (3, 4):
            kwargs["photometric"] = "rgb"
        else:
            kwargs["photometric"] = "minisblack"
        if c in (2, 4):
            kwargs["extrasamples"] = ["unassalpha"]
        if c == 1 and values.ndim == 3:
            values = values[..., 0]
        tifffile.imwrite(buf, np.ascontiguousarray(values), **kwargs)
        return buf.getvalue()
    if store is np.uint16:
        return _encode_png16(values)
    from PIL import Image

    c = values.shape[2] if values.ndim == 3 else 1
    mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    im = Image.frombytes(mode, (w, h), np.ascontiguousarray(values).tobytes())
    buf = io.BytesIO()
    im.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _convert_alpha(info: ImageInfo, store) -> np.ndarray:
    """The input's alpha in the output's storage; exact when the storage is the same."""
    alpha = info.alpha
    if store is np.float32:
        return alpha.astype(np.float32)  # already on the input's scale
    maxval = np.iinfo(store).max
    if alpha.dtype == store:
        return alpha
    unit = alpha.astype(np.float64) / info.data_range
    return np.rint(np.clip(unit, 0.0, 1.0) * maxval).astype(store)


def encode_png(array: np.ndarray, info: ImageInfo) -> bytes:
    """PNG bytes of ``array`` (for writing to stdout)."""
    return encode_image(array, info, "png")


def write_image(path, array: np.ndarray, info: ImageInfo, *, clip: bool = True) -> None:
    """Write ``array`` ([0, 1] scale) to ``path`` like ``info``, atomically.

    The format comes from the suffix (see :func:`output_format`); see :func:`encode_image`.
    """
    data = encode_image(array, info, output_format(path), clip=clip)
    atomic_write_bytes(path, data)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and a rename.

    Readers never see a partial file; on any error (or ``KeyboardInterrupt``) the temporary
    file is removed and ``path`` is left as it was. Permission bits follow the umask.
    """
    path = Path(os.fspath(path))
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    return msg or type(e).__name__


def with_source(info: ImageInfo, source: str) -> ImageInfo:
    """A copy of ``info`` naming another source (used for derived images)."""
    return replace(info, source=source)
