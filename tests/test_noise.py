"""Noise levels estimated from the image: white noise read as it is, correlated noise (as
demosaicing leaves it) read near its per-pixel σ where the plain wavelet estimate sees a
fraction; the ``noise`` command; ``noise_level=estimated`` in a run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter
from test_cli import run

from evodenoise import denoise, get_preset
from evodenoise.noise import estimate_sigma
from evodenoise.noise_cmd import estimate_noise

pytestmark = pytest.mark.usefixtures("in_tmp_path")


def smooth_image(n=128, seed=0):
    """A smooth gray test image on the 0–255 scale (little fine-scale signal)."""
    rng = np.random.default_rng(seed)
    return 128 + 60 * uniform_filter(rng.standard_normal((n, n)), 24, mode="wrap") * 8


def correlated_noise(shape, sigma, seed=1):
    """Noise of per-pixel std ``sigma`` correlated over about 2 pixels (a 2x2 box filter of
    white noise, rescaled): neighbours' correlation 0.5."""
    white = np.random.default_rng(seed).standard_normal((shape[0] + 1, shape[1] + 1))
    box = (white[:-1, :-1] + white[1:, :-1] + white[:-1, 1:] + white[1:, 1:]) / 2
    return sigma * box


@pytest.mark.parametrize("sigma", [5.0, 15.0])
def test_white_noise_is_read_as_it_is(sigma):
    clean = smooth_image()
    noisy = clean + sigma * np.random.default_rng(2).standard_normal(clean.shape)
    t = torch.from_numpy(noisy)
    assert estimate_sigma(t) == pytest.approx(sigma, rel=0.1)
    assert estimate_sigma(t, decorrelate=False) == pytest.approx(sigma, rel=0.1)


def test_correlated_noise_is_read_near_its_per_pixel_sigma():
    clean = smooth_image()
    noise = correlated_noise(clean.shape, 10.0)
    t = torch.from_numpy(clean + noise)
    plain, decorrelated = estimate_sigma(t, decorrelate=False), estimate_sigma(t)
    true = float(noise.std())
    assert plain < 0.6 * true  # the finest scale sees little of it
    assert decorrelated == pytest.approx(true, rel=0.25)
    assert decorrelated > 1.5 * plain


def test_flat_plane_has_the_minimum():
    assert estimate_sigma(torch.zeros(32, 32)) == pytest.approx(1e-3)


def test_estimate_noise_groups():
    rng = np.random.default_rng(3)
    gray = (smooth_image(64) + 10 * rng.standard_normal((64, 64))) / 255
    assert set(estimate_noise(gray)) == {"gray"}
    rgb = np.repeat(smooth_image(64)[..., None], 3, 2) / 255 + 10 / 255 * rng.standard_normal(
        (64, 64, 3)
    )
    est = estimate_noise(rgb)
    assert set(est) == {"luminance", "chroma"}
    assert est["luminance"] * 255 == pytest.approx(10, rel=0.15)  # white: σ in every group
    assert est["chroma"] * 255 == pytest.approx(10, rel=0.15)


