"""Decoding image files into arrays: content sniffing and one decoder per container.

:func:`decode` turns a path or encoded bytes into ``(raw array, meta, display name)``: the
array in its stored dtype, ``(H, W)`` or ``(H, W, C)``, turned upright by its EXIF
orientation. The format is detected from the content, never from the file name:

* ``.npy``: numpy's own reader (no pickles), header checked against the file size;
* TIFF: ``tifffile`` (gray/RGB with plain sample types; anything else goes to Pillow);
* 16-bit colour PNG: ``imagecodecs`` (libpng), because Pillow reduces it to 8 bits;
* everything else: Pillow (8/16-bit gray PNG, palette, JPEG, BMP, GIF, WebP ...).

A file holding several images (multi-page TIFF, animated GIF/PNG/WebP, a stack in ``.npy``)
is refused the same way in every container. Every failure is an :class:`ImageError` with a
one-line message; :mod:`evodenoise.imageio` turns the raw array into the library's scale.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["Decoded", "ImageError", "decode", "apply_orientation"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_NPY_MAGIC = b"\x93NUMPY"
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Largest image (pixels) decoded; Pillow's decompression-bomb limit is of the same order.
MAX_PIXELS = 2**28


class ImageError(ValueError):
    """An image (or mask) could not be read or written; the message is one line."""


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    return msg or type(e).__name__


def quote(name) -> str:
    """A file name for a one-line message: as it is when plain, else quoted with escapes
    (so that a newline or control character in a name never splits a message)."""
    text = os.fspath(name)
    if text.isprintable() and text.strip() == text and "'" not in text:
        return text
    return repr(text)


def _multi_frame(count: int, what: str) -> ImageError:
    return ImageError(
        f"{what} holds {count} images (multi-page or animated); only single "
        f"images are supported: save the frame you want on its own"
    )


class Decoded(NamedTuple):
    """A decoded file: ``raw`` (H, W) or (H, W, C) in its stored dtype, upright; ``meta``
    (format, orientation, alpha); ``name`` for messages. Pass it where a path is taken to use
    a file that was already decoded."""

    raw: np.ndarray
    meta: dict
    name: str


def decode(source, what: str = "image") -> Decoded:
    """Decode a path or encoded bytes (a :class:`Decoded` is returned as it is)."""
    if isinstance(source, Decoded):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = "<stdin>"
    else:
        path = Path(os.fspath(source))
        name = quote(str(path))
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{name}: is a directory, not an {what} file") from None
        except PermissionError:
            raise ImageError(f"{name}: permission denied") from None
        except OSError as e:
            raise ImageError(f"{name}: cannot read: {one_line(e)}") from None
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
        raise ImageError(f"{name}: cannot read {what}: {one_line(e)}") from None
    return Decoded(raw, meta, name)


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
        if len(tif.pages) > 1:
            raise _multi_frame(len(tif.pages), "TIFF file")
        series = tif.series[0]
        page = series.pages[0] if series.pages else tif.pages[0]
        photometric = int(getattr(page, "photometric", 1))
        # MINISBLACK (1) and RGB (2) with plain sample types go through tifffile; palette,
        # white-is-zero, CMYK, YCbCr, bilevel ... are left to Pillow.
        if (
            photometric not in (1, 2)
            or page.bitspersample not in (8, 16, 32, 64)
            or int(getattr(page, "planarconfig", 1)) not in (1, 2)
        ):
            return _decode_pillow(data)
        shape = dict(zip(series.axes, series.shape))
        _check_bomb(shape.get("X", 1), shape.get("Y", 1))
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
    if arr.dtype not in (np.uint8, np.uint16, np.float16, np.float32, np.float64):
        raise ImageError(
            f"TIFF samples of type {arr.dtype} are not supported (use 8- or 16-bit unsigned "
            f"integers or floats)"
        )
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
        raise ImageError(
            "not an image file (or an unsupported format; use PNG, JPEG, TIFF or .npy)"
        ) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise ImageError(one_line(e)) from None
    fmt = (im.format or "unknown").lower()
    frames = int(getattr(im, "n_frames", 1) or 1)
    if frames > 1:
        raise _multi_frame(frames, f"{fmt.upper()} file")
    im.load()  # raises on truncated data
    orientation = 1
    try:
        orientation = int(im.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block is not worth failing for
        orientation = 1
    arr, alpha = _pillow_array(im)
    return apply_orientation(np.ascontiguousarray(arr), orientation), {
        "format": fmt,
        "orientation": orientation,
        "alpha": alpha,
    }


def _pillow_array(im):
    """(array, has alpha) of a loaded Pillow image, in the modes the library reads: gray or
    RGB (with alpha), 8 or 16 bit, or float; palettes become RGB, or gray when they are."""
    mode = im.mode
    if mode == "1":
        im = im.convert("L")
    elif mode in ("P", "PA"):
        has_transparency = mode == "PA" or "transparency" in im.info
        arr = np.asarray(im.convert("RGBA" if has_transparency else "RGB"))
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            arr = arr[..., [0, 3]] if has_transparency else arr[..., 0]
        return arr, has_transparency
    elif mode in ("La",):
        im = im.convert("LA")
    elif mode in ("RGBa",):
        im = im.convert("RGBA")
    elif mode in ("RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    mode = im.mode
    if mode in ("L", "RGB", "LA", "RGBA"):
        return np.asarray(im), mode in ("LA", "RGBA")
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16), False
    if mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ImageError("32-bit integer images are not supported")
        return arr.astype(np.uint16), False
    if mode == "F":
        return np.asarray(im).astype(np.float32), False
    raise ImageError(f"unsupported image mode {mode}")


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


def _png_is_16bit_colour(data: bytes) -> bool:
    # IHDR is the first chunk: length(4) type(4) width(4) height(4) depth(1) colour type(1)
    if len(data) < 33 or data[12:16] != b"IHDR":
        return False
    return data[24] == 16 and data[25] in (2, 4, 6)


def _check_bomb(width: int, height: int) -> None:
    """The decompression-bomb guard Pillow applies to the formats it decodes, applied before
    decoding a 16-bit colour PNG or a TIFF: a small file may declare a huge image."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise ImageError(
            f"image of {width}x{height} pixels exceeds the limit of {limit / 1e6:.0f} megapixels "
            f"(a possible decompression bomb)"
        )


