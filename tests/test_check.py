"""The result's self-check (check.py): honest residuals pass, residuals built to fail are
found and, where it can be, repaired; the library's Result and the command line report it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from evodenoise import denoise, get_preset, inpaint, restore
from evodenoise.check import Check, check_residual, plane_names
from evodenoise.cli import app

TINY = dict(n_states=4, n_latents=8, hidden=(8,), n_parents=2, n_children=2, grad_states=2)


def tiny(epochs: int, patch_size: int = 4):
    return get_preset("fast").replace(epochs=epochs, min_visits=0, patch_size=patch_size, **TINY)


def scene(h: int = 96, w: int = 96) -> np.ndarray:
    """A smooth gray scene with edges, [0, 1]."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    base = 0.45 + 0.25 * np.sin(6 * x) * np.cos(5 * y)
    return (base + 0.2 * ((x > 0.5) & (y > 0.3))).astype(np.float32)


@pytest.mark.parametrize("seed", range(12))
def test_white_noise_residual_passes(seed):
    """Residuals that are exactly white noise of the assumed σ never fail (tests of 12
    draws, 3 planes, on grids of 16 and 8 values, masked and not)."""
    rng = np.random.default_rng(seed)
    clean = np.stack([scene(128, 160) * 255 * k for k in (1.0, 0.8, 0.6)])
    sigma = [5.0, 10.0, 25.0]
    noisy = clean + np.array(sigma)[:, None, None] * rng.standard_normal(clean.shape)
    observed = rng.random(clean.shape) > 0.3 if seed % 2 else None
    out, found = check_residual(noisy, clean, sigma, observed, plane_names(3, False))
    assert found.passed and not found.repaired and found.message == "passed", found
    assert out is clean
    small, found = check_residual(noisy[:, :40, :40], clean[:, :40, :40], sigma)
    assert found.passed, found
    for plane in check_residual(noisy, clean, sigma)[1].planes:
        assert 0.9 < plane["level"] < 1.1 and 0.8 < plane["structure"] < 1.25, plane


def test_bias_is_found_and_added_back():
    rng = np.random.default_rng(1)
    clean = np.full((3, 64, 64), 120.0)
    noisy = clean + 10 * rng.standard_normal(clean.shape)
    shifted = clean + np.array([0.0, 4.0, 0.0])[:, None, None]  # a colour cast on one plane
    out, found = check_residual(noisy, shifted, [10.0] * 3, names=plane_names(3, True))
    assert not found.passed and found.repaired
    assert found.message.startswith("bias of -0.4") and found.message.endswith(
        "σ in red-blue: added back"
    )
    assert abs((noisy - out)[1].mean()) < 0.1
    np.testing.assert_array_equal(out[0], shifted[0])  # the other planes untouched


def test_local_shift_is_blended_back_toward_the_input():
    rng = np.random.default_rng(2)
    clean = np.full((1, 128, 128), 90.0)
    noisy = clean + 8 * rng.standard_normal(clean.shape)
    wrong = clean.copy()
    wrong[0, 50:70, 60:80] += 25  # a 20x20 region of wrong level (a colour shift)
    out, found = check_residual(noisy, wrong, [8.0], names=["red-blue"])
    assert not found.passed and found.repaired and 0 < found.blended < 0.1
    assert found.message.startswith("local mean on ") and "% of red-blue: blended" in found.message
    assert abs((noisy - out)[0, 50:70, 60:80].mean()) < 1.0  # the shift is gone
    far = np.s_[0, :30, :30]
    np.testing.assert_array_equal(out[far], wrong[far])  # away from it: unchanged
    # a missing region is neither tested nor changed
    observed = np.ones_like(noisy, dtype=bool)
    observed[0, 40:80, 50:90] = False
    out, found = check_residual(noisy, wrong, [8.0], observed)
    assert found.passed and out is wrong


def test_sigma_ten_times_too_large_is_reported():
    """An over-smoothed result whose σ was ten times the noise: the residual is far weaker
    than the assumed noise where the image is flat, and holds the image's edges."""
    rng = np.random.default_rng(3)
    clean = scene(128, 128)[None] * 255
    noisy = clean + 5 * rng.standard_normal(clean.shape)
    blurred = clean.copy()
    for _ in range(6):  # a box blur, as a denoiser told σ 50 would smooth
        blurred = (blurred + np.roll(blurred, 1, 1) + np.roll(blurred, -1, 1)
                   + np.roll(blurred, 1, 2) + np.roll(blurred, -1, 2)) / 5  # fmt: skip
    out, found = check_residual(noisy, blurred, [50.0])
    assert not found.passed and not found.repaired and out is blurred
    assert "σ too large" in found.message
    plane = found.planes[0]
    assert plane["level"] < 0.2 and plane["structure"] > 1.5
    # noise known to be correlated: the same statistics, reported but not tested
    out, found = check_residual(noisy, blurred, [50.0], white=False)
    assert found.passed and found.planes == [plane]


