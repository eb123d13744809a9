"""End to end: ``denoise`` and ``inpaint`` on small images, their result record, input
validation, devices, and the Config dataclass. Quality checks are relative to the corrupted
input and to simple baselines, never exact numbers."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

import evodenoise
from evodenoise import PRESETS, Config, Result, denoise, get_preset, inpaint

SIGMA = 25 / 255

# Small, quick configuration that still learns a 40x40 crop in ~20 epochs (many small Adam
# steps; on standardised data lr_max 0.02 gives +8.8..9.9 dB over noisy, +1.1..1.9 over blur
# on seeds 0-2).
SMALL = get_preset("fast").replace(
    patch_size=5,
    n_latents=16,
    hidden=(32,),
    n_states=16,
    n_parents=4,
    n_children=3,
    n_generations=2,
    epochs=20,
    batch_size=8,
    estep_batch=256,
    lr_max=0.02,
    lr_half_cycle=5.0,
    min_visits=0,
)
# Tiny configuration for behaviour (not quality) checks: well under a second.
TINY = get_preset("fast").replace(
    patch_size=3,
    n_latents=8,
    hidden=(8,),
    n_states=4,
    n_parents=2,
    n_children=2,
    n_generations=1,
    epochs=2,
    batch_size=16,
    estep_batch=128,
    min_visits=0,
)


def psnr(clean, x):
    return peak_signal_noise_ratio(clean, x, data_range=1.0)


def add_noise(clean, sigma=SIGMA, seed=0):
    """The benchmark protocol: float noise, not clipped, fixed seed."""
    rng = np.random.default_rng(seed)
    return (clean + sigma * rng.standard_normal(clean.shape)).astype(np.float32)


def camera_crop(y0=150, x0=180, h=40, w=40):
    return (data.camera()[y0 : y0 + h, x0 : x0 + w] / 255.0).astype(np.float32)


def smooth(h=14, w=17, c=None):
    yy, xx = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.35 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    img = base if c is None else np.stack([base * (0.7 + 0.15 * k) for k in range(c)], -1)
    return img.astype(np.float32)


@pytest.fixture(scope="module")
def camera_denoised():
    clean = camera_crop()
    noisy = add_noise(clean)
    epochs = []
    out, res = denoise(
        noisy,
        SIGMA,
        config=SMALL,
        seed=0,
        callback=lambda e: e["phase"] == "train" and epochs.append(e),
    )
    return clean, noisy, out, res, epochs


# --- quality -------------------------------------------------------------------------------


def test_denoise_beats_noisy_input_and_gaussian_blur(camera_denoised):
    clean, noisy, out, _, _ = camera_denoised
    p_noisy, p_out = psnr(clean, noisy), psnr(clean, out)
    blur = max(
        psnr(clean, gaussian_filter(noisy, s)) for s in (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0)
    )
    assert p_out >= p_noisy + 5, (p_noisy, p_out)
    assert p_out > blur + 0.3, (blur, p_out)


def test_denoise_learns_sigma_when_not_given():
    clean = camera_crop(150, 180, 40, 40)
    noisy = add_noise(clean, seed=1)
    cfg = SMALL.replace(epochs=12, lr_half_cycle=3.0, noise_level="learned")
    out, res = denoise(noisy, None, config=cfg, seed=1)
    assert psnr(clean, out) >= psnr(clean, noisy) + 5
    assert res.sigma == pytest.approx(SIGMA, rel=0.2) and res.noise == "learned"
    assert res.log[0]["sigma"] > res.log[-1]["sigma"]  # started at the data's spread
    # the presets' default: estimated from the image and kept
    out, res = denoise(noisy, None, config=cfg.replace(noise_level="estimated"), seed=1)
    assert psnr(clean, out) >= psnr(clean, noisy) + 5
    assert res.sigma == pytest.approx(SIGMA, rel=0.2) and res.noise == "estimated"
    assert res.log[0]["sigma"] == res.log[-1]["sigma"]


def test_inpaint_half_missing_beats_mean_fill():
    clean = camera_crop(150, 180, 32, 32)
    rng = np.random.default_rng(3)
    mask = rng.random(clean.shape) < 0.5
    corrupted = np.where(mask, 0.0, clean).astype(np.float32)
    cfg = SMALL.replace(epochs=12, lr_half_cycle=3.0)
    out, res = inpaint(corrupted, mask, config=cfg, seed=0)
    mean_fill = np.where(mask, clean[~mask].mean(), clean)
    assert psnr(clean, out) > psnr(clean, mean_fill) + 3
    # observed values are kept (up to float rounding through the 0-255 scale)
    np.testing.assert_allclose(out[~mask], clean[~mask], atol=1e-5)
    assert len(res.free_energy) == 12


def test_gray_inpaint_with_2d_mask_does_not_warn():
    """Regression: an (H, W) mask used to reach torch as a read-only numpy view (UserWarning
    on every gray inpaint). torch warns once per process; the suite turns every warning into
    an error, so whichever test reaches it first fails."""
    clean = smooth()
    mask = np.zeros(clean.shape, bool)
    mask[4, 5] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        inpaint(clean, mask, config=TINY, seed=0)


def test_inpaint_ignores_values_under_the_mask():
    clean = smooth()
    mask = np.random.default_rng(0).random(clean.shape) < 0.4
    a = np.where(mask, 0.0, clean).astype(np.float32)
    b = np.where(mask, 0.95, clean).astype(np.float32)
    out_a, _ = inpaint(a, mask, config=TINY, seed=0)
    out_b, _ = inpaint(b, mask, config=TINY, seed=0)
    assert np.array_equal(out_a, out_b)


def test_inpaint_noisy_and_missing_estimates_everything():
    clean = smooth()
    noisy = add_noise(clean, sigma=0.1)
    mask = np.random.default_rng(0).random(clean.shape) < 0.3
    noisy[mask] = 0.0
    out, res = inpaint(noisy, mask, sigma=0.1, config=TINY, seed=0)
    assert out.shape == clean.shape and np.isfinite(out).all()
    assert not np.allclose(out[~mask], np.clip(noisy[~mask], 0, 1))  # observed values re-estimated
    assert res.sigma == pytest.approx(0.1, rel=1e-5)  # σ given and fixed (default sigma_mode)
    out2, _ = denoise(noisy, 0.1, mask=mask, config=TINY, seed=0)  # same thing via denoise
    assert np.array_equal(out, out2)


def test_colour_denoise():
    clean = (data.astronaut()[100:124, 200:228] / 255.0).astype(np.float32)  # 24x28x3
    noisy = add_noise(clean)
    cfg = SMALL.replace(epochs=8, lr_half_cycle=2.0)
    out, res = denoise(noisy, SIGMA, config=cfg, seed=0)
    assert out.shape == (24, 28, 3) and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert psnr(clean, out) > psnr(clean, noisy) + 3
    assert res.fields.shape == (cfg.n_latents, cfg.patch_size, cfg.patch_size, 3)


@pytest.mark.parametrize("mask_kind", ["per_pixel", "per_value"])
def test_colour_inpaint_masks(mask_kind):
    clean = smooth(c=3)
    rng = np.random.default_rng(1)
    if mask_kind == "per_pixel":
        mask = rng.random(clean.shape[:2]) < 0.4
        full = np.broadcast_to(mask[..., None], clean.shape)
    else:
        mask = full = rng.random(clean.shape) < 0.4
    out, _ = inpaint(np.where(full, 0.0, clean).astype(np.float32), mask, config=TINY, seed=0)
    assert out.shape == clean.shape
    np.testing.assert_allclose(out[~full], clean[~full], atol=1e-5)


def test_single_channel_third_axis_kept():
    img = add_noise(smooth()[..., None], sigma=0.05)
    out, res = denoise(img, 0.05, config=TINY, seed=0)
    assert out.shape == img.shape
    assert res.fields.shape == (TINY.n_latents, 3, 3, 1)


# --- output and result record --------------------------------------------------------------


def test_output_shape_dtype_range(camera_denoised):
    clean, noisy, out, _, _ = camera_denoised
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert noisy.min() < 0 or noisy.max() > 1  # unclipped noise goes in...
    assert out.min() >= 0 and out.max() <= 1  # ...and comes out clipped


def test_result_record(camera_denoised):
    _, _, _, res, epochs = camera_denoised
    assert isinstance(res, Result)
    # the config that ran: the preset with the pool size, band rows, chunk, training path and
    # noise model the plan settled (a 40x40 image has 36x36 patches, all in the pool, one
    # band; compile "auto" is off for a short CPU run; a σ given means Gaussian noise, whose
    # second stage takes one pilot)
    assert res.config == SMALL.replace(
        train_patches=36 * 36, band_rows=36, chunk_size=256, compile="off", noise_model="gaussian",
        refine_joint=False,
    )  # fmt: skip
    assert res.seed == 0 and res.device == "cpu"
    assert len(res.free_energy) == SMALL.epochs == len(res.log)
    assert all(np.isfinite(res.free_energy))
    assert res.free_energy[-1] > res.free_energy[0]
    assert res.sigma > 0 and res.sigma == pytest.approx(SIGMA, rel=1e-6)  # fixed by default
    assert res.seconds > 0
    assert res.fields.shape == (SMALL.n_latents, SMALL.patch_size, SMALL.patch_size)
    assert np.isfinite(res.fields).all()
    # the callback saw every epoch, σ in image units
    assert [e["epoch"] for e in epochs] == list(range(1, SMALL.epochs + 1))
    assert all(e["sigma"] == pytest.approx(SIGMA, rel=1e-6) for e in epochs)
    assert [e["free_energy"] for e in epochs] == res.free_energy


def test_input_not_modified():
    img = add_noise(smooth(), sigma=0.05)
    mask = np.zeros(img.shape, bool)
    mask[2, 3] = True
    img_copy, mask_copy = img.copy(), mask.copy()
    inpaint(img, mask, config=TINY, seed=0)
    assert np.array_equal(img, img_copy) and np.array_equal(mask, mask_copy)


def test_accepts_float64_and_lists():
    img = np.rint(smooth() * 255).astype(np.uint8) / 255  # float64
    out, _ = denoise(img, 0.02, config=TINY, seed=0)
    assert out.dtype == np.float32 and out.shape == img.shape
    out2, _ = denoise(img.tolist(), 0.02, config=TINY, seed=0)
    np.testing.assert_array_equal(out, out2)


# --- seeds ---------------------------------------------------------------------------------


def test_same_seed_same_result():
    """All randomness comes from the run's seeded generator (regression: the decoder was once
    initialised from torch's global RNG, so equal seeds gave different results)."""
    img = add_noise(smooth(), sigma=0.05)
    torch.manual_seed(123)
    a, ra = denoise(img, 0.05, config=TINY, seed=7)
    torch.manual_seed(456)  # the global generator must not matter
    b, rb = denoise(img, 0.05, config=TINY, seed=7)
    assert np.array_equal(a, b)
    assert ra.free_energy == rb.free_energy
    assert np.array_equal(ra.fields, rb.fields)