def _decode_png16(data: bytes):
    import imagecodecs

    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise ImageError(f"unsupported PNG size {width}x{height}")
    _check_bomb(width, height)
    orientation, frames = _pillow_header(data)
    if frames > 1:
        raise _multi_frame(frames, "PNG file")
    try:
        arr = imagecodecs.png_decode(data)
    except Exception as e:  # PngError, or a UnicodeDecodeError of libpng's own message
        if isinstance(e, imagecodecs.PngError) and "crc" in one_line(e).lower():
            raise ImageError("corrupt PNG file (bad checksum)") from None
        raise ImageError("truncated or corrupt PNG file") from None
    if arr.dtype != np.uint16 or arr.ndim != 3 or arr.shape[:2] != (height, width):
        raise ImageError("corrupt PNG file (decoded size or depth differs from its header)")
    meta = {"format": "png", "orientation": orientation, "alpha": arr.shape[2] in (2, 4)}
    return apply_orientation(arr, orientation), meta


def _pillow_header(data: bytes) -> tuple[int, int]:
    """(EXIF orientation, number of frames) from the file's header; (1, 1) when unknown."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return int(im.getexif().get(0x0112, 1)), int(getattr(im, "n_frames", 1) or 1)
    except Exception:
        return 1, 1


def encode_png16(arr: np.ndarray) -> bytes:
    """16-bit PNG of a uint16 (H, W) or (H, W, 2|3|4) array.

    libpng through ``imagecodecs`` with its fast settings (zlib level 1, run-length strategy,
    Sub filter): a 12-megapixel 16-bit RGB image in under 2 s on 2 cores.
    """
    import imagecodecs

    arr = np.ascontiguousarray(arr, dtype=np.uint16)
    return bytes(
        imagecodecs.png_encode(arr, level=1, strategy=3, filter=imagecodecs.PNG.FILTER.SUB)
    )
