"""benchmarks/poisson.py: the Poisson–Gaussian protocol and the calibrated NL-means peer."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def poisson():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("poisson", ROOT / "benchmarks" / "poisson.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(ROOT / "benchmarks"))


def test_noise_follows_protocol(poisson):
    clean = np.full((200, 200), 0.5)
    noisy = poisson.add_noise(clean, 10.0, 0.01, (0, 0, 10000))
    np.testing.assert_array_equal(noisy, poisson.add_noise(clean, 10.0, 0.01, (0, 0, 10000)))
    assert not np.array_equal(noisy, poisson.add_noise(clean, 10.0, 0.01, (0, 1, 10000)))
    assert noisy.dtype == np.float32 and abs(noisy.mean() - 0.5) < 0.01
    assert noisy.var() == pytest.approx(0.5 / 10 + 0.01**2, rel=0.05)  # a·x + b²
    counts = poisson.add_noise(clean, 4.0, 0.0, 1) * 4  # no read noise: whole photon counts
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-5)


def test_calibrated_nlm_and_table(poisson):
    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(0.2, 0.8, 48), (48, 1))
    noisy = (clean + 0.1 * rng.standard_normal(clean.shape)).astype(np.float32)
    out, h = poisson.run_method("nlm-cal", noisy, None, 0, clean)
    assert poisson.psnr(out, clean) > poisson.psnr(noisy, clean) + 3 and h > 0
    rows = [{"image": "a", "peak": 4.0, "method": m, "psnr": 20.0} for m in ("input", "x")]
    assert poisson.table(rows).splitlines()[2] == "| a | 4 | 20.00 | 20.00 |"


def test_known_level_function_is_given_to_evodenoise(poisson, monkeypatch):
    import evodenoise

    seen = {}

    def fake(noisy, sigma=None, **kw):
        seen.update(sigma=sigma, gain=kw.get("gain"))
        return noisy, type("R", (), {"sigma": 0.1})()

    monkeypatch.setattr(evodenoise, "denoise", fake)
    args = type("A", (), {"read_noise": 2.0})()
    noisy = np.zeros((8, 8), np.float32)
    out, sigma = poisson.run_known("evodenoise-known", noisy, None, 0, noisy, 4.0, args)
    assert seen == {"sigma": pytest.approx(2 / 255), "gain": 0.25} and sigma == pytest.approx(25.5)