def test_global_rng_untouched():
    img = add_noise(smooth(), sigma=0.05)
    mask = np.zeros(img.shape, bool)
    mask[1, 2] = True
    state = torch.get_rng_state()
    denoise(img, 0.05, config=TINY, seed=0)
    inpaint(img, mask, config=TINY, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_different_seed_different_result():
    img = add_noise(smooth(), sigma=0.05)
    a, _ = denoise(img, 0.05, config=TINY, seed=1)
    b, _ = denoise(img, 0.05, config=TINY, seed=2)
    assert not np.array_equal(a, b)


# --- validation ----------------------------------------------------------------------------

GOOD = smooth()


@pytest.mark.parametrize("sigma", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_sigma(sigma):
    with pytest.raises(ValueError, match="sigma"):
        denoise(GOOD, sigma, config=TINY)
    with pytest.raises(ValueError, match="sigma"):
        inpaint(
            GOOD,
            np.ones(GOOD.shape, bool) & (np.arange(GOOD.size).reshape(GOOD.shape) < 3),
            sigma=sigma,
            config=TINY,
        )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(bad):
    img = GOOD.copy()
    img[3, 4] = bad
    with pytest.raises(ValueError, match="NaN|infinite"):
        denoise(img, 0.1, config=TINY)
    mask = np.zeros(img.shape, bool)
    mask[3, 4] = True  # even where it is marked missing
    with pytest.raises(ValueError, match="NaN|infinite"):
        inpaint(img, mask, config=TINY)


@pytest.mark.parametrize("shape", [(14,), (2, 14, 17, 1), (14, 17, 2), (14, 17, 5), ()])
def test_bad_image_shape(shape):
    with pytest.raises(ValueError, match="shape"):
        denoise(np.zeros(shape, np.float32), 0.1, config=TINY)


@pytest.mark.parametrize("mask_shape", [(14, 16), (17, 14), (14, 17, 3), (14, 17, 1, 1)])
def test_mask_shape_mismatch(mask_shape):
    with pytest.raises(ValueError, match="mask"):
        inpaint(GOOD, np.zeros(mask_shape, bool) | True, config=TINY)


def test_mask_shape_mismatch_colour():
    img = smooth(c=3)
    with pytest.raises(ValueError, match="mask"):
        inpaint(img, np.ones((14, 17, 2), bool), config=TINY)


def test_all_missing_mask():
    with pytest.raises(ValueError, match="missing"):
        inpaint(GOOD, np.ones(GOOD.shape, bool), config=TINY)
    with pytest.raises(ValueError, match="missing"):
        denoise(GOOD, 0.1, mask=np.ones(GOOD.shape, bool), config=TINY)


def test_inpaint_with_empty_or_no_mask():
    with pytest.raises(ValueError, match="mask"):
        inpaint(GOOD, np.zeros(GOOD.shape, bool), config=TINY)
    with pytest.raises(ValueError, match="mask"):
        inpaint(GOOD, None, config=TINY)


def test_image_smaller_than_patch():
    with pytest.raises(ValueError, match="smaller"):
        denoise(np.zeros((7, 30), np.float32), 0.1, config=TINY.replace(patch_size=8))
    with pytest.raises(ValueError, match="smaller"):
        denoise(np.zeros((3, 5), np.float32), 0.1)  # the fast preset's smallest patch is 4x4


def test_auto_patch_size_follows_the_signal_to_noise_ratio():
    """Patch size 0: the less noise for the image's contrast, the smaller the patch; exact for
    a given plane and σ; bounded by the image; the inpaint preset's for masked input without σ."""
    from evodenoise.plan import choose_patch_size

    plane = torch.from_numpy(data.camera()[::2, ::2].astype(np.float32))
    sizes = [choose_patch_size(plane, None, s, 256) for s in (5.0, 25.0, 50.0, 200.0)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1] and set(sizes) <= {4, 6, 8}
    assert choose_patch_size(plane, None, 200.0, 256) == 8
    assert choose_patch_size(plane, None, 25.0, 5) <= 5
    noisy = plane + 25 * torch.randn(plane.shape, generator=torch.Generator().manual_seed(0))
    assert choose_patch_size(noisy, None, None, 256) == choose_patch_size(noisy, None, 25.0, 256)
    assert choose_patch_size(noisy, torch.rand(plane.shape) < 0.5, None, 256) == 5


def test_auto_patch_size_is_reported_and_small_images_fit():
    clean = data.camera()[::8, ::8][:12, :12].astype(np.float32) / 255  # 12x12
    cfg = TINY.replace(patch_size=0)
    out, res = denoise(add_noise(clean), SIGMA, config=cfg)
    assert res.config.patch_size in (4, 6, 8) and out.shape == clean.shape
    with pytest.raises(ValueError, match="smaller than the 4x4"):
        denoise(np.zeros((3, 30), np.float32), 0.1, config=cfg)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset"):
        denoise(GOOD, 0.1, config="no-such-preset")
    with pytest.raises(ValueError, match="unknown preset"):
        get_preset("House")


# --- devices -------------------------------------------------------------------------------


def test_torch_device_object_equals_string():
    img = add_noise(smooth(), sigma=0.05)
    a, ra = denoise(img, 0.05, config=TINY, seed=3, device="cpu")
    b, rb = denoise(img, 0.05, config=TINY, seed=3, device=torch.device("cpu"))
    assert np.array_equal(a, b)
    assert ra.device == rb.device == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_roughly(camera_denoised):
    clean, noisy, out_cpu, _, _ = camera_denoised
    out, res = denoise(noisy, SIGMA, config=SMALL, seed=0, device="cuda")
    assert res.device.startswith("cuda")
    assert out.shape == out_cpu.shape and out.dtype == np.float32
    assert abs(psnr(clean, out) - psnr(clean, out_cpu)) < 1.5
    assert psnr(clean, out) >= psnr(clean, noisy) + 5


# --- Config --------------------------------------------------------------------------------


def test_config_replace_rejects_unknown_key():
    with pytest.raises(ValueError, match="unknown config key"):
        Config().replace(n_latent=4)
    with pytest.raises(ValueError, match="unknown config key"):
        Config.from_dict({**Config().to_dict(), "colour": True})


@pytest.mark.parametrize(
    "bad",
    [
        dict(patch_size=-1),
        dict(n_latents=0),
        dict(hidden=(0,)),
        dict(n_states=0),
        dict(n_latents=3, n_states=9, n_children=2),
        dict(n_parents=0),
        dict(n_children=0),
        dict(n_generations=-1),
        dict(n_parents=65),
        dict(n_latents=4, n_states=8, n_children=5),
        dict(mutation="crossover", n_parents=1),
        dict(epochs=-1),
        dict(batch_size=0),
        dict(lr_min=0.0),
        dict(lr_min=0.1, lr_max=0.01),
        dict(lr_half_cycle=0.0),
        dict(sigma_floor=0.0),
        dict(estep_batch=-1),
        dict(train_patches=0),
        dict(dictionary_size=1),
        dict(band_rows=-1),
        dict(grad_states=-1),
        dict(final_sweeps=0),
        dict(chunk_size=-1),
        dict(selection="roulette"),
        dict(mutation="gaussian"),
        dict(activation="gelu"),
        dict(sigma_mode="learn"),
        dict(merge="median"),
    ],
    ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()),
)
def test_config_rejects_invalid_values(bad):
    with pytest.raises(ValueError):
        Config().replace(**bad)
    with pytest.raises(ValueError):
        Config(**bad)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_valid_and_round_trips(name):
    cfg = get_preset(name)
    assert isinstance(cfg, Config)
    d = cfg.to_dict()
    assert Config.from_dict(d) == cfg
    assert Config.from_dict(json.loads(json.dumps(d))) == cfg  # JSON-safe (hidden as a list)
    assert isinstance(d["hidden"], list)
    assert Config(**{**d, "hidden": tuple(d["hidden"])}) == cfg  # re-validates


def test_config_frozen_and_hidden_normalised():
    cfg = Config(hidden=[32, 16])
    assert cfg.hidden == (32, 16)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]
    assert cfg.replace(epochs=3).epochs == 3 and cfg.epochs != 3


