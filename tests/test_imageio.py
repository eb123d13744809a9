"""Image I/O: every format round-trips (bit depth and alpha kept), every bad input is one
ImageError, writes are atomic, and random bytes never escape as anything but ImageError."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from evodenoise import encode as enc
from evodenoise import imageio as eio
from evodenoise.decode import decode
from evodenoise.encode import encode_image, write_image
from evodenoise.imageio import ImageError, ImageInfo, apply_orientation, read_image, read_mask

RNG = np.random.default_rng(1234)
H, W = 20, 24


def _u8(*shape):
    return RNG.integers(0, 256, shape).astype(np.uint8)


def _u16(*shape):
    return RNG.integers(0, 65536, shape).astype(np.uint16)


def _png(arr, mode=None, **save) -> bytes:
    buf = io.BytesIO()
    im = (
        Image.frombytes(mode, (arr.shape[1], arr.shape[0]), arr.tobytes())
        if mode
        else Image.fromarray(arr)
    )
    im.save(buf, format="PNG", **save)
    return buf.getvalue()


def _raw(data) -> np.ndarray:
    return decode(data)[0]


# ---- reading: every layout ---------------------------------------------------------------


def test_gray8_png(tmp_path):
    a = _u8(H, W)
    p = tmp_path / "g.png"
    p.write_bytes(_png(a))
    img, info = read_image(p)
    assert img.dtype == np.float32 and img.shape == (H, W)
    assert np.array_equal(np.rint(img * 255).astype(np.uint8), a)
    assert (info.dtype, info.channels, info.data_range, info.format) == ("uint8", 1, 255.0, "png")
    assert info.mode == "L" and not info.has_alpha and info.bit_depth == 8
    assert info.source == str(p)


def test_rgb_and_rgba_png_alpha_kept(tmp_path):
    rgb = _u8(H, W, 3)
    img, info = read_image(_png(rgb))
    assert img.shape == (H, W, 3) and info.mode == "RGB"
    rgba = _u8(H, W, 4)
    img, info = read_image(_png(rgba))
    assert img.shape == (H, W, 3) and info.mode == "RGBA"
    assert np.array_equal(info.alpha, rgba[..., 3])
    out = tmp_path / "o.png"
    write_image(out, img, info)
    assert np.array_equal(np.asarray(Image.open(out)), rgba)  # colour and alpha exact


def test_gray_alpha_png():
    la = _u8(H, W, 2)
    img, info = read_image(_png(la, "LA"))
    assert img.shape == (H, W) and info.mode == "LA"
    assert np.array_equal(_raw(encode_image(img, info)), la)


def test_palette_color_becomes_rgb():
    im = Image.fromarray(_u8(H, W, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    img, info = read_image(buf.getvalue())
    assert info.mode == "RGB" and img.shape == (H, W, 3)
    assert np.array_equal(np.rint(img * 255).astype(np.uint8), np.asarray(im.convert("RGB")))


def test_palette_gray_becomes_l():
    im = Image.fromarray(_u8(H, W)).convert("P")  # a gray palette
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    img, info = read_image(buf.getvalue())
    assert info.mode == "L" and img.shape == (H, W)


def test_palette_with_transparency_keeps_alpha():
    im = Image.fromarray(_u8(H, W, 3)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    buf = io.BytesIO()
    im.save(buf, format="PNG", transparency=0)
    img, info = read_image(buf.getvalue())
    assert info.has_alpha and info.channels == 3
    assert set(np.unique(info.alpha)) <= {0, 255}


def test_bilevel_png_reads_as_gray():
    im = Image.fromarray(_u8(H, W) > 128).convert("1")
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    img, info = read_image(buf.getvalue())
    assert info.mode == "L" and set(np.unique(img)) <= {0.0, 1.0}


def test_gray16_png_roundtrip(tmp_path):
    a = _u16(H, W)
    img, info = read_image(_png(a))
    assert info.dtype == "uint16" and info.data_range == 65535.0
    out = tmp_path / "o.png"
    write_image(out, img, info)
    back, info2 = read_image(out)
    assert info2.dtype == "uint16"
    assert np.array_equal(_raw(out.read_bytes()), a)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_colour16_png_roundtrip(tmp_path, channels):
    a = _u16(H, W, channels)
    data = eio.encode_png16(a)
    img, info = read_image(data)
    assert info.dtype == "uint16" and info.has_alpha == (channels in (2, 4))
    out = tmp_path / "o.png"
    write_image(out, img, info)
    assert np.array_equal(_raw(out.read_bytes()), a)
    with Image.open(out) as im:  # other readers accept the file
        assert im.size == (W, H)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _png16_with_filters(arr: np.ndarray, filters) -> bytes:
    """A reference PNG encoder applying the given filter type per row (for the decoder)."""
    h, w, c = arr.shape
    bpp = 2 * c
    data = arr.astype(">u2").view(np.uint8).reshape(h, w * bpp).astype(int)
    out = bytearray()
    prior = [0] * (w * bpp)
    for y in range(h):
        f = filters[y % len(filters)]
        row = list(data[y])
        enc = []
        for i, x in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = prior[i]
            cc = prior[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, cc)][f]
            enc.append((x - pred) % 256)
        out.append(f)
        out.extend(enc)
        prior = row

    def chunk(t, body):
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body))

    ctype = {2: 4, 3: 2, 4: 6}[c]
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(bytes(out)))
        + chunk(b"IEND", b"")
    )


def test_png16_decoder_handles_all_filters():
    a = _u16(7, 9, 3)
    data = _png16_with_filters(a, [0, 1, 2, 3, 4])
    assert np.array_equal(_raw(data), a)


def test_png16_bad_checksum_and_truncation():
    data = bytearray(eio.encode_png16(_u16(H, W, 3)))
    with pytest.raises(ImageError, match="truncated"):
        read_image(bytes(data[: len(data) // 2]))
    data[40] ^= 0xFF  # inside IDAT
    with pytest.raises(ImageError, match="checksum|corrupt"):
        read_image(bytes(data))


@pytest.mark.parametrize(
    "arr",
    [_u8(H, W), _u8(H, W, 3), _u16(H, W), _u16(H, W, 3), _u16(H, W, 4)],
    ids=["g8", "rgb8", "g16", "rgb16", "rgba16"],
)
def test_tiff_integer_roundtrip_keeps_depth(tmp_path, arr):
    p = tmp_path / "in.tif"
    kw = {"photometric": "rgb"} if arr.ndim == 3 else {}
    if arr.ndim == 3 and arr.shape[2] == 4:
        kw["extrasamples"] = ["unassalpha"]
    tifffile.imwrite(p, arr, **kw)
    img, info = read_image(p)
    assert info.dtype == str(arr.dtype) and info.format == "tiff"
    out = tmp_path / "out.tif"
    write_image(out, img, info)
    back = tifffile.imread(out)
    assert back.dtype == arr.dtype and np.array_equal(back, arr)
    out_png = tmp_path / "out.png"
    write_image(out_png, img, info)
    assert np.array_equal(_raw(out_png.read_bytes()), arr)


def test_tiff_planar_separate(tmp_path):
    a = _u8(H, W, 3)
    p = tmp_path / "planar.tif"
    tifffile.imwrite(p, np.moveaxis(a, -1, 0), photometric="rgb", planarconfig="separate")
    img, info = read_image(p)
    assert np.array_equal(np.rint(img * 255).astype(np.uint8), a)


def test_float_tiff_0_255_unclipped_and_data_range(tmp_path):
    a = (RNG.standard_normal((H, W)) * 40 + 128).astype(np.float32)  # leaves 0..255
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, a)
    img, info = read_image(p)
    assert info.dtype == "float32" and info.data_range == 255.0
    np.testing.assert_allclose(img * 255, a, rtol=1e-6, atol=1e-4)
    img1, info1 = read_image(p, data_range=1000)
    assert info1.data_range == 1000.0
    np.testing.assert_allclose(img1 * 1000, a, rtol=1e-6, atol=1e-3)
    out = tmp_path / "o.tif"
    write_image(out, np.clip(img, 0, 1), info)
    back = tifffile.imread(out)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, np.clip(a, 0, 255), rtol=1e-6, atol=1e-3)


@pytest.mark.parametrize("shape", [(H, W), (H, W, 1), (H, W, 3)])
def test_npy_float_roundtrip(tmp_path, shape):
    a = (RNG.standard_normal(shape) * 30 + 100).astype(np.float32)
    p = tmp_path / "x.npy"
    np.save(p, a)
    img, info = read_image(p)
    assert info.format == "npy" and info.dtype == "float32"
    assert img.shape == (shape[:2] if len(shape) == 2 or shape[2] == 1 else shape)
    out = tmp_path / "o.npy"
    write_image(out, img, info)
    back = np.load(out)
    assert back.shape == a.shape and back.dtype == np.float32
    np.testing.assert_allclose(back, np.clip(a, 0, 255), rtol=1e-6, atol=1e-3)


def test_npy_rgba_float_alpha_untouched(tmp_path):
    a = (RNG.random((H, W, 4)) * 255).astype(np.float32)
    img, info = read_image(_npy_bytes(a))
    assert info.has_alpha and img.shape == (H, W, 3)
    out = tmp_path / "o.npy"
    write_image(out, img, info)
    assert np.array_equal(np.load(out)[..., 3], a[..., 3])


def test_npy_uint8_is_8bit_and_other_ints_use_data_range():
    img, info = read_image(_npy_bytes(_u8(H, W)))
    assert info.dtype == "uint8"
    img, info = read_image(_npy_bytes(np.full((H, W), 510, np.int32)), data_range=1020)
    assert info.dtype == "float32" and np.allclose(img, 0.5)


def test_jpeg_reads_approximately():
    a = np.tile(np.linspace(0, 255, W, dtype=np.uint8), (H, 1))
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95)
    img, info = read_image(buf.getvalue())
    assert info.format == "jpeg" and info.dtype == "uint8" and img.shape == (H, W)
    assert np.abs(img * 255 - a).mean() < 3


def test_exif_orientation_is_applied():
    a = _u8(H, W, 3)
    im = Image.fromarray(a)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=100, exif=exif.tobytes())
    img, info = read_image(buf.getvalue())
    assert img.shape == (W, H, 3) and info.orientation == 6
    from PIL import ImageOps

    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
    assert np.array_equal(np.rint(img * 255).astype(np.uint8), upright)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_apply_orientation_matches_pillow(orientation):
    from PIL import ImageOps

    a = _u8(5, 7, 3)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, format="PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))))
    assert np.array_equal(apply_orientation(a, orientation), expected)


def test_tiff_orientation_tag(tmp_path):
    a = _u16(H, W)
    p = tmp_path / "o.tif"
    tifffile.imwrite(p, a, extratags=[(274, "H", 1, 3, False)])  # rotate 180
    img, info = read_image(p)
    assert info.orientation == 3
    assert np.array_equal(np.rint(img * 65535).astype(np.uint16), a[::-1, ::-1])


# ---- writing --------------------------------------------------------------------------------


def test_write_png_bit_depth_follows_info(tmp_path):
    img = RNG.random((H, W)).astype(np.float32)
    for dtype, dr, expect in (
        ("uint8", 255.0, "L"),
        ("uint16", 65535.0, "I;16"),
        ("float32", 255.0, "L"),
        ("float32", 4095.0, "I;16"),
    ):
        info = ImageInfo(shape=(H, W), channels=1, dtype=dtype, data_range=dr)
        out = tmp_path / f"{dtype}{dr:g}.png"
        write_image(out, img, info)
        with Image.open(out) as im:
            assert im.mode == expect


def test_write_clips_to_unit_range(tmp_path):
    img = np.linspace(-0.5, 1.5, H * W, dtype=np.float32).reshape(H, W)
    info = ImageInfo(shape=(H, W), channels=1, dtype="float32", data_range=255.0)
    write_image(tmp_path / "c.npy", img, info)
    back = np.load(tmp_path / "c.npy")
    assert back.min() == 0 and back.max() == 255
    raw = encode_image(img, info, "npy", clip=False)
    assert np.load(io.BytesIO(raw)).min() < 0  # corrupt needs unclipped float


def test_write_rejects_unknown_suffix_and_wrong_shape(tmp_path):
    info = ImageInfo(shape=(H, W), channels=1, dtype="uint8", data_range=255.0)
    with pytest.raises(ImageError, match=r"\.jpg"):
        write_image(tmp_path / "x.jpg", np.zeros((H, W), np.float32), info)
    with pytest.raises(ImageError):
        write_image(tmp_path / "x.png", np.zeros((H + 1, W), np.float32), info)
    assert list(tmp_path.iterdir()) == []


def test_encode_png_is_png():
    info = ImageInfo(shape=(H, W), channels=3, dtype="uint8", data_range=255.0)
    data = enc.encode_image(RNG.random((H, W, 3)).astype(np.float32), info, "png")
    assert data.startswith(b"\x89PNG")


def test_atomic_write_leaves_nothing_on_interrupt(tmp_path, monkeypatch):
    target = tmp_path / "out.png"
    target.write_bytes(b"old")

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(enc.os, "replace", boom)
    info = ImageInfo(shape=(H, W), channels=1, dtype="uint8", data_range=255.0)
    with pytest.raises(KeyboardInterrupt):
        write_image(target, np.zeros((H, W), np.float32), info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]
    assert target.read_bytes() == b"old"


def test_atomic_write_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        enc.atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


def test_atomic_write_missing_directory_is_oserror(tmp_path):
    with pytest.raises(OSError):
        enc.atomic_write_bytes(tmp_path / "nope" / "f.bin", b"x")


# ---- bad input: one ImageError, one line ------------------------------------------------


def _npy_bytes(a) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _one_line_error(source, **kw) -> str:
    with pytest.raises(ImageError) as e:
        read_image(source, **kw)
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


def test_missing_file(tmp_path):
    assert "no such file" in _one_line_error(tmp_path / "nope.png")


def test_directory(tmp_path):
    assert "directory" in _one_line_error(tmp_path)


def test_empty_file(tmp_path):
    (tmp_path / "e.png").write_bytes(b"")
    assert "empty" in _one_line_error(tmp_path / "e.png")


def test_text_file_named_png(tmp_path):
    p = tmp_path / "t.png"
    p.write_text("this is not an image\n" * 3)
    assert "not an image" in _one_line_error(p)


def test_random_bytes():
    _one_line_error(bytes(RNG.integers(0, 256, 1000, dtype=np.uint8)))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_truncated_image(tmp_path, fmt):
    buf = io.BytesIO()
    Image.fromarray(_u8(64, 64, 3)).save(buf, format=fmt)
    data = buf.getvalue()
    p = tmp_path / f"t.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    _one_line_error(p)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_input(tmp_path, bad):
    a = np.zeros((H, W), np.float32)
    a[3, 4] = bad
    assert "NaN or infinite" in _one_line_error(_npy_bytes(a))
    p = tmp_path / "f.tif"
    tifffile.imwrite(p, a)
    assert "NaN or infinite" in _one_line_error(p)


@pytest.mark.parametrize("shape", [(5,), (H, W, 5), (2, H, W, 3), (0, W)])
def test_unsupported_shape(shape):
    _one_line_error(_npy_bytes(np.zeros(shape, np.float32)))


def test_unsupported_types():
    _one_line_error(_npy_bytes(np.zeros((H, W), np.complex64)))
    _one_line_error(_npy_bytes(np.array([["a"] * W] * H)))
    _one_line_error(_npy_bytes(np.empty((H, W), dtype=object)))  # pickled: refused


def test_truncated_npy():
    data = _npy_bytes(np.zeros((H, W), np.float32))
    assert "truncated" in _one_line_error(data[:-10])


def test_multipage_tiff(tmp_path):
    p = tmp_path / "m.tif"
    tifffile.imwrite(p, _u8(3, H, W), photometric="minisblack")
    assert "multi-page" in _one_line_error(p)


def test_bad_data_range():
    _one_line_error(_npy_bytes(np.zeros((H, W), np.float32)), data_range=0)
    _one_line_error(_npy_bytes(np.zeros((H, W), np.float32)), data_range=float("nan"))


# ---- masks ----------------------------------------------------------------------------------


def _mask_png(m) -> bytes:
    return _png((np.asarray(m) * 255).astype(np.uint8))


def test_mask_polarity_and_invert():
    m = RNG.random((H, W)) < 0.3
    got = read_mask(_mask_png(m), (H, W))
    assert got.dtype == bool and np.array_equal(got, m)
    assert np.array_equal(read_mask(_mask_png(m), (H, W, 3), invert=True), ~m)


def test_mask_nonzero_counts_as_missing():
    m = np.zeros((H, W), np.uint8)
    m[2, 3] = 1  # barely non-zero
    assert read_mask(_png(m), (H, W)).sum() == 1


def test_mask_colour_per_value_and_alpha_ignored():
    m = RNG.random((H, W, 3)) < 0.3
    got = read_mask(_mask_png(m), (H, W, 3))
    assert got.shape == (H, W, 3) and np.array_equal(got, m)
    # same mask for a gray image: any channel marks the pixel
    assert np.array_equal(read_mask(_mask_png(m), (H, W)), m.any(axis=2))
    rgba = np.concatenate([(m * 255).astype(np.uint8), np.full((H, W, 1), 255, np.uint8)], 2)
    assert np.array_equal(read_mask(_png(rgba), (H, W, 3)), m)


def test_mask_gray_as_rgb_collapses_to_per_pixel():
    m = RNG.random((H, W)) < 0.3
    rgb = np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2)
    assert read_mask(_png(rgb), (H, W, 3)).shape == (H, W)


def test_mask_npy_bool():
    m = RNG.random((H, W)) < 0.5
    assert np.array_equal(read_mask(_npy_bytes(m), (H, W)), m)


@pytest.mark.parametrize(
    "case,match", [("size", "must match"), ("empty", "nothing"), ("all", "every value")]
)
def test_mask_errors(case, match):
    m = {
        "size": np.ones((H + 1, W), bool),
        "empty": np.zeros((H, W), bool),
        "all": np.ones((H, W), bool),
    }[case]
    with pytest.raises(ImageError, match=match) as e:
        read_mask(_mask_png(m), (H, W))
    assert "\n" not in str(e.value)


# ---- fuzz -----------------------------------------------------------------------------------

_PREFIXES = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
    b"II*\x00",
    b"MM\x00*",
    b"\x93NUMPY\x01\x00",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"BM",
    b"RIFF",
]


def _check_fuzz(data: bytes) -> None:
    try:
        img, info = read_image(data)
    except ImageError as e:
        assert "\n" not in str(e)
    else:  # rarely the bytes are a valid image: then the result must be sane
        assert img.dtype == np.float32 and img.shape[:2] == info.shape


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=st.sampled_from(_PREFIXES), body=st.binary(max_size=400))
def test_fuzz_random_bytes(prefix, body):
    _check_fuzz(prefix + body)


_VALID = [
    _png(_u8(8, 8, 3)),
    eio.encode_png16(_u16(8, 8, 3)),
    _npy_bytes(_u8(8, 8)),
    enc.encode_image(
        RNG.random((8, 8)).astype(np.float32), ImageInfo((8, 8), 1, "float32", 255.0), "tiff"
    ),
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(_VALID) - 1),
    cut=st.integers(0, 2000),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=4),
)
def test_fuzz_damaged_valid_files(which, cut, flips):
    data = bytearray(_VALID[which])
    for pos, x in flips:
        if pos < len(data):
            data[pos] ^= x
    _check_fuzz(bytes(data[: min(cut, len(data))] if cut < len(data) else data))


def test_fuzz_mask_loader():
    for _ in range(50):
        data = bytes(RNG.integers(0, 256, int(RNG.integers(0, 300)), dtype=np.uint8))
        with pytest.raises(ImageError):
            read_mask(data, (H, W))


def test_png16_encoder_accepts_non_contiguous_arrays():
    a = _u16(H, W, 4)[:, ::-1]  # a view with negative strides
    assert np.array_equal(_raw(eio.encode_png16(a)), a)
    b = np.asfortranarray(_u16(H, W, 3))
    assert np.array_equal(_raw(eio.encode_png16(b)), b)


@pytest.mark.parametrize("fmt", ["png16", "tiff"])
def test_decompression_bomb_guard_covers_16bit_colour_png_and_tiff(fmt, monkeypatch):
    """A small file may declare a huge image: the pixel limit Pillow applies to its formats is
    checked before decoding 16-bit colour PNG and TIFF too (here lowered to 100 pixels)."""
    import io

    import tifffile
    from PIL import Image

    if fmt == "png16":
        data = eio.encode_png16(_u16(16, 16, 3))
    else:
        buf = io.BytesIO()
        tifffile.imwrite(buf, _u8(16, 16), compression="zlib")
        data = buf.getvalue()
    decode(data)  # within the default limit
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match="16x16 pixels exceeds the limit"):
        decode(data)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.uint32])
def test_integer_tiffs_other_than_8_and_16_bit_unsigned_are_refused(dtype):
    """An int32 TIFF (0-254000) was read as floats on the 0-255 scale (all white), int8 near
    black: each is now refused in one line naming its type."""
    import io

    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, (np.arange(64).reshape(8, 8) % 100).astype(dtype))
    with pytest.raises(ImageError, match=f"samples of type {np.dtype(dtype)} are not supported"):
        decode(buf.getvalue())
