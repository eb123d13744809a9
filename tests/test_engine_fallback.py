"""A training step that fails to compile (no C++ compiler or Triton, an unsupported GPU, a
driver quirk) never ends a run: it goes on eagerly with one warning, and the configuration
that is reported says which path ran. The failure is forced on the CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_cli import gray, run
from test_train import gen, small_patches, tiny_cfg

from evodenoise.device import EngineWarning
from evodenoise.train import fit

pytestmark = pytest.mark.usefixtures("in_tmp_path")


@pytest.fixture
def broken_compiler(monkeypatch):
    """torch.compile whose compiled functions fail when first called, as a missing compiler
    makes them fail (before they run anything)."""

    def compile(fn, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError("InductorError: no working C++ compiler found\ndetails ...")

        return compiled

    monkeypatch.setattr(torch, "compile", compile)


def test_fit_goes_on_eagerly_and_says_so(broken_compiler):
    y = small_patches()
    with pytest.warns(EngineWarning, match="compiling the training step failed .*uncompiled"):
        failed = fit(y, None, tiny_cfg(epochs=2, compile="on"), gen(0))
    eager = fit(y, None, tiny_cfg(epochs=2, compile="off"), gen(0))
    assert failed.config.compile == "off" and eager.config.compile == "off"
    assert torch.equal(failed.states, eager.states)  # the failure changed nothing
    for a, b in zip(failed.model.parameters(), eager.model.parameters()):
        assert torch.equal(a, b)


def test_cli_prints_one_warning_line_and_reports_the_path(tmp_path, broken_compiler):
    gray(tmp_path / "a.png")
    tiny = ["--device", "cpu", "--epochs", "2", "--set", "compile=on", "--set", "n_latents=8",
            "--set", "hidden=8", "--set", "n_states=4", "--set", "n_parents=2",
            "--set", "n_children=2", "--set", "patch_size=4", "--set", "grad_states=2"]  # fmt: skip
    r = run("denoise", "a.png", "--sigma", "20", "--json", *tiny)
    assert r.exit_code == 0, r.stderr
    warned = [ln for ln in r.stderr.splitlines() if "compiling the training step failed" in ln]
    assert len(warned) == 1 and warned[0].startswith("warning: ")
    assert "Traceback" not in r.stderr
    record = json.loads(r.stdout.splitlines()[0])
    assert record["status"] == "ok" and record["config"]["compile"] == "off"
    assert np.isfinite(record["sigma"])
