"""Patches: extraction at stride 1, the (weighted) per-pixel average that inverts it, fill."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from evodenoise.patches import (
    chunks,
    count_patches,
    extract_patches,
    fill_missing,
    merge_patches,
    patch_weights,
)

SHAPES = [(1, 7, 9), (3, 7, 9), (1, 13, 8), (3, 11, 16), (1, 8, 8)]
# every (shape, p) with p in 1, 3, 7, 8 that fits: odd, non-square, gray and colour
CASES = [(s, p) for s in SHAPES for p in (1, 3, 7, 8) if p <= min(s[1:])]


@pytest.mark.parametrize("shape,p", CASES, ids=str)
@pytest.mark.parametrize("band", [1, 7, 65536])
def test_extract_merge_round_trip_exact_on_integer_images(shape, p, band):
    """With equal weights every pixel is (k·x)/k: exact for integer values, whether the merge
    folds one row of patches at a time (band 1), a few, or all at once."""
    c, h, w = shape
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, shape, generator=g).float()
    y = extract_patches(img, p)
    assert y.shape == (count_patches(h, w, p), c * p * p)
    assert torch.equal(merge_patches(y, shape, p, band=band), img)


@pytest.mark.parametrize("shape,p", CASES, ids=str)
@pytest.mark.parametrize("kind", ["mean", "gaussian"])
def test_extract_merge_round_trip_float(shape, p, kind):
    g = torch.Generator().manual_seed(2)
    img = torch.rand(shape, generator=g)
    out = merge_patches(extract_patches(img, p), shape, p, patch_weights(p, kind))
    assert out.shape == img.shape and out.dtype == img.dtype
    torch.testing.assert_close(out, img, atol=1e-6, rtol=0)


@settings(max_examples=40, deadline=None)
@given(
    c=st.sampled_from([1, 3]),
    h=st.integers(1, 14),
    w=st.integers(1, 14),
    p=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
)
def test_round_trip_property(c, h, w, p, seed):
    if p > min(h, w):
        with pytest.raises(ValueError):
            extract_patches(torch.zeros(c, h, w), p)
        return
    img = torch.rand((c, h, w), generator=torch.Generator().manual_seed(seed))
    y = extract_patches(img, p)
    assert y.shape[0] == (h - p + 1) * (w - p + 1) == count_patches(h, w, p)
    torch.testing.assert_close(merge_patches(y, (c, h, w), p), img, atol=1e-6, rtol=0)


def test_patch_layout_is_channel_row_col_in_raster_order():
    """Patch n = (i, j) in raster order of its top-left corner, flattened (C, p, p)."""
    c, h, w, p = 3, 6, 7, 3
    img = torch.arange(c * h * w, dtype=torch.float32).reshape(c, h, w)
    y = extract_patches(img, p)
    n = 0
    for i in range(h - p + 1):
        for j in range(w - p + 1):
            assert torch.equal(y[n], img[:, i : i + p, j : j + p].reshape(-1))
            n += 1
    assert n == y.shape[0]


@pytest.mark.parametrize("kind", ["mean", "gaussian"])
def test_merge_is_the_weighted_average_of_covering_estimates(kind):
    """Arbitrary (inconsistent) patch estimates: each pixel is Σ w·est / Σ w over the patches
    covering it, computed here by explicit loops."""
    c, h, w, p = 2, 6, 5, 3
    g = torch.Generator().manual_seed(3)
    est = torch.rand(count_patches(h, w, p), c * p * p, generator=g, dtype=torch.float64)
    wts = patch_weights(p, kind).double()
    out = merge_patches(est, (c, h, w), p, wts)
    torch.testing.assert_close(merge_patches(est, (c, h, w), p, wts, band=1), out)
    num = torch.zeros(c, h, w, dtype=torch.float64)
    den = torch.zeros(c, h, w, dtype=torch.float64)
    n = 0
    for i in range(h - p + 1):
        for j in range(w - p + 1):
            patch = est[n].reshape(c, p, p)
            for di in range(p):
                for dj in range(p):
                    wt = float(wts[di * p + dj])
                    num[:, i + di, j + dj] += wt * patch[:, di, dj]
                    den[:, i + di, j + dj] += wt
            n += 1
    torch.testing.assert_close(out, num / den, atol=1e-12, rtol=1e-12)


def test_patch_weights():
    assert torch.equal(patch_weights(4, "mean"), torch.ones(16))
    for p in (1, 2, 5, 8):
        g = patch_weights(p, "gaussian")
        assert g.shape == (p * p,) and (g > 0).all()
        sq = g.reshape(p, p)
        torch.testing.assert_close(sq, sq.T)  # symmetric
        torch.testing.assert_close(sq, sq.flip(0))
        torch.testing.assert_close(sq, sq.flip(1))
        centre = sq[(p - 1) // 2, (p - 1) // 2]
        assert torch.isclose(centre, g.max())  # largest at the centre
    with pytest.raises(ValueError):
        patch_weights(3, "median")


@pytest.mark.parametrize("shape,p", [((1, 5, 7), 6), ((3, 20, 7), 8), ((1, 1, 1), 2)])
def test_image_smaller_than_patch_is_a_value_error(shape, p):
    with pytest.raises(ValueError, match="smaller"):
        extract_patches(torch.zeros(shape), p)


def test_count_patches():
    assert count_patches(7, 9, 3) == 5 * 7
    assert count_patches(8, 8, 8) == 1
    assert count_patches(5, 9, 6) == 0


def test_fill_missing_keeps_observed_values():
    g = torch.Generator().manual_seed(4)
    img = torch.rand(3, 9, 11, generator=g)
    est = torch.rand(3, 9, 11, generator=g)
    missing = torch.rand(3, 9, 11, generator=g) < 0.5
    out = fill_missing(img, est, missing)
    assert torch.equal(out[~missing], img[~missing])
    assert torch.equal(out[missing], est[missing])


@pytest.mark.parametrize("n,size", [(0, 3), (1, 3), (10, 3), (9, 3), (5, 100)])
def test_chunks_cover_range_in_order(n, size):
    parts = list(chunks(n, size))
    assert all(s.stop - s.start <= size and s.stop > s.start for s in parts)
    assert [i for s in parts for i in range(n)[s]] == list(range(n))