def test_noise_command_prints_and_writes_json(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(4)
    img = np.clip(smooth_image(64) + 8 * rng.standard_normal((64, 64)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "a.png")
    r = run("noise", "a.png", "missing.png", "--json")
    assert r.exit_code == 1  # one input could not be read
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert records[0]["status"] == "ok" and records[0]["sigma"]["gray"] == pytest.approx(8, rel=0.2)
    assert records[0]["model"] == "gaussian" and records[0]["correlated"] is False
    assert records[1]["status"] == "error" and "missing.png" in records[1]["error"]
    assert "σ gray" in r.stderr and r.stderr.count("missing.png") == 1


def fine_texture_under_weak_noise(n=96, seed=0):
    """Fine random texture (white noise blurred over 0.7 px, std 10) under white noise of σ 4:
    reads between white and correlated (whiteness 0.43-0.47 over seeds 0-3)."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    t = gaussian_filter(rng.standard_normal((n, n)), 0.7)
    return 128 + 10 * t / t.std() + 4 * rng.standard_normal((n, n))


def test_noise_command_says_when_the_noise_is_uncertain(tmp_path):
    np.save(tmp_path / "t.npy", fine_texture_under_weak_noise().astype(np.float32))
    np.save(tmp_path / "w.npy", (smooth_image(64) + 8 * np.random.default_rng(3).standard_normal((64, 64))).astype(np.float32))  # fmt: skip
    r = run("noise", "t.npy", "w.npy", "--json")
    texture, white = (json.loads(line)["noise_reading"] for line in r.stdout.splitlines())
    assert texture["kind"] == "between" and texture["unsure"] is True
    assert white["kind"] == "white" and white["unsure"] is False
    assert r.stderr.count("uncertain: fine texture under weak white noise reads alike") == 1


def test_noise_command_says_when_the_noise_is_correlated(tmp_path):
    noisy = smooth_image(64) + correlated_noise((64, 64), 8)
    np.save(tmp_path / "c.npy", noisy.astype(np.float32))
    r = run("noise", "c.npy", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["correlated"] is True
    assert "correlated: 1.4x the per-pixel σ" in r.stderr


def test_estimated_noise_level_is_fixed_and_reported():
    rng = np.random.default_rng(5)
    clean = smooth_image(48) / 255
    noisy = (clean + 12 / 255 * rng.standard_normal(clean.shape)).astype(np.float32)
    cfg = get_preset("fast").replace(epochs=2, min_visits=0, noise_level="estimated")
    out, result = denoise(noisy, config=cfg, seed=0)
    want = estimate_noise(noisy)["gray"]
    assert result.noise == "estimated"
    assert result.sigma == pytest.approx(want, rel=1e-5)  # fixed at the estimate
    assert all(e["sigma"] == pytest.approx(want, rel=1e-5) for e in result.log)
    _, learned = denoise(noisy, config=cfg.replace(noise_level="learned"), seed=0)
    assert learned.noise == "learned"
    _, given = denoise(noisy, 0.05, config=cfg, seed=0)
    assert given.noise == "given" and given.sigma == pytest.approx(0.05)


def test_correlated_noise_is_assumed_above_its_estimate():
    from evodenoise.noise import CORRELATED

    clean = smooth_image(48) / 255
    noisy = (clean + correlated_noise(clean.shape, 12) / 255).astype(np.float32)
    cfg = get_preset("fast").replace(epochs=1, min_visits=0)
    _, result = denoise(noisy, config=cfg, seed=0)
    per_pixel = estimate_sigma(torch.from_numpy(noisy) * 255) / 255
    assert CORRELATED > 1 and result.noise == "estimated"
    assert result.sigma == pytest.approx(CORRELATED * per_pixel, rel=1e-5)
    assert estimate_noise(noisy)["gray"] == pytest.approx(result.sigma, rel=1e-5)  # as noise says
    assert result.config.second_stage == "wiener"  # at twice the σ (plan.CORRELATED_STAGE)


def test_the_plan_reads_the_noise_once_and_says_when_it_is_correlated(monkeypatch):
    """plan_run reads the luminance's noise once (σ, second stage and the self-check's tests
    all follow from it) and marks the plan correlated only where σ was estimated from
    correlated noise."""
    import evodenoise.noise as noise_module
    import evodenoise.plan as plan_module
    from evodenoise.plan import plan_run

    reads = []
    real = noise_module.read_noise
    for module in (noise_module, plan_module):
        monkeypatch.setattr(module, "read_noise", lambda p: reads.append(p) or real(p))
    clean = smooth_image(48)
    correlated = torch.from_numpy(clean + correlated_noise(clean.shape, 12))[None]
    white = torch.from_numpy(clean + 12 * np.random.default_rng(1).standard_normal(clean.shape))
    cfg = get_preset("fast")
    assert plan_run(cfg, correlated, None, None, False).correlated and len(reads) == 1
    assert not plan_run(cfg, white[None], None, None, False).correlated
    assert not plan_run(cfg, correlated, None, 12.0, False).correlated  # σ given
    # a run on such noise: the self-check reports level and structure without testing them
    clean = smooth_image(96) / 255
    noisy = (clean + correlated_noise(clean.shape, 12) / 255).astype(np.float32)
    _, result = denoise(noisy, config=cfg.replace(epochs=1, min_visits=0), seed=0)
    assert result.check is not None and result.check.planes[0]["level"] is not None
    assert not {"level", "structure"} & set(result.check.tests)


# ---- signal-dependent noise: Poisson–Gaussian, the generalised Anscombe transform -------------


def poisson_gaussian(clean, a, b, seed=6):
    """clean (0–255) observed as a·Poisson(clean/a) + N(0, b²)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(clean, dtype=torch.float64)
    return torch.poisson(x / a, generator=g) * a + b * torch.randn(
        x.shape, generator=g, dtype=torch.float64
    )


@pytest.mark.parametrize("a, b", [(2.0, 3.0), (4.0, 0.0), (0.5, 1.0)])
def test_noise_level_function_is_estimated(a, b):
    from evodenoise.noise import estimate_poisson_gaussian

    clean = torch.linspace(10, 200, 256, dtype=torch.float64).repeat(256, 1)
    est_a, est_c = estimate_poisson_gaussian(poisson_gaussian(clean, a, b))
    assert est_a == pytest.approx(a, rel=0.15)
    assert est_c == pytest.approx(b * b, abs=0.15 * a * 100)  # c is small next to a·mean


def test_gaussian_noise_has_no_gain():
    from evodenoise.noise import estimate_poisson_gaussian, stabilise

    clean = torch.linspace(10, 200, 256, dtype=torch.float64).repeat(256, 1)
    noisy = clean + 5 * torch.randn(
        256, 256, generator=torch.Generator().manual_seed(7), dtype=torch.float64
    )
    a, c = estimate_poisson_gaussian(noisy)
    assert a < 0.05 and c == pytest.approx(25, rel=0.15)
    assert stabilise(noisy[None]) is None  # nothing to stabilise


@pytest.mark.parametrize("lam", [0.5, 2.0, 20.0])
def test_anscombe_whitens_and_its_inverse_is_unbiased(lam):
    from evodenoise.noise import Anscombe

    a, offset = 4.0, 2.5  # a black level: c = -a·offset
    y = poisson_gaussian(torch.full((100_000,), lam * a), a, 0.0) + offset
    t = Anscombe.fit(a, -a * offset)
    z = t.forward(y)
    if lam >= 2:
        assert float(z.std()) / t.scale == pytest.approx(1.0, abs=0.05)  # white, σ = scale
    mean = float(t.inverse(z.mean().reshape(1)))
    assert mean == pytest.approx(float(y.mean()), rel=0.02)  # the exact unbiased inverse
    algebraic = a * ((float(z.mean()) / t.scale) ** 2 / 4 - 0.375) + a * offset
    if lam < 1:
        assert abs(algebraic - float(y.mean())) > 3 * abs(mean - float(y.mean()))


def test_poisson_gaussian_run_beats_the_input_and_refuses_a_sigma():
    clean = np.clip(smooth_image(96), 5, 250)
    noisy = poisson_gaussian(clean, 3.0, 1.0).numpy().astype(np.float32) / 255
    cfg = get_preset("fast").replace(epochs=4, min_visits=0, noise_model="poisson-gaussian")
    out, result = denoise(noisy, config=cfg, seed=0)
    mse = lambda u: float(np.mean((u - clean / 255) ** 2))  # noqa: E731
    assert mse(out) < 0.5 * mse(noisy) and result.noise == "estimated"
    assert result.sigma * 255 == pytest.approx(np.sqrt(3.0 * clean.mean()), rel=0.3)
    with pytest.raises(ValueError, match="leave sigma out"):
        denoise(noisy, 0.05, config=cfg)


def test_heteroscedastic_likelihood_weighs_each_value_by_its_noise():
    from evodenoise.noise import Anscombe, noise_weights

    ramp = torch.linspace(10, 240, 96, dtype=torch.float64).repeat(96, 1)
    noise = poisson_gaussian(ramp, 3.0, 1.0) - ramp  # variance 3·value + 1
    r, sigma = noise_weights((ramp + noise)[None], [Anscombe.fit(3.0, 1.0)], shared=False)
    white = noise * r[0]  # the noise scaled by the weights
    assert float(white.std()) == pytest.approx(sigma, rel=0.1)  # has one variance σ²...
    dark, bright = slice(8, 32), slice(64, 88)  # columns, away from the blurred edges
    assert float(white[:, bright].var() / white[:, dark].var()) == pytest.approx(1, abs=0.2)
    assert float(noise[:, bright].var() / noise[:, dark].var()) > 2  # ...the input's grows
    clean = np.clip(smooth_image(96), 5, 250)
    counts = poisson_gaussian(clean, 3.0, 1.0)
    noisy = counts.numpy().astype(np.float32) / 255
    cfg = get_preset("fast").replace(epochs=4, min_visits=0, noise_model="poisson-gaussian")
    cfg = cfg.replace(signal_dependence="likelihood", second_stage="wiener")
    out, result = denoise(noisy, config=cfg, seed=0)
    mse = lambda u: float(np.mean((u - clean / 255) ** 2))  # noqa: E731
    assert mse(out) < 0.5 * mse(noisy)
    assert result.config.second_stage == "off"  # the noise stays signal-dependent: no filter
    assert result.check is not None and result.check.passed  # checked on the weighted planes


def test_noise_option_sets_the_noise_model(tmp_path, engine):
    from PIL import Image

    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / "a.png")
    r = run("denoise", "a.png", "--noise", "poisson-gaussian", "--device", "cpu", "-q")
    assert r.exit_code == 0 and engine.calls[0]["config"].noise_model == "poisson-gaussian"
    r = run("denoise", "a.png", "--noise", "laplace", "-f")
    assert r.exit_code == 2 and "noise_model must be one of" in r.stderr


