"""SIGTERM and SIGINT at several points of a real (tiny) run, once and twice in quick
succession: exit code 130, no traceback, no partial or temporary file.

The points are read off the run's own progress lines (stderr is not a terminal: a line per
tenth of the run). The default suite sends two cases; the whole matrix is marked slow.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_cli
from PIL import Image

from evodenoise.imageio import read_image

TINY_LONG = tiny_cli(epochs=400)


def _run_and_signal(tmp_path: Path, sig, at_percent: int, times: int):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 24), dtype=np.uint8)).save(
        tmp_path / "a.png"
    )
    p = subprocess.Popen(
        [sys.executable, "-m", "evodenoise", "denoise", "a.png", "--sigma", "25", *TINY_LONG],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines: list[str] = []
    reached = threading.Event()

    def read():
        for line in p.stderr:
            lines.append(line)
            stripped = line.strip()
            if stripped.startswith("a.png:") and "%" in stripped:
                percent = int(stripped.split(":", 1)[1].split("%")[0])
                if percent >= at_percent:
                    reached.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert reached.wait(timeout=300), "".join(lines)
    for i in range(times):
        if i:
            time.sleep(0.01)
        p.send_signal(sig)
    p.wait(timeout=120)
    reader.join(timeout=10)
    p.stdout.close()
    p.stderr.close()
    return p.returncode, "".join(lines)


def _check(tmp_path: Path, code: int, err: str, may_finish: bool = False) -> None:
    names = sorted(x.name for x in tmp_path.iterdir())
    assert "Traceback" not in err, err
    assert not [n for n in names if n.endswith(".part") or n.startswith(".")], names
    if code == 0 and may_finish:  # the run ended before the signal: a complete output
        assert names == ["a.png", "a_denoised.png"]
        read_image(tmp_path / "a_denoised.png")
        return
    assert code == 130, (code, err)
    assert "interrupted" in err
    assert names == ["a.png"], names


@pytest.mark.parametrize("sig,at,times", [(signal.SIGTERM, 10, 1), (signal.SIGINT, 50, 2)])
def test_signal_during_a_real_run(tmp_path, sig, at, times):
    code, err = _run_and_signal(tmp_path, sig, at, times)
    _check(tmp_path, code, err)


@pytest.mark.slow
@pytest.mark.parametrize("times", [1, 2])
@pytest.mark.parametrize("at", [10, 50, 90, 100])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_matrix(tmp_path, sig, at, times):
    code, err = _run_and_signal(tmp_path, sig, at, times)
    _check(tmp_path, code, err, may_finish=at >= 90)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_the_command_line_is_imported(sig):
    """A signal during the imports (the first tenth of a second) exits 130 with one line, no
    traceback (was: a KeyboardInterrupt traceback, or 143 for SIGTERM)."""
    code = f"""
import builtins, os, time
import evodenoise.__main__ as entry
real_import = builtins.__import__
def imported(name, *args, **kwargs):
    if name == "cli" or name.endswith(".cli"):
        os.kill(os.getpid(), {int(sig)})
        time.sleep(5)
    return real_import(name, *args, **kwargs)
builtins.__import__ = imported
entry.run()
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 130, r.stderr
    assert r.stderr.strip() == "interrupted; no partial output was written"