def test_check_as_dict_is_plain():
    found = Check(False, True, ("a", "b"), 0.01, [{"plane": "gray"}])
    assert found.message == "a; b"
    assert json.loads(json.dumps(found.as_dict()))["message"] == "a; b"


def saturated_patch(seed: int = 0):
    """A neutral, softly shaded background with a small saturated red square."""
    rng = np.random.default_rng(seed)
    clean = np.full((64, 64, 3), 0.5, np.float32)
    clean += np.linspace(-0.1, 0.1, 64, dtype=np.float32)[:, None, None]
    clean[24:36, 30:42] = (0.95, 0.05, 0.05)
    noisy = clean + 0.04 * rng.standard_normal(clean.shape).astype(np.float32)
    return clean, noisy


def test_saturated_region_on_neutral_background(monkeypatch):
    """A short run leaves the red square's colour off (toward the gray around it): the check
    finds it and blends that region back toward the input, which brings the colour closer.
    The model's estimate alone; the second stage also brings the colour closer."""
    clean, noisy = saturated_patch()
    cfg = tiny(2).replace(second_stage="off")
    fixed, result = denoise(noisy, None, config=cfg, seed=0)
    assert not result.check.passed and result.check.repaired
    assert "local mean" in result.check.message
    monkeypatch.setattr(restore, "check_residual", lambda y, x, *a, **k: (x, Check(True)))
    raw, _ = denoise(noisy, None, config=cfg, seed=0)
    square = np.s_[24:36, 30:42]
    error_raw = np.abs(raw[square].mean((0, 1)) - clean[square].mean((0, 1))).max()
    error_fixed = np.abs(fixed[square].mean((0, 1)) - clean[square].mean((0, 1))).max()
    assert error_fixed < 0.6 * error_raw, (error_fixed, error_raw)
    away = np.s_[:8, :8]
    np.testing.assert_array_equal(fixed[away], raw[away])
    mended, _ = denoise(noisy, None, config=tiny(2), seed=0)  # with the second stage
    assert np.abs(mended[square].mean((0, 1)) - clean[square].mean((0, 1))).max() < error_raw


def test_sigma_ten_times_too_large_given_by_the_user():
    rng = np.random.default_rng(4)
    clean = scene()
    noisy = clean + 0.05 * rng.standard_normal(clean.shape).astype(np.float32)
    _, honest = denoise(noisy, 0.05, config=tiny(3), seed=0)
    assert honest.check.passed, honest.check
    _, result = denoise(noisy, 0.5, config=tiny(3), seed=0)
    assert not result.check.passed and not result.check.repaired
    assert "σ too large" in result.check.message


def test_inpainting_alone_is_not_checked_noisy_inpainting_is():
    clean = scene(48, 48)
    missing = np.random.default_rng(5).random(clean.shape) < 0.3
    _, result = inpaint(np.where(missing, 0, clean), missing, config=tiny(1), seed=0)
    assert result.check is None
    noisy = clean + 0.03 * np.random.default_rng(6).standard_normal(clean.shape)
    _, result = inpaint(noisy.astype(np.float32), missing, sigma=0.03, config=tiny(1), seed=0)
    assert result.check is not None and result.check.planes[0]["plane"] == "gray"


def test_command_line_reports_a_failed_check(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(7)
    np.save("in.npy", scene() * 255 + 13 * rng.standard_normal((96, 96)))
    sets = [f"{k}={v if k != 'hidden' else 8}" for k, v in TINY.items()]
    args = ["denoise", "in.npy", "-o", "out.png", "--json", "--epochs", "3", "--device", "cpu"]
    args += [a for s in sets for a in ("--set", s)] + ["--set", "patch_size=4"]
    result = CliRunner().invoke(app, args + ["--sigma", "130"])
    assert result.exit_code == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["check"]["passed"] is False and "σ too large" in record["check"]["message"]
    lines = [line for line in result.stderr.splitlines() if "check:" in line]
    assert len(lines) == 1 and lines[0].startswith("warning: in.npy: check: "), result.stderr
    result = CliRunner().invoke(app, args + ["--sigma", "13", "-f"])
    assert result.exit_code == 0 and json.loads(result.stdout)["check"]["passed"] is True
    assert "check:" not in result.stderr


def test_level_and_structure_findings_warn_only_for_a_given_sigma():
    from evodenoise.check import Check

    found = Check(False, True, ("local mean on 1% of gray: blended", "removed only 0.2σ (gray)"),
                  tests=("local", "level"))  # fmt: skip
    assert found.said(sigma_given=True) == found.message
    assert found.said(sigma_given=False) == "local mean on 1% of gray: blended"
    report = Check(False, False, ("removed only 0.2σ (gray)",), tests=("level",))
    assert report.said(sigma_given=False) == "" and report.said(sigma_given=True)
