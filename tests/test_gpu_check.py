"""benchmarks/gpu_check.sh --cpu-smoke: the lease-sized GPU check's stages, run on the CPU in
their short mode, so that a typo cannot waste a GPU lease (docs/gpu.md)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRESETS = ["fast", "quality", "inpaint", "gpu-house-25", "paper-house-25"]
needs_bash = pytest.mark.skipif(
    not all(shutil.which(c) for c in ("bash", "timeout", "tee", "mktemp")),
    reason="needs bash and coreutils",
)


@needs_bash
def test_cpu_smoke_runs_every_stage_and_skips_the_cuda_parts(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    env.pop("OUT", None)
    out = tmp_path / "out"
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu-smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    d = json.loads((out / "gpu_check.json").read_text())
    assert {"meta", "tests", "presets", "cpu_reference", "cli", "targets", "skipped"} <= set(d)
    assert d["meta"]["mode"] == "cpu-smoke" and d["meta"]["seed"] == 0
    assert (out / "gpu_check.log").is_file()

    # the cuda tests are selected by -m cuda, then skipped on a CPU
    assert d["tests"]["rc"] == 0
    assert d["tests"]["status"].startswith("skipped: needs CUDA")
    assert "skipped" in d["tests"]["summary"] and "passed" not in d["tests"]["summary"]

    assert [row["preset"] for row in d["presets"]] == PRESETS
    for row in d["presets"]:
        assert row["status"] == "ok", row
        assert row["epochs"] == 3 and len(row["epoch_seconds"]) == 3
        assert row["epoch_s"] > 0 and 5 < row["psnr"] < 60
        assert row["peak_gpu_gib"] is None and row["compile_capture_s"] is None
        assert row["profile"]["kernels_per_step"] is None  # profiled, but no CUDA kernels
        assert row["profile"]["aten_ops_per_step"] > 10
        # the CPU reference: the same run, so the same PSNR
        assert row["cpu_psnr"] == pytest.approx(row["psnr"], abs=0.01)
    assert all("full" in row for row in d["presets"][:3])

    cli = d["cli"]
    assert cli["status"] == "ok" and cli["rc"] == 0 and cli["peak_gpu_gib"] is None
    assert cli["psnr"] > cli["psnr_input"]

    assert d["targets"] == {}
    skipped = "\n".join(d["skipped"])
    for part in ("cuda tests", "kernels and synchronisations", "peak GPU memory"):
        assert part in skipped
    assert all(line.endswith("skipped: needs CUDA") for line in d["skipped"])
    # the table comes last, the skipped parts each on one line before it
    tail = r.stdout.strip().splitlines()[-12:]
    assert any(line.startswith("| preset |") for line in tail)
    assert tail[-1].startswith("CLI ")
    assert "cuda tests: skipped: needs CUDA" in r.stdout


@needs_bash
def test_gpu_check_rejects_unknown_arguments():
    r = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--no-such-option"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 2 and "unknown argument" in r.stderr
