"""The command line: config resolution, --shard, --max-memory,
the reported configuration, progress, and the module size targets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import FAST, assert_one_line_error, gray, json_lines, run

from evodenoise import restore
from evodenoise.options import UsageError, parse_shard, parse_size
from evodenoise.presets import get_preset, preset_name, resolve_config
from evodenoise.report import Reporter, progress_fraction

pytestmark = pytest.mark.usefixtures("in_tmp_path")

SRC = Path(__file__).resolve().parent.parent / "src" / "evodenoise"


# ---- config ------------------------------------------------------------------------------------


def test_resolve_config_is_the_one_place():
    assert preset_name(None) == "fast" and preset_name(None, command="inpaint") == "inpaint"
    assert resolve_config(None) == get_preset("fast")
    assert resolve_config(None, command="inpaint") == get_preset("inpaint")
    c = resolve_config("quality", epochs=3, overrides=["hidden=32,16", "lr_max=0.005"])
    assert (c.epochs, c.min_visits, c.hidden, c.lr_max) == (3, 0, (32, 16), 0.005)
    assert resolve_config(None, overrides={"epochs": 2}).min_visits == 0  # explicit epochs
    assert resolve_config(None, overrides={"hidden": 128, "n_states": 16.0}).hidden == (128,)
    for bad, needle in (
        (["nope=1"], "unknown config key"),
        (["n_states=x"], "an integer"),
        (["n_states"], "KEY=VALUE"),
        (["lr_max=nan"], "a number"),
    ):
        with pytest.raises(ValueError, match=needle):
            resolve_config(None, overrides=bad)
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_config("nope")


def test_benchmarks_use_the_same_resolver():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_run", SRC.parent.parent / "benchmarks" / "run.py"
    )
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    cfg, label = bench.build_config("default", bench.parse_task("inpaint-50"), 1, 4, {})
    assert cfg == resolve_config(None, command="inpaint", epochs=4) and label.startswith("inpaint")


def test_record_reports_the_config_that_ran(tmp_path, engine, monkeypatch):
    """The library may settle the config (e.g. raise epochs): --json and --save-log say so."""
    original = engine._run

    def settled(kind, image, mask, sigma, config, *args):
        out, result = original(kind, image, mask, sigma, config, *args)
        result.config = config.replace(epochs=config.epochs + 4)
        return out, result

    monkeypatch.setattr(engine, "_run", settled)
    gray(tmp_path / "a.png")
    r = run("denoise", "a.png", "--json", "--save-log", "log.json", *FAST)
    assert r.exit_code == 0, r.stderr
    rec = json_lines(r)[0]
    assert rec["config"]["epochs"] == 7 and rec["epochs"] == 7 and rec["preset"] == "fast"
    assert json.loads((tmp_path / "log.json").read_text())["config"]["epochs"] == 7


def test_default_preset_per_command_and_reported(tmp_path, engine):
    gray(tmp_path / "a.png")
    (tmp_path / "m.png").write_bytes(b"")
    from test_cli import mask_png

    mask_png(tmp_path / "m.png", np.random.default_rng(0).random((20, 24)) < 0.3)
    r = run("inpaint", "a.png", "--mask", "m.png", "--json", "--device", "cpu")
    assert json_lines(r)[0]["preset"] == "inpaint"
    assert engine.calls[-1]["config"] == get_preset("inpaint")
    r = run("denoise", "a.png", "--json", "--device", "cpu", "-f", "--epochs", "1")
    assert json_lines(r)[0]["preset"] == "fast"


# ---- --max-memory ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,value",
    [
        ("4G", 4 * 2**30),
        ("512M", 512 * 2**20),
        ("1.5GB", int(1.5 * 2**30)),
        ("2GiB", 2 * 2**30),
        ("1000000", 1000000),
        ("64k", 65536),
        ("1 T", 2**40),
    ],
)
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize(
    "text", ["", "G", "-1G", "0", "0.1", "4X", "1e3", "nan", "4 G B", "99999999999999999999T"]
)
def test_parse_size_rejects(text):
    with pytest.raises(UsageError):
        parse_size(text)


def test_max_memory_reaches_the_engine(tmp_path, engine, monkeypatch):
    seen = {}
    original = engine.denoise

    def denoise(image, sigma=None, **kwargs):
        seen.update(kwargs)
        kwargs.pop("max_memory", None)
        return original(image, sigma, **kwargs)

    monkeypatch.setattr(restore, "denoise", denoise)
    gray(tmp_path / "a.png")
    assert run("denoise", "a.png", *FAST).exit_code == 0
    assert seen["max_memory"] is None  # not given: the engine measures what is free
    assert run("denoise", "a.png", "-f", "--max-memory", "1.5G", *FAST).exit_code == 0
    assert seen["max_memory"] == int(1.5 * 2**30)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_one_line_error(
        run("denoise", "a.png", "-f", "--max-memory", "lots", *FAST), 2, "--max-memory"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ---- --shard -----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["1", "1/0", "2/2", "-1/3", "a/b", "1/2/3", ""])
def test_parse_shard_rejects(text):
    with pytest.raises(UsageError):
        parse_shard(text)


def test_shard_bad_value_is_usage_error(tmp_path, engine):
    gray(tmp_path / "a.png")
    assert_one_line_error(run("denoise", "a.png", "--shard", "3/3", *FAST), 2, "--shard")
    assert engine.calls == []


def test_shards_in_process_cover_once(tmp_path, engine):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    names = [f"img{i}.png" for i in range(7)]
    for n in names:
        gray(folder / n)
    gray(folder / "sub" / "deep.png")
    seen = []
    for k in range(3):
        r = run("denoise", "in", "-r", "--output-dir", "out", "--shard", f"{k}/3", "--json", *FAST)
        assert r.exit_code == 0, r.stderr
        seen += [x["input"] for x in json_lines(r)]
    assert sorted(seen) == sorted({*seen}) and len(seen) == 8
    r = run("denoise", "in", "--output-dir", "out2", "--shard", "9/10", "--json", *FAST)
    assert r.exit_code == 0 and json_lines(r) == [] and "no inputs" in r.stderr


_DRIVER = """
import sys, types, dataclasses
import numpy as np
fake = types.ModuleType("evodenoise.restore")