def test_presets_cover_the_paper_table():
    names = set(PRESETS)
    assert {
        "fast",
        "default",
        "quality",
        "paper-house-15",
        "paper-house-25",
        "paper-house-50",
        "paper-barbara-25",
        "paper-inpaint-house",
        "paper-inpaint-color-50",
        "paper-inpaint-color-80",
    } <= names
    h25 = get_preset("paper-house-25")
    assert (h25.patch_size, h25.n_latents, h25.hidden, h25.n_states) == (8, 64, (64,), 200)
    assert (h25.n_parents, h25.n_children, h25.n_generations, h25.lr_max) == (10, 9, 4, 1e-2)
    assert (h25.batch_size, h25.lr_min, h25.epochs) == (32, 1e-4, 500)
    b25 = get_preset("paper-barbara-25")
    assert b25.hidden == (500, 500) and b25.activation == "leaky_relu" and b25.n_latents == 50
    assert get_preset("default") == get_preset("fast")
    assert evodenoise.get_preset is get_preset


def test_quick_is_fast_with_a_quarter_of_its_training():
    fast = get_preset("fast")
    assert get_preset("quick") == fast.replace(epochs=4, min_visits=fast.min_visits // 4)


# --- yardstick (slow) ----------------------------------------------------------------------


@pytest.mark.slow
def test_fast_preset_beats_non_local_means_on_camera_128():
    from skimage.restoration import denoise_nl_means
    from skimage.transform import resize

    clean = resize(data.camera() / 255.0, (128, 128), anti_aliasing=True).astype(np.float32)
    noisy = add_noise(clean)
    nlm = denoise_nl_means(
        noisy, h=0.8 * SIGMA, sigma=SIGMA, patch_size=7, patch_distance=11, fast_mode=True
    )
    out, _ = denoise(noisy, SIGMA, config="fast", seed=0)
    assert psnr(clean, out) > psnr(clean, nlm), (psnr(clean, out), psnr(clean, nlm))


@pytest.mark.slow
def test_quick_preset_trains_a_quarter_as_long_and_stays_close_to_fast():
    from skimage.transform import resize

    clean = resize(data.camera() / 255.0, (128, 128), anti_aliasing=True).astype(np.float32)
    noisy = add_noise(clean)
    fast, fast_run = denoise(noisy, SIGMA, config="fast", seed=0)
    quick, quick_run = denoise(noisy, SIGMA, config="quick", seed=0)
    assert 3 * len(quick_run.free_energy) < len(fast_run.free_energy)  # epochs trained
    assert psnr(clean, quick) > psnr(clean, fast) - 0.3 > psnr(clean, noisy) + 5
