"""Regression tests of contract breaks found by trying the command line as users would:
options given twice, side files that fail after the output was written, outputs made by
another process meanwhile, refusals that must say what they mean."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
from conftest import tiny_cli
from test_cli import FAST, assert_one_line_error, files, gray, json_lines, mask_png, run

from evodenoise import restore, save
from evodenoise.config import Config
from evodenoise.memory import MemoryBudgetError, cap_sizes, size_text

pytestmark = pytest.mark.usefixtures("in_tmp_path")


# ---- options given twice ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--mask", "m.png", "--mask", "m.png"], "--mask"),
        (["-m", "m.png", "--mask", "n.png"], "--mask"),
        (["--sigma", "5", "-s", "6"], "--sigma"),
        (["-o", "a.png", "-o", "b.png"], "--output"),
        (["--reference", "x.png", "--reference", "x.png"], "--reference"),
    ],
)
def test_a_single_value_option_given_twice_is_a_usage_error(tmp_path, engine, args, flag):
    gray(tmp_path / "x.png")
    mask_png(tmp_path / "m.png", np.eye(20, 24))
    mask_png(tmp_path / "n.png", np.eye(20, 24))
    r = run("inpaint", "x.png", *args, *FAST)
    assert_one_line_error(r, 2, flag, "given 2 times")
    assert not engine.calls and files(tmp_path) == {"x.png", "m.png", "n.png"}


def test_repeatable_options_stay_repeatable(tmp_path, engine):
    gray(tmp_path / "x.png")
    r = run("denoise", "x.png", "--sigma", "5", "--set", "seed=1", "--set", "n_states=4", *FAST)
    assert r.exit_code in (0, 2) and "given 2 times" not in r.stderr


# ---- float inputs on the 0..1 scale -----------------------------------------------------------


def test_npy_on_a_unit_scale_warns_once(tmp_path, engine):
    np.save(tmp_path / "u.npy", np.random.default_rng(0).random((20, 24)).astype(np.float32))
    r = run("denoise", "u.npy", "--sigma", "0.1", *FAST)
    assert r.exit_code == 0
    warned = [ln for ln in r.stderr.splitlines() if "--data-range 1" in ln]
    assert len(warned) == 1 and warned[0].startswith("warning:"), r.stderr
    r = run("denoise", "u.npy", "--sigma", "0.1", "--data-range", "1", "-f", *FAST)
    assert r.exit_code == 0 and "--data-range 1" not in r.stderr


def test_npy_on_the_255_scale_does_not_warn(tmp_path, engine):
    np.save(tmp_path / "v.npy", (np.random.default_rng(0).random((20, 24)) * 255).astype("f4"))
    r = run("denoise", "v.npy", "--sigma", "5", *FAST)
    assert r.exit_code == 0 and "warning" not in r.stderr


# ---- side files ---------------------------------------------------------------------------


def test_save_fields_equal_to_the_output_is_named_as_such(tmp_path, engine):
    gray(tmp_path / "x.png")
    r = run("denoise", "x.png", "-o", "o.png", "--save-fields", "o.png", *FAST)
    assert_one_line_error(r, 2, "--save-fields", "the output", "same file")
    assert "would both write" not in r.stderr


@pytest.mark.parametrize("side", ["--save-log", "--save-fields", "--compare"])
def test_a_full_disk_for_a_side_file_names_that_file(tmp_path, engine, monkeypatch, side):
    gray(tmp_path / "x.png")
    name = "side.json" if side == "--save-log" else "side.png"
    real_write = save.write_image

    def full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def full_image(path, *a, **k):
        if str(path) == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(path, *a, **k)

    monkeypatch.setattr(save, "atomic_write_bytes", full)
    monkeypatch.setattr(save, "write_image", full_image)
    r = run("denoise", "x.png", "-o", "o.png", side, name, "--json", "--sigma", "5", *FAST)
    assert_one_line_error(r, 1, name, "No space left", "o.png")
    assert "cannot write 'o.png'" not in r.stderr and "cannot write o.png" not in r.stderr
    (record,) = json_lines(r)
    assert record["status"] == "error" and record["output"] == "o.png"
    assert (tmp_path / "o.png").exists() and not (tmp_path / name).exists()


# ---- outputs that exist ------------------------------------------------------------------------


def test_a_broken_link_at_the_output_is_not_skipped(tmp_path, engine):
    gray(tmp_path / "x.png")
    os.symlink(tmp_path / "nowhere.png", tmp_path / "x_denoised.png")
    r = run("denoise", "x.png", "--skip-existing", "--sigma", "5", *FAST)
    assert_one_line_error(r, 1, "broken symbolic link")
    assert "skipped" not in r.stderr.replace("0 skipped", "")
    assert os.path.islink(tmp_path / "x_denoised.png")


def test_an_output_made_meanwhile_by_another_process_is_skipped(tmp_path, engine, monkeypatch):
    """Unsharded processes over one folder with --skip-existing: an input whose output another
    process wrote while this one worked counts as skipped (exit 0), and is left as it is."""
    gray(tmp_path / "a.png")
    gray(tmp_path / "b.png")
    fake = engine.denoise

    def other_process_too(image, *a, **k):
        for stem in ("a", "b"):
            (tmp_path / f"{stem}_denoised.png").write_bytes(b"theirs")
        return fake(image, *a, **k)

    monkeypatch.setattr(restore, "denoise", other_process_too)
    r = run("denoise", "a.png", "b.png", "--skip-existing", "--sigma", "5", "--json", *FAST)
    assert r.exit_code == 0, r.stderr
    assert [x["status"] for x in json_lines(r)] == ["skipped", "skipped"]
    assert "made meanwhile" in r.stderr and "error" not in r.stderr
    assert (tmp_path / "a_denoised.png").read_bytes() == b"theirs"
    r = run("denoise", "a.png", "--sigma", "5", *FAST)  # without --skip-existing: an error
    assert_one_line_error(r, 1, "exists")


# ---- corrupt ------------------------------------------------------------------------------------


def test_corrupt_that_drops_nothing_says_so(tmp_path):
    gray(tmp_path / "x.png")
    r = run("corrupt", "x.png", "--missing", "1e-300", "-o", "c.png")
    assert r.exit_code == 0
    assert any(ln.startswith("warning:") and "dropped none" in ln for ln in r.stderr.splitlines())
    r = run("corrupt", "x.png", "--missing", "0.5", "-o", "d.png")
    assert "dropped none" not in r.stderr


# ---- memory -------------------------------------------------------------------------------------


def test_size_text_tells_close_sizes_apart():
    need, have = size_text(483_183_820, 483_183_000)
    assert need != have
    assert size_text(2**30) == ("1 GiB",) and size_text(0) == ("0 bytes",)


def test_a_max_memory_refusal_names_the_limit(tmp_path):
    gray(tmp_path / "x.png")
    r = run("denoise", "x.png", "--sigma", "5", "--max-memory", "1K", *tiny_cli())
    assert_one_line_error(r, 1, "--max-memory allows 1 KiB", "MiB")
    assert "is free" not in r.stderr and "0.00 GB" not in r.stderr


def test_the_free_memory_refusal_says_free():
    e = MemoryBudgetError((1, 20, 24), 3 * 2**30, 2**30, 0.5, "cpu")
    assert "1 GiB is free on cpu" in str(e) and "3 GiB" in str(e)
    assert "max_memory allows 1 GiB" in str(e.as_limit())


@pytest.mark.parametrize(
    "key, value", [("batch_size", 10**8), ("estep_batch", 10**8), ("dictionary_size", 10**8)]
)
def test_absurd_sizes_are_capped_at_the_image(tmp_path, key, value):
    gray(tmp_path / "x.png")
    r = run("denoise", "x.png", "--sigma", "5", "--json", *tiny_cli(**{key: value}))
    assert r.exit_code == 0, r.stderr
    (record,) = json_lines(r)
    assert record["config"][key] <= 20 * 24 * 4


def test_cap_sizes_keeps_sizes_in_bounds():
    cfg = Config(batch_size=32, estep_batch=256, dictionary_size=4096, patch_size=0)
    assert cap_sizes(cfg, 1000, 1000) is cfg
    small = cap_sizes(cfg.replace(batch_size=10**9, chunk_size=10**9), 10, 10)
    assert (small.batch_size, small.estep_batch, small.chunk_size) == (100, 100, 100)
    known = cap_sizes(cfg.replace(batch_size=10**9, patch_size=4), 10, 10)
    assert (known.batch_size, known.estep_batch, known.chunk_size) == (49, 49, 0)


def test_capping_an_absurd_batch_does_not_change_the_result(tmp_path):
    """A batch larger than the pool runs as a batch of the pool's size."""
    gray(tmp_path / "x.png", 12, 12)  # 81 patches of 4x4
    outs = []
    for b in (81, 10**7):
        run("denoise", "x.png", "--sigma", "20", "-o", f"o{b}.npy", *tiny_cli(batch_size=b))
        outs.append(np.load(tmp_path / f"o{b}.npy"))
    assert np.array_equal(outs[0], outs[1])