def test_gain_gives_the_level_function(tmp_path, engine):
    from PIL import Image

    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(tmp_path / "a.png")
    r = run("denoise", str(tmp_path / "a.png"), "--gain", "4", "--sigma", "2", "-q", "--json")
    assert r.exit_code == 0, r.stderr
    assert engine.gain == pytest.approx(4 / 255) and engine.calls[0]["sigma"] == pytest.approx(
        2 / 255
    )
    assert json.loads(r.stdout.splitlines()[-1])["gain_given"] == 4
    for bad, says in (("0", "--gain"), ("x", "--gain must be a positive number")):
        r = run("denoise", str(tmp_path / "a.png"), "--gain", bad, "-f")
        assert r.exit_code == 2 and says in r.stderr
    r = run("denoise", str(tmp_path / "a.png"), "--gain", "4", "--noise", "gaussian", "-f")
    assert r.exit_code == 2 and "cannot go with --noise gaussian" in r.stderr
    holes = np.zeros((16, 16), np.uint8)
    holes[4:8, 4:8] = 255
    Image.fromarray(holes).save(tmp_path / "m.png")
    r = run("inpaint", str(tmp_path / "a.png"), "--mask", str(tmp_path / "m.png"), "--gain", "4")
    assert r.exit_code == 0 and engine.gain == pytest.approx(4 / 255)  # its preset's gaussian


