"""Regression tests: each contract break found by adversarial use, one test each.

Streams (closed, full, broken stdout) and signals need a real process: those tests run
``python -m evodenoise`` (or a small driver with a stand-in engine) in a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_cli
from PIL import Image
from test_cli import FAST, assert_one_line_error, files, gray, json_lines, run

pytestmark = pytest.mark.usefixtures("in_tmp_path")

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "default"}
EXE = [sys.executable, "-m", "evodenoise"]
TINY = tiny_cli(epochs=1, chunk_size=64, estep_batch=32)


def sh(cmd: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run a shell command line (for redirections such as >&- and > /dev/full)."""
    return subprocess.run(
        ["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, env=ENV, timeout=timeout
    )


def assert_clean_failure(p, *needles):
    """Exit 1, one line on stderr saying why, never a traceback."""
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and "Exception ignored" not in p.stderr, p.stderr
    errs = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1, p.stderr
    for needle in needles:
        assert needle in errs[0], errs[0]


PY = " ".join(EXE)


# ---- 1-3 and the closed pipe: stdout closed, full or broken ----------------------------------


def test_image_to_closed_stdout(tmp_path):
    gray(tmp_path / "a.png")
    p = sh(f"{PY} denoise a.png --sigma 25 -o - {' '.join(TINY)} >&-", tmp_path)
    assert_clean_failure(p, "stdout is closed")
    assert files(tmp_path) == {"a.png"}


def test_json_to_full_device(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    p = sh(f"{PY} denoise nope.png --sigma 25 --json > /dev/full", tmp_path)
    assert p.returncode == 1 and "Traceback" not in p.stderr and "Exception ignored" not in p.stderr
    assert any("--json" in ln and "No space left" in ln for ln in p.stderr.splitlines()), p.stderr


def test_json_to_closed_stdout(tmp_path):
    gray(tmp_path / "a.png")
    p = sh(f"{PY} denoise a.png --sigma 25 --json {' '.join(TINY)} >&-", tmp_path)
    assert_clean_failure(p, "stdout is closed")
    assert files(tmp_path) == {"a.png"}  # noticed before any work


def test_json_to_a_closed_pipe(tmp_path):
    p = subprocess.Popen(
        [*EXE, "denoise", "nope1.png", "nope2.png", "--json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    p.stdout.close()  # the reader is gone before the first line
    with p.stderr:
        err = p.stderr.read()
    p.wait(timeout=180)
    assert p.returncode == 1 and "Traceback" not in err and "Exception ignored" not in err, err
    assert [ln for ln in err.splitlines() if "broken pipe" in ln], err  # said, in one line


# ---- 4: seeds the generator cannot take --------------------------------------------------------


@pytest.mark.parametrize("seed", ["99999999999999999999", str(2**63)])
def test_huge_seed_is_a_usage_error(tmp_path, engine, seed):
    gray(tmp_path / "a.png")
    assert_one_line_error(run("denoise", "a.png", "--seed", seed, *FAST), 2, "--seed")
    assert_one_line_error(
        run("corrupt", "a.png", "--sigma", "5", "--seed", seed, "-o", "n.npy"), 2, "--seed"
    )
    assert engine.calls == [] and files(tmp_path) == {"a.png"}


def test_largest_seed_runs(tmp_path):
    gray(tmp_path / "a.png", 10, 10)
    r = run("denoise", "a.png", "--seed", str(2**63 - 1), *TINY)
    assert r.exit_code == 0, r.stderr


# ---- minor ones ------------------------------------------------------------------------------


def test_extreme_finite_npy_values(tmp_path, engine):
    a = np.full((20, 24), 1.7e308)
    np.save(tmp_path / "big.npy", a)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning would be an error here
        r = run("denoise", "big.npy", *FAST)
    assert_one_line_error(r, 1, "big.npy", "data range")
    assert "NaN" not in r.stderr and "RuntimeWarning" not in r.stderr and engine.calls == []


def test_a_given_sigma_below_the_learned_floor_is_honoured(tmp_path):
    gray(tmp_path / "a.png", 10, 10)
    r = run("denoise", "a.png", "--sigma", "0.1", "--json", *TINY)  # floor: 0.5 in 8-bit units
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "a_denoised.png").exists()
    assert json.loads(r.stdout.splitlines()[-1])["sigma"] == pytest.approx(0.1, rel=1e-3)
    r = run("denoise", "a.png", "--sigma", "1e-60", *TINY)  # not even a float32
    assert_one_line_error(r, 2, "--sigma")


@pytest.mark.parametrize("fmt", ["gif", "tif", "png", "webp"])
def test_multi_frame_inputs_are_refused_alike(tmp_path, engine, fmt):
    frames = [Image.fromarray(np.full((20, 24), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / f"anim.{fmt}", save_all=True, append_images=frames[1:])
    with Image.open(tmp_path / f"anim.{fmt}") as im:
        if getattr(im, "n_frames", 1) < 2:
            pytest.skip(f"this Pillow writes a single-frame {fmt}")
    r = run("denoise", f"anim.{fmt}", *FAST)
    assert_one_line_error(r, 1, "holds 2 images")
    assert engine.calls == [] and files(tmp_path) == {f"anim.{fmt}"}


@pytest.mark.parametrize(
    "name", ["a\nb.png", "tab\there.png", "ret\rx.png", " lead.png", "it's.png"]
)
def test_odd_file_names_keep_one_line_errors(tmp_path, engine, name):
    (tmp_path / name).write_bytes(b"not an image")
    r = run("denoise", name, "--json", *FAST)
    assert_one_line_error(r, 1, "not an image")
    assert len(r.stderr.splitlines()) == 1  # the error alone: no summary for one input
    assert json_lines(r)[0]["input"] == name  # JSON keeps the name as it is


# ---- a second signal during shutdown -----------------------------------------------------------

_SLOW_SHUTDOWN = """
import sys, time, types, dataclasses
from pathlib import Path
import numpy as np
import evodenoise.restore as restore

def denoise(image, sigma=None, **kwargs):
    Path("started").touch()
    while True:
        time.sleep(0.02)

restore.denoise = denoise

class SlowErr:
    def __init__(self, inner):
        self.inner = inner
    def write(self, text):
        if "interrupted" in text:
            Path("shutting").touch()
            time.sleep(1.5)  # the second signal lands here
        return self.inner.write(text)
    def __getattr__(self, name):
        return getattr(self.inner, name)

sys.stderr = SlowErr(sys.stderr)
from evodenoise.cli import main
main(sys.argv[1:])
"""


def _wait_for(path: Path, p, timeout=120.0) -> None:
    t0 = time.time()
    while not path.exists():
        assert p.poll() is None, p.communicate()
        assert time.time() - t0 < timeout, f"{path.name} never appeared"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_second_signal_during_shutdown_keeps_130(tmp_path, sig):
    gray(tmp_path / "a.png")
    (tmp_path / "driver.py").write_text(_SLOW_SHUTDOWN)
    p = subprocess.Popen(
        [sys.executable, "driver.py", "denoise", "a.png", "--device", "cpu"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    _wait_for(tmp_path / "started", p)
    p.send_signal(sig)
    _wait_for(tmp_path / "shutting", p)
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (p.returncode, err)
    assert "Traceback" not in err and "interrupted" in err
    assert sorted(x.name for x in tmp_path.iterdir()) == [
        "a.png",
        "driver.py",
        "shutting",
        "started",
    ]


def test_force_never_replaces_a_fifo_or_a_link_to_one(tmp_path, engine):
    gray(tmp_path / "a.png")
    os.mkfifo(tmp_path / "out.png")
    os.symlink(tmp_path / "out.png", tmp_path / "link.png")
    for target in ("out.png", "link.png"):
        r = run("denoise", "a.png", "-o", target, "-f", *FAST)
        assert_one_line_error(r, 1, "not a regular file")
    assert stat.S_ISFIFO(os.stat(tmp_path / "out.png").st_mode) and engine.calls == []


def test_invert_mask_without_a_mask_is_a_usage_error(tmp_path, engine):
    gray(tmp_path / "a.png")
    assert_one_line_error(run("denoise", "a.png", "--invert-mask", *FAST), 2, "--invert-mask")
    assert engine.calls == []
