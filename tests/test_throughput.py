"""benchmarks/throughput.py: the work model behind its projection, and a tiny end-to-end run."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evodenoise

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tp():
    path = ROOT / "benchmarks" / "throughput.py"
    spec = importlib.util.spec_from_file_location("evodenoise_bench_throughput", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_paper_house_25_is_about_one_teraflop_per_epoch(tp):
    # docs/method.md: ≈ 1–1.2 TFLOP per epoch at the paper's House σ=25 settings.
    cfg = evodenoise.get_preset("paper-house-25")
    work = tp.work_per_epoch(cfg, 249 * 249, 1)
    assert work["steps"] == 1938
    # per patch: 200 re-scored (16384 FLOP each), 360 one-bit children (8192), 200 × 3 gradient
    assert work["flops"] == 249 * 249 * (200 * 16384 + 360 * 8192 + 3 * 200 * 16384)
    assert 0.9e12 < work["flops"] < 1.2e12
    assert work["evaluations"] == 249 * 249 * (200 + 360 + 200)


def test_train_patches_and_grad_states_reduce_the_work(tp):
    cfg = evodenoise.get_preset("fast")
    full = tp.work_per_epoch(cfg, 10_000, 1)
    half = tp.work_per_epoch(cfg.replace(train_patches=5_000), 10_000, 1)
    assert half["patches"] == 5_000 and half["flops"] * 2 == full["flops"]
    fewer = tp.work_per_epoch(cfg.replace(grad_states=8), 10_000, 1)
    assert fewer["flops"] < full["flops"]


def test_tiny_run_writes_rows(tp, tmp_path):
    yy, xx = np.mgrid[0:56, 0:56]
    Image.fromarray((60 + 120 * ((xx // 7 + yy // 7) % 2)).astype(np.uint8)).save(
        tmp_path / "a.png"
    )
    out = tmp_path / "t.json"
    rc = tp.main(
        [
            "--image",
            str(tmp_path / "a.png"),
            "--presets",
            "fast",
            "--epochs",
            "1",
            "--project",
            "--json",
            str(out),
        ]
    )
    assert rc == 0
    row = json.loads(out.read_text())["rows"][0]
    # fast chooses its patch size (4, 6 or 8) from the image
    assert row["patches"] in [(57 - p) ** 2 for p in (4, 6, 8)] and row["epoch_seconds"] > 0
    assert row["ops_per_step"] > 10  # an E-step and an Adam step are many operator calls
    assert row["gpu_projected_s"] == max(row["gpu_flop_bound_s"], row["gpu_launch_bound_s"])


def test_project_counts_a_captured_graph_as_one_launch_plus_its_kernels(tp):
    cfg = evodenoise.get_preset("paper-house-25")
    row = {
        "epochs_of_preset": 500,
        "steps": 1938,
        "flops": 1e12,
        "launches_per_step": 150,
        "kernels_per_step": 50,
    }
    out = tp.project(row, cfg)
    assert out["gpu_flop_bound_s"] == pytest.approx(500 * 1e12 / 25e12)
    # exact alternation: one graph and one random draw per 8 steps (8 µs each), 50 kernels of 1 µs
    assert out["gpu_launch_bound_s"] == pytest.approx(500 * 1938 * (2 + 50) * 1e-6)
    assert out["gpu_projected_eager_s"] == pytest.approx(500 * 1938 * 150 * 8e-6)
    del row["kernels_per_step"]  # no compiled count: the eager launches bound the kernels
    assert tp.project(row, cfg)["gpu_launch_bound_s"] == pytest.approx(500 * 1938 * 152e-6)


def test_gpu_bench_fails_in_one_line_without_cuda():
    import subprocess

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0
    assert r.stderr.strip().count("\n") == 0 and "needs a CUDA device" in r.stderr