def test_known_gain_and_read_noise_take_the_transform_for_them():
    clean = np.clip(smooth_image(96), 5, 250)
    noisy = poisson_gaussian(clean, 3.0, 1.0).numpy().astype(np.float32) / 255
    cfg = get_preset("fast").replace(epochs=4, min_visits=0)
    out, result = denoise(noisy, 1.0 / 255, gain=3.0 / 255, config=cfg, seed=0)
    mse = lambda u: float(np.mean((u - clean / 255) ** 2))  # noqa: E731
    assert mse(out) < 0.5 * mse(noisy)
    assert result.noise == "given" and result.config.noise_model == "poisson-gaussian"
    assert result.sigma * 255 == pytest.approx(np.sqrt(3.0 * clean.mean() + 1), rel=0.01)
    _, told = denoise(noisy, gain=3.0 / 255, config=cfg.replace(noise_model="gaussian"))
    assert told.config.noise_model == "poisson-gaussian"  # the gain says what the noise is
    with pytest.raises(ValueError, match="gain must be a positive number"):
        denoise(noisy, gain=-1.0, config=cfg)


# ---- the automatic noise model ----------------------------------------------------------------


def textured_ramp(seed=0):
    """A ramp 20..220 whose texture's contrast grows with the brightness (0–255)."""
    g = torch.Generator().manual_seed(seed)
    field = torch.randn(1, 1, 64, 64, generator=g, dtype=torch.float64)
    tex = torch.nn.functional.interpolate(field, scale_factor=2, mode="bilinear")[0, 0]
    return torch.linspace(20, 220, 128, dtype=torch.float64).repeat(128, 1) * (1 + 0.15 * tex)


