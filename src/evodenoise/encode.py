"""Image files out: the result written "like the input" (``imageio.ImageInfo``).

:func:`write_image` and :func:`encode_image` pick the format from the file suffix: ``.png``
(8 or 16 bit like the input; float inputs give 8-bit, or 16-bit when their ``data_range``
exceeds 255), ``.tif``/``.tiff`` (the input's bit depth: uint8, uint16 or float32), ``.npy``
(float32 on the input's scale). Files are written atomically: a temporary file in the target
directory, then ``os.replace``; nothing is left behind on an error or ``KeyboardInterrupt``.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from .decode import ImageError, encode_png16
from .imageio import ImageInfo


def output_format(path) -> str:
    """``png``, ``tiff`` or ``npy`` from a path's suffix; :class:`ImageError` otherwise."""
    suffix = Path(os.fspath(path)).suffix.lower()
    fmt = {".png": "png", ".tif": "tiff", ".tiff": "tiff", ".npy": "npy"}.get(suffix)
    if fmt is None:
        raise ImageError(
            f"{os.fspath(path)}: cannot write {suffix or 'files without a suffix'}"
            f" (use .png, .tif or .npy)"
        )
    return fmt


def encode_image(
    array: np.ndarray, info: ImageInfo, fmt: str = "png", *, clip: bool = True
) -> bytes:
    """Encode ``array`` ([0, 1] scale, the shape ``read_image`` returned) like ``info``.

    ``fmt``: ``png`` (8-bit, or 16-bit for 16-bit input or float input with a data range
    above 255), ``tiff`` (the input's storage type), ``npy`` (float32 on the input's scale).
    Values are clipped to [0, 1] unless ``clip=False``, which only float formats honour
    (npy, and TIFF of float input). The alpha channel of ``info`` is appended unchanged.
    """
    array = _checked(array, info)
    store = _storage(info, fmt)
    if store is np.float32:
        values = np.clip(array, 0.0, 1.0) if clip else array
        values = (values.astype(np.float64) * info.data_range).astype(np.float32)
    else:
        values = np.clip(array, 0.0, 1.0)  # float32; k/maxval * maxval is within 0.01 of k
        values *= np.float32(np.iinfo(store).max)
        values = np.rint(values, out=values).astype(store)
    if info.channels == 1 and info.channel_axis and fmt != "png":
        values = values[..., None]
    if info.alpha is not None:
        planes = values if values.ndim == 3 else values[..., None]
        values = np.concatenate([planes, _convert_alpha(info, store)[..., None]], axis=2)
    values = np.ascontiguousarray(values)
    buf = io.BytesIO()
    if fmt == "npy":
        np.save(buf, values, allow_pickle=False)
    elif fmt == "tiff":
        _save_tiff(buf, values)
    elif store is np.uint16:
        return encode_png16(values)
    else:
        from PIL import Image

        mode = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[values.shape[2] if values.ndim == 3 else 1]
        Image.frombytes(mode, values.shape[1::-1], values.tobytes()).save(
            buf, format="PNG", compress_level=6
        )
    return buf.getvalue()


def _checked(array, info: ImageInfo) -> np.ndarray:
    """``array`` as float32 of the image's shape ((H, W) for one channel); ImageError if it
    does not fit or holds NaN or infinite values."""
    array = np.asarray(array, dtype=np.float32)
    h, w = info.shape
    if array.shape[:2] != (h, w) or array.shape not in ((h, w), (h, w, info.channels)):
        if not (info.channels == 1 and array.shape == (h, w, 1)):
            raise ImageError(f"array of shape {array.shape} does not fit image {info.describe()}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not np.all(np.isfinite(array)):
        raise ImageError("refusing to write an image with NaN or infinite values")
    return array


def _storage(info: ImageInfo, fmt: str):
    """The numpy type that ``fmt`` stores an image like ``info`` in."""
    if fmt == "png":
        wide = info.dtype == "uint16" or (info.is_float and info.data_range > 255)
        return np.uint16 if wide else np.uint8
    if fmt == "tiff":
        return {"uint8": np.uint8, "uint16": np.uint16}.get(info.dtype, np.float32)
    if fmt == "npy":
        return np.float32
    raise ImageError(f"unknown output format {fmt!r}")


def _save_tiff(buf, values: np.ndarray) -> None:
    import tifffile

    c = values.shape[2] if values.ndim == 3 else 1
    kwargs = {"photometric": "rgb" if c in (3, 4) else "minisblack"}
    if c in (2, 4):
        kwargs["extrasamples"] = ["unassalpha"]
    if c == 1 and values.ndim == 3:
        values = values[..., 0]
    tifffile.imwrite(buf, np.ascontiguousarray(values), **kwargs)


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


def tile_fields(fields: np.ndarray, pad: int = 1) -> np.ndarray:
    """Generative fields (n, p, p[, C]) as one [0, 1] image: a near-square grid, each field
    scaled to its own min..max, separated by ``pad`` gray pixels."""
    fields = np.asarray(fields, dtype=np.float64)
    if fields.ndim == 2:
        fields = fields[None]
    n, p, q = fields.shape[:3]
    channels = fields.shape[3] if fields.ndim == 4 else None
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    shape = (rows * (p + pad) + pad, cols * (q + pad) + pad) + ((channels,) if channels else ())
    grid = np.full(shape, 0.5)
    for k in range(n):
        f = fields[k]
        lo, hi = float(np.min(f)), float(np.max(f))
        f = (f - lo) / (hi - lo) if hi > lo else np.full_like(f, 0.5)
        r, c = divmod(k, cols)
        y, x = pad + r * (p + pad), pad + c * (q + pad)
        grid[y : y + p, x : x + q] = f
    return grid.astype(np.float32)