@dataclasses.dataclass
class Result:
    config: object
    seed: int
    device: str
    sigma: float
    seconds: float
    free_energy: list = dataclasses.field(default_factory=list)
    log: list = dataclasses.field(default_factory=list)
    fields: object = None
    noise: str = "given"

def denoise(image, sigma=None, *, config, seed, device, mask=None, callback=None,
            max_memory=None):
    return np.clip(image, 0, 1), Result(config, seed, str(device), 0.1, 0.0)

fake.Result, fake.denoise = Result, denoise
sys.modules["evodenoise.restore"] = fake
from evodenoise.cli import main
main(sys.argv[1:])
"""


def test_shards_in_separate_processes_cover_a_folder_exactly_once(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    names = sorted(f"p{i:02d}.png" for i in range(11))
    for n in names:
        gray(folder / n)
    (tmp_path / "driver.py").write_text(_DRIVER)
    n = 4
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(tmp_path / "driver.py"),
                "denoise",
                str(folder),
                "--output-dir",
                str(tmp_path / "out"),
                "--shard",
                f"{k}/{n}",
                "--json",
                "-q",
                "--device",
                "cpu",
                "--epochs",
                "1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for k in range(n)
    ]
    taken = []
    for k, p in enumerate(procs):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        mine = [Path(json.loads(line)["input"]).name for line in out.splitlines()]
        assert mine == names[k::n]  # every N-th of the sorted list, from K
        taken += mine
    assert sorted(taken) == names  # no gap, no overlap
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        x.replace(".png", "_denoised.png") for x in names
    )


# ---- progress ----------------------------------------------------------------------------------


def test_progress_uses_the_fraction_and_falls_back_to_epochs():
    assert progress_fraction({"phase": "train", "epoch": 2, "epochs": 8}) == 0.25
    assert progress_fraction({"phase": "train", "epoch": 2, "epochs": 8, "progress": 0.1}) == 0.1
    assert progress_fraction({"phase": "estimate", "band": 1, "bands": 4, "progress": 2}) == 1.0
    assert progress_fraction({}) == 0.0


def test_progress_lines_per_tenth_when_not_a_terminal(capsys):
    rep = Reporter()
    rep.start_file("a.png")
    for i in range(1, 41):
        rep.update(
            {
                "phase": "train",
                "epoch": i,
                "epochs": 40,
                "free_energy": -1.0,
                "sigma": 0.1,
                "progress": 0.9 * i / 40,
            },
            255.0,
        )
    for b in (1, 2):
        rep.update({"phase": "estimate", "band": b, "bands": 2, "progress": 0.9 + 0.05 * b}, 255)
    rep.end_file()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and all(ln.startswith("  a.png: ") for ln in lines)
    assert "epoch 5/40" in lines[0] and "σ=25.50" in lines[0] and "ETA" in lines[0]
    assert "100%" in lines[-1] and "estimate band 2/2" in lines[-1]


# ---- size targets ------------------------------------------------------------------------------


def test_module_sizes():
    sizes = {p.name: len(p.read_text().splitlines()) for p in SRC.glob("*.py")}
    assert sizes["cli.py"] <= 400, sizes["cli.py"]
    assert max(sizes.values()) <= 500, sizes