@pytest.mark.parametrize("sigma", [5.0, 10.0])
def test_texture_growing_with_brightness_is_not_signal_dependent(sigma):
    from evodenoise.noise import _grows, estimate_poisson_gaussian, is_signal_dependent

    clean = textured_ramp()
    g = torch.Generator().manual_seed(8)
    white = clean + sigma * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    assert _grows(*estimate_poisson_gaussian(white), white)  # local variances are fooled...
    assert not is_signal_dependent(white)  # ...the diagonal detail is not
    assert is_signal_dependent(poisson_gaussian(clean, 2.0, 1.0))


def test_fine_texture_on_the_bright_parts_only_is_not_signal_dependent():
    """Coins-like: a flat dark ground and bright parts with fine texture (stripes, which first
    differences see and the diagonal detail does not, plus weak isotropic grain)."""
    from evodenoise.noise import (
        _grows,
        _grows_finely,
        estimate_poisson_gaussian,
        is_signal_dependent,
    )

    g = torch.Generator().manual_seed(3)
    x = torch.arange(128, dtype=torch.float64)
    tex = 25 * torch.sin(2 * math.pi * x / 3) + 5 * torch.randn(
        128, 128, generator=g, dtype=torch.float64
    )
    clean = torch.full((128, 128), 30.0, dtype=torch.float64) + torch.linspace(0, 40, 128)
    clean[:, 64:] += 150 + tex[:, 64:]
    white = clean + 5 * torch.randn(128, 128, generator=g, dtype=torch.float64)
    a, c = estimate_poisson_gaussian(white)
    assert _grows(a, c, white) and _grows_finely(white)  # both growth tests are fooled...
    assert not is_signal_dependent(white)  # ...the transform would crush the bright noise
    counts = torch.poisson(clean.clamp(min=0) / 3, generator=g) * 3
    assert is_signal_dependent(counts)


def test_between_white_and_correlated_the_finest_scale_sets_sigma():
    """White noise on fine texture reads between white and correlated (its block means see the
    texture): the smaller, finest-scale σ, not the block means' (5x too large on grass at σ 5);
    correlated noise (camera photos, below 0.4) keeps 1.4 times the block means'."""
    from evodenoise.noise import CORRELATED, Reading

    between = Reading(fine=12.0, blocks=24.5)  # grass at σ = 5 reads about so
    assert not between.white and not between.correlated and between.sigma == 12.0
    camera = Reading(fine=3.0, blocks=12.0)  # whiteness 0.25
    assert camera.correlated and camera.sigma == pytest.approx(CORRELATED * 12.0)
    assert Reading(fine=8.0, blocks=10.0).sigma == 8.0  # white


def test_reading_is_unsure_between_white_and_correlated():
    """Whiteness from UNSURE_FROM up to WHITE: fine texture under weak white noise and noise
    correlated between neighbours read alike there, so the σ assumed is uncertain."""
    from evodenoise.noise import UNSURE_FROM, WHITE, Reading

    kinds = [(w, Reading(fine=w, blocks=1.0)) for w in (0.2, UNSURE_FROM, 0.39, 0.5, WHITE, 0.9)]
    assert [r.kind for _, r in kinds] == ["correlated"] * 3 + ["between", "white", "white"]
    assert [r.unsure for _, r in kinds] == [False, True, True, True, False, False]
    assert Reading(fine=5.0, blocks=10.0).as_dict() == {"whiteness": 0.5, "kind": "between",
                                                         "unsure": True}  # fmt: skip


def test_a_run_warns_when_the_noise_reading_is_uncertain(tmp_path):
    """σ estimated from an uncertain reading: one warning line, and the reading in --json; σ
    given: no reading, no warning."""
    np.save(tmp_path / "t.npy", fine_texture_under_weak_noise(64).astype(np.float32))
    fast = ("--preset", "fast", "--epochs", "1", "--json", "--force")
    r = run("denoise", "t.npy", "-o", "a.png", *fast)
    assert r.exit_code == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["noise_reading"]["unsure"] is True and record["sigma_source"] == "estimated"
    assert r.stderr.count("is uncertain (whiteness") == 1
    r = run("denoise", "t.npy", "-o", "b.png", "--sigma", "4", *fast)
    assert json.loads(r.stdout)["noise_reading"] is None and "uncertain" not in r.stderr


