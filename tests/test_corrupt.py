"""The corruption protocol (docs/benchmarks.md): exact, unclipped, deterministic per seed."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evodenoise.corrupt import add_noise, random_mask


def test_noise_is_exactly_image_plus_sigma_standard_normal():
    image = np.linspace(0, 255, 64 * 48).reshape(64, 48)
    noisy = add_noise(image, 25.0, seed=7)
    expected = image + 25.0 * np.random.default_rng(7).standard_normal(image.shape)
    assert noisy.dtype == np.float32 and noisy.shape == image.shape
    np.testing.assert_allclose(noisy, expected.astype(np.float32), rtol=0, atol=1e-4)


def test_noise_statistics():
    image = np.full((256, 256), 0.5)
    sigma = 25 / 255
    noise = add_noise(image, sigma, seed=1).astype(np.float64) - image
    n = noise.size
    assert abs(noise.mean()) < 4 * sigma / np.sqrt(n)
    assert abs(noise.std() / sigma - 1) < 4 / np.sqrt(2 * n)
    # independent values: neighbouring noise values are uncorrelated
    corr = np.corrcoef(noise[:, :-1].ravel(), noise[:, 1:].ravel())[0, 1]
    assert abs(corr) < 4 / np.sqrt(n)


def test_noise_is_not_clipped_or_quantised():
    image = np.zeros((64, 64), dtype=np.uint8)
    noisy = add_noise(image, 50.0, seed=0)
    assert noisy.min() < 0  # not clipped at 0
    assert np.any(noisy != np.round(noisy))  # not quantised
    bright = add_noise(np.ones((64, 64)), 25 / 255, seed=0)
    assert bright.max() > 1  # not clipped at the top of the [0, 1] scale


def test_noise_deterministic_per_seed_and_shape_rgb():
    image = np.random.default_rng(3).random((16, 12, 3))
    a, b = add_noise(image, 0.1, seed=5), add_noise(image, 0.1, seed=5)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (16, 12, 3)
    assert not np.array_equal(a, add_noise(image, 0.1, seed=6))


def test_zero_sigma_returns_image_as_float32():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = add_noise(image, 0, seed=0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, image.astype(np.float32))


@pytest.mark.parametrize("sigma", [-1e-9, -25, float("nan"), float("inf")])
def test_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        add_noise(np.zeros((4, 4)), sigma)


def test_mask_fraction_and_type():
    mask = random_mask((256, 256), 0.5, seed=0)
    assert mask.dtype == bool and mask.shape == (256, 256)
    n = mask.size
    assert abs(mask.mean() - 0.5) < 4 * np.sqrt(0.25 / n)
    mask80 = random_mask((128, 128, 3), 0.8, seed=2)
    assert mask80.shape == (128, 128, 3)
    assert abs(mask80.mean() - 0.8) < 4 * np.sqrt(0.16 / mask80.size)
    # each value independently: channels of one pixel are not missing together
    both = (mask80[..., 0] & mask80[..., 1]).mean()
    assert abs(both - 0.64) < 4 * np.sqrt(0.64 * 0.36 / mask80[..., 0].size)


def test_mask_exact_definition_and_determinism():
    expected = np.random.default_rng(11).random((10, 7)) < 0.3
    np.testing.assert_array_equal(random_mask((10, 7), 0.3, seed=11), expected)
    np.testing.assert_array_equal(
        random_mask((10, 7), 0.3, seed=11), random_mask((10, 7), 0.3, seed=11)
    )
    assert not np.array_equal(
        random_mask((32, 32), 0.5, seed=1), random_mask((32, 32), 0.5, seed=2)
    )
    assert not random_mask((8, 8), 0.0).any()
    assert random_mask(5, 0.5).shape == (5,)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        random_mask((4, 4), fraction)


@settings(max_examples=25, deadline=None)
@given(sigma=st.floats(0, 100), seed=st.integers(0, 2**32 - 1))
def test_noise_property_same_seed_same_noise_any_sigma(sigma, seed):
    image = np.zeros((4, 5))
    noisy = add_noise(image, sigma, seed=seed)
    unit = add_noise(image, 1.0, seed=seed).astype(np.float64)
    np.testing.assert_allclose(noisy, (sigma * unit).astype(np.float32), rtol=1e-5, atol=1e-5)


def test_corrupt_with_an_overflowing_sigma_fails_in_one_line(tmp_path):
    """--sigma 3e38 (a float32 value) overflows the noisy values: one error line, exit 1, a
    JSON record, no traceback, no file."""
    import json

    from PIL import Image
    from test_cli import run

    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(tmp_path / "c.png")
    r = run("corrupt", str(tmp_path / "c.png"), "--sigma", "3e38", "-o", str(tmp_path / "n.npy"),
            "--json")  # fmt: skip
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert [ln for ln in r.stderr.splitlines() if ln.strip()] == [
        ln for ln in r.stderr.splitlines() if ln.startswith("error:")
    ]
    assert "overflow" in r.stderr and json.loads(r.stdout)["status"] == "error"
    assert not (tmp_path / "n.npy").exists()