# ---- a diverged training ----------------------------------------------------------------------


def test_a_diverged_training_is_named(tmp_path):
    gray(tmp_path / "x.png")
    r = run("denoise", "x.png", "--sigma", "20", *tiny_cli(lr_max="1e300"))
    assert_one_line_error(r, 1, "training diverged", "lr_max")
    assert files(tmp_path) == {"x.png"}


def test_a_non_finite_result_of_the_engine_is_refused_as_diverged(tmp_path, monkeypatch, engine):
    gray(tmp_path / "x.png")
    fake = engine.denoise

    def nan_engine(image, *a, **k):
        out, result = fake(image, *a, **k)
        return np.full_like(out, np.nan), result

    monkeypatch.setattr(restore, "denoise", nan_engine)
    r = run("denoise", "x.png", "--sigma", "5", "--json", *FAST)
    assert_one_line_error(r, 1, "diverged")
    assert json.loads(r.stdout)["output"] is None and files(tmp_path) == {"x.png"}


# ---- quiet edges --------------------------------------------------------------------------------


def test_an_all_black_image_runs_without_numpy_warnings(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((20, 24), np.uint8)).save(tmp_path / "k.png")
    r = run("denoise", "k.png", "--reference", "k.png", *tiny_cli())  # warnings are errors
    assert r.exit_code == 0, r.stderr
    assert "RuntimeWarning" not in r.stderr and "encountered" not in r.stderr  # numpy's


