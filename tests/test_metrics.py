"""Whole-image PSNR/SSIM wrappers against hand computations."""

import numpy as np
import pytest

from evodenoise.metrics import psnr, ssim


def test_psnr_hand_computation_unit_scale():
    ref = np.zeros((8, 8))
    est = np.full((8, 8), 0.1)  # MSE = 0.01 -> 20 dB on [0, 1]
    assert psnr(ref, est) == pytest.approx(20.0)
    est[0, 0] = 0.5  # MSE = (63 * 0.01 + 0.25) / 64
    mse = (63 * 0.01 + 0.25) / 64
    assert psnr(ref, est) == pytest.approx(10 * np.log10(1 / mse))


def test_psnr_8bit_scale_equals_unit_scale():
    rng = np.random.default_rng(0)
    ref = rng.random((16, 16))
    est = ref + 0.05 * rng.standard_normal(ref.shape)
    mse = np.mean((ref - est) ** 2)
    assert psnr(ref, est, data_range=1.0) == pytest.approx(10 * np.log10(1 / mse))
    assert psnr(ref * 255, est * 255, data_range=255) == pytest.approx(psnr(ref, est))
    # sigma = 25 on the 8-bit scale gives ~20.17 dB
    noisy = ref * 255 + 25 * rng.standard_normal((512, 512))[:16, :16]
    mse255 = np.mean((noisy - ref * 255) ** 2)
    assert psnr(ref * 255, noisy, data_range=255) == pytest.approx(
        20 * np.log10(255) - 10 * np.log10(mse255)
    )


def test_psnr_identical_is_inf_and_rgb_whole_image():
    ref = np.random.default_rng(1).random((8, 8, 3))
    assert psnr(ref, ref) == float("inf")
    est = ref.copy()
    est[..., 0] += 0.1  # one channel off: whole-image MSE = 0.01 / 3
    assert psnr(ref, est) == pytest.approx(10 * np.log10(3 / 0.01))


def test_ssim_identical_and_hand_computed_constant_images():
    ref = np.random.default_rng(2).random((32, 32))
    assert ssim(ref, ref) == pytest.approx(1.0)
    # constant images a, b: SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = (0.01 L)^2
    a, b, c1 = 0.2, 0.6, (0.01 * 1.0) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert ssim(np.full((16, 16), a), np.full((16, 16), b)) == pytest.approx(expected, rel=1e-6)
    c1_255 = (0.01 * 255) ** 2
    expected255 = (2 * a * b * 255**2 + c1_255) / ((a * a + b * b) * 255**2 + c1_255)
    assert ssim(
        np.full((16, 16), a * 255), np.full((16, 16), b * 255), data_range=255
    ) == pytest.approx(expected255, rel=1e-6)


def test_ssim_rgb_is_mean_over_channels():
    rng = np.random.default_rng(3)
    ref = rng.random((24, 24, 3))
    est = np.clip(ref + 0.1 * rng.standard_normal(ref.shape), 0, 1)
    per_channel = [ssim(ref[..., c], est[..., c]) for c in range(3)]
    assert ssim(ref, est) == pytest.approx(np.mean(per_channel))
    assert 0 < ssim(ref, est) < 1


def test_shape_mismatch_and_bad_input():
    with pytest.raises(ValueError, match="shape"):
        psnr(np.zeros((8, 8)), np.zeros((8, 9)))
    with pytest.raises(ValueError, match="shape"):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="data_range"):
        psnr(np.zeros((8, 8)), np.ones((8, 8)), data_range=0)
    with pytest.raises(ValueError):
        psnr(np.zeros(8), np.ones(8))


@pytest.mark.parametrize("shape", [(40, 23), (37, 21, 3)])
def test_banded_ssim_and_psnr_equal_whole_image_ones(monkeypatch, shape):
    """Bands of rows (overlapping by the window's half) give scikit-image's whole-image SSIM
    and PSNR, to rounding."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    import evodenoise.metrics as metrics

    rng = np.random.default_rng(2)
    ref = rng.random(shape)
    est = ref + 0.1 * rng.standard_normal(shape)
    axis = -1 if len(shape) == 3 else None
    whole = structural_similarity(ref, est, data_range=1.0, channel_axis=axis)
    monkeypatch.setattr(metrics, "BAND_ROWS", 5)  # 7 or 8 bands
    assert ssim(ref, est) == pytest.approx(whole, abs=1e-12)
    assert psnr(ref, est) == pytest.approx(peak_signal_noise_ratio(ref, est, data_range=1.0))
    with pytest.raises(ValueError):  # smaller than the window
        ssim(ref[:5, :5], est[:5, :5])