def test_auto_noise_model_takes_white_photon_counts_only():
    from evodenoise.config import Config
    from evodenoise.plan import choose_noise_model

    clean = torch.linspace(10, 240, 128, dtype=torch.float64).repeat(128, 1)
    counts = poisson_gaussian(clean, 2.0, 1.0)[None]
    blurred = torch.nn.functional.avg_pool2d(counts[None], 3, 1, 1)[0]  # correlated: a camera's
    auto, missing = Config(noise_model="auto"), torch.zeros_like(counts, dtype=torch.bool)
    assert choose_noise_model(auto, counts, None, None) == "poisson-gaussian"
    assert choose_noise_model(auto, blurred, None, None) == "gaussian"
    assert choose_noise_model(auto, counts, None, 5.0) == "gaussian"  # a σ given: Gaussian
    assert choose_noise_model(auto, counts, missing, None) == "gaussian"
    assert choose_noise_model(Config(), counts, None, None) == "gaussian"  # as asked
    assert choose_noise_model(Config(noise_model="poisson-gaussian"), blurred, None, None) == (
        "poisson-gaussian"
    )


def test_default_run_transforms_photon_counts_and_reports_what_ran():
    u = smooth_image(96)
    clean = 3 + 220 * ((u - u.min()) / (u.max() - u.min())) ** 2  # mostly dark, as a frame is
    noisy = poisson_gaussian(clean, 4.0, 1.0).numpy().astype(np.float32) / 255
    cfg = get_preset("fast").replace(epochs=4, min_visits=0)
    assert cfg.noise_model == "auto"
    out, result = denoise(noisy, config=cfg, seed=0)
    forced, _ = denoise(noisy, config=cfg.replace(noise_model="gaussian"), seed=0)
    mse = lambda u: float(np.mean((u - clean / 255) ** 2))  # noqa: E731
    assert result.config.noise_model == "poisson-gaussian"
    assert result.config.second_stage == "wiener"  # the transformed noise reads its σ true
    assert mse(out) < mse(forced)
    white = clean / 255 + 8 / 255 * np.random.default_rng(9).standard_normal(clean.shape)
    _, result = denoise(white.astype(np.float32), config=cfg, seed=0)
    assert result.config.noise_model == "gaussian"


def test_noise_command_reports_photon_counting_noise(tmp_path):
    clean = torch.linspace(10, 240, 128, dtype=torch.float64).repeat(128, 1)
    counts = poisson_gaussian(clean, 2.0, 1.0).clamp(0, 255).numpy()
    np.save(tmp_path / "counts.npy", counts.astype(np.float32))
    r = run("noise", "counts.npy", "--json")
    assert r.exit_code == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["model"] == "poisson-gaussian"
    assert record["gain"][0] == pytest.approx(2.0, rel=0.2)  # input units (0–255 floats)
    assert "photon-counting noise, variance" in r.stderr


def test_human_line_says_photon_counts():
    from evodenoise.report import human_line

    record = {"input": "a.tif", "output": "b.tif", "sigma": 3.5, "sigma_source": "estimated"}
    assert "(estimated)" in human_line(record)
    record["config"] = {"noise_model": "poisson-gaussian"}
    assert "σ=3.50 (estimated, photon counts: σ at the mean)" in human_line(record)


def test_white_noise_on_texture_is_read_at_the_finest_scale():
    from skimage import data

    from evodenoise.noise import assume_sigma

    clean = torch.from_numpy(np.asarray(data.astronaut(), np.float64))
    clean = clean[128:384, 128:384].mean(-1)  # fine texture (hair, fabric)
    g = torch.Generator().manual_seed(10)
    noisy = clean + 5 * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    blocks = estimate_sigma(noisy)
    assert blocks > 7  # texture inflates the estimate on block means...
    assert abs(assume_sigma(noisy) - 5) < 0.5 * abs(blocks - 5)  # ...the assumed σ far less