def test_a_tiny_16_bit_rgb_bomb_prints_one_line(tmp_path):
    import struct
    import zlib

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 10000, 10000, 16, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    r = run("denoise", "b.png", "--sigma", "5", *FAST)
    assert_one_line_error(r, 1, "decompression bomb")
    assert r.stderr.count("\n") == 1, r.stderr


@pytest.mark.slow  # three interpreters start (about 13 s); the stand-in test above is the fast one
def test_three_unsharded_processes_with_skip_existing_all_succeed(tmp_path):
    """Three processes over one folder, not sharded, resumable: whichever makes an output,
    every process exits 0 and every output is made."""
    import subprocess
    import sys

    (tmp_path / "in").mkdir()
    for k in range(4):
        gray(tmp_path / "in" / f"p{k}.png", 12, 12)
    argv = [sys.executable, "-m", "evodenoise", "denoise", "in", "-O", "out", "--sigma", "20"]
    argv += ["--skip-existing", "-q", *tiny_cli()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(argv, cwd=tmp_path, env=env, stderr=subprocess.PIPE) for _ in "abc"]
    results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
    for p in procs:
        p.stderr.close()
    assert all(code == 0 for code, _ in results), results
    assert sorted(os.listdir(tmp_path / "out")) == [f"p{k}_denoised.png" for k in range(4)]
