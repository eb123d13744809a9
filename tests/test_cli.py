"""Command line plumbing, with a stand-in engine so that every case runs in milliseconds.

The stand-in keeps the library's contract (signatures, Result fields, callback, ValueError on
bad input); tests/test_cli_e2e.py runs the real engine end to end on tiny images.
Every row of the bad-input list of the CLI's contract is a test here: exit code, one-line error, no file.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from evodenoise.cli import app
from evodenoise.encode import tile_fields
from evodenoise.imageio import encode_png16 as _encode_png16
from evodenoise.imageio import read_image
from evodenoise.presets import PRESET_NOTES, PRESETS, get_preset

H, W = 20, 24
RNG = np.random.default_rng(7)


# ---- helpers --------------------------------------------------------------------------------


def run(*args, input=None):
    result = CliRunner().invoke(app, [str(a) for a in args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def error_lines(result) -> list[str]:
    return [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]


def assert_one_line_error(result, code, *needles):
    assert result.exit_code == code, (result.exit_code, result.stderr)
    errs = error_lines(result)
    assert len(errs) == 1, result.stderr
    for needle in needles:
        assert needle.lower() in errs[0].lower(), errs[0]
    assert "Traceback" not in result.stderr


def json_lines(result) -> list[dict]:
    return [json.loads(ln) for ln in result.stdout.splitlines() if ln.strip()]


def save_png(path: Path, arr, mode=None) -> Path:
    if arr.dtype == np.uint16 and arr.ndim == 3:
        path.write_bytes(_encode_png16(arr))
    else:
        (
            Image.frombytes(mode, (arr.shape[1], arr.shape[0]), arr.tobytes())
            if mode
            else Image.fromarray(arr)
        ).save(path)
    return path


def gray(path: Path, h=H, w=W) -> Path:
    return save_png(path, RNG.integers(0, 256, (h, w)).astype(np.uint8))


def mask_png(path: Path, m) -> Path:
    return save_png(path, (np.asarray(m) * 255).astype(np.uint8))


pytestmark = pytest.mark.usefixtures("in_tmp_path")


FAST = ["--device", "cpu", "--epochs", "3"]


# ---- basics ---------------------------------------------------------------------------------


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and r.stdout.startswith("evodenoise ")


def test_python_dash_m_version():
    out = subprocess.run(
        [sys.executable, "-m", "evodenoise", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and out.stdout.startswith("evodenoise ")


@pytest.mark.parametrize("cmd", ["denoise", "inpaint", "corrupt"])
def test_help_teaches(cmd):
    r = run(cmd, "--help")
    assert r.exit_code == 0
    text = " ".join(r.stdout.split())
    assert "Examples" in text
    if cmd != "corrupt":
        assert "white/non-zero = missing" in text
        default_preset = "inpaint" if cmd == "inpaint" else "fast"
        assert "0-255" in text and f"[default: {default_preset}]" in text
        assert "[default: auto]" in text
        assert "[default: 0]" in text
        boxless = " ".join(r.stdout.replace("│", " ").split())
        for name in PRESETS:  # every preset with its cost
            if name != "default":
                assert f"{name}: {' '.join(PRESET_NOTES[name].split())}" in boxless
        assert "s on 2 CPU cores" in text  # presets say what they cost


def test_single_file_default_name(tmp_path, engine):
    gray(tmp_path / "a.png")
    r = run("denoise", "a.png", *FAST)
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "a_denoised.png").exists()
    assert r.stdout == ""  # human output is on stderr
    assert "a.png -> " in r.stderr and "learned" in r.stderr
    assert engine.calls[0]["sigma"] is None and engine.calls[0]["config"].epochs == 3


def test_inpaint_default_name_and_mask(tmp_path, engine):
    gray(tmp_path / "a.png")
    m = RNG.random((H, W)) < 0.3
    mask_png(tmp_path / "holes.png", m)
    r = run("inpaint", "a.png", "--mask", "holes.png", *FAST)
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "a_inpainted.png").exists()
    assert np.array_equal(engine.calls[0]["mask"], m)
    r = run("inpaint", "a.png", "--mask", "holes.png", "--invert-mask", "-f", *FAST)
    assert r.exit_code == 0
    assert np.array_equal(engine.calls[1]["mask"], ~m)


def test_sigma_units_8bit_16bit_and_float(tmp_path, engine):
    gray(tmp_path / "g8.png")
    save_png(tmp_path / "g16.png", RNG.integers(0, 65536, (H, W, 3)).astype(np.uint16))
    np.save(tmp_path / "f.npy", RNG.random((H, W)).astype(np.float32) * 4)
    for name, extra, sent, units in (
        ("g8.png", [], 25 / 255, 255),
        ("g16.png", [], 25 / 65535, 65535),
        ("f.npy", ["--data-range", "4"], 25 / 4, 4),
    ):
        r = run("denoise", name, "--sigma", "25", "--json", *extra, *FAST)
        assert r.exit_code == 0, r.stderr
        assert engine.calls[-1]["sigma"] == pytest.approx(sent)
        rec = json_lines(r)[0]
        assert rec["sigma"] == pytest.approx(25.0) and rec["data_range"] == units
    r = run("denoise", "g8.png", "--sigma", "auto", "--json", "-f", *FAST)
    assert engine.calls[-1]["sigma"] is None
    assert json_lines(r)[0]["sigma"] == pytest.approx(0.1 * 255)  # learned, 8-bit units


def test_json_record(tmp_path, engine):
    gray(tmp_path / "a.png")
    r = run("denoise", "a.png", "--json", "--seed", "5", "--preset", "quality", *FAST)
    assert r.exit_code == 0
    (rec,) = json_lines(r)
    for key in (
        "input",
        "output",
        "status",
        "psnr",
        "ssim",
        "sigma",
        "seconds",
        "device",
        "seed",
        "preset",
        "config",
        "error",
    ):
        assert key in rec
    assert rec["status"] == "ok" and rec["error"] is None and rec["seed"] == 5
    assert rec["preset"] == "quality" and rec["config"]["epochs"] == 3
    assert rec["config"]["n_states"] == get_preset("quality").n_states
    assert rec["device"] == "cpu" and rec["output"] == "a_denoised.png"
    assert engine.calls[0]["seed"] == 5


def test_reference_psnr_ssim(tmp_path, engine):
    from evodenoise.metrics import psnr, ssim

    clean = RNG.integers(0, 256, (H, W)).astype(np.uint8)
    save_png(tmp_path / "clean.png", clean)
    noisy = np.clip(clean + RNG.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    save_png(tmp_path / "noisy.png", noisy)
    r = run("denoise", "noisy.png", "--reference", "clean.png", "--json", *FAST)
    assert r.exit_code == 0, r.stderr
    rec = json_lines(r)[0]
    # the stand-in returns its input, so PSNR is that of noisy vs clean on the 8-bit scale
    assert rec["psnr"] == pytest.approx(
        psnr(clean.astype(float), noisy.astype(float), 255), abs=1e-3
    )
    assert rec["ssim"] == pytest.approx(
        ssim(clean.astype(float), noisy.astype(float), 255), abs=1e-4
    )
    assert "PSNR" in r.stderr and "SSIM" in r.stderr


def test_reference_shape_mismatch_fails_that_input(tmp_path, engine):
    gray(tmp_path / "a.png")
    gray(tmp_path / "clean.png", H + 2, W)
    before = files(tmp_path)
    r = run("denoise", "a.png", "--reference", "clean.png", *FAST)
    assert_one_line_error(r, 1, "reference")
    assert files(tmp_path) == before and engine.calls == []


def test_overrides_reach_the_engine(tmp_path, engine):
    gray(tmp_path / "a.png")
    r = run(
        "denoise",
        "a.png",
        "--set",
        "n_states=16",
        "--set",
        "hidden=32,16",
        "--set",
        "lr_max=0.005",
        "--set",
        "selection=best",
        "--epochs",
        "2",
        "--device",
        "cpu",
    )
    assert r.exit_code == 0, r.stderr
    c = engine.calls[0]["config"]
    assert (c.n_states, c.hidden, c.lr_max, c.selection, c.epochs) == (
        16,
        (32, 16),
        0.005,
        "best",
        2,
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--set", "nope=1"], "unknown config key"),
        (["--set", "n_states=abc"], "expected an integer"),
        (["--set", "lr_max=inf"], "expected a number"),
        (["--set", "n_states"], "KEY=VALUE"),
        (["--set", "selection=weird"], "selection must be one of"),
        (["--epochs", "-1"], "epochs"),
        (["--seed", "-3"], "--seed"),
        (["--sigma", "0"], "--sigma"),
        (["--sigma", "-5"], "--sigma"),
        (["--sigma", "abc"], "--sigma"),
        (["--sigma", "nan"], "--sigma"),
        (["--data-range", "0"], "--data-range"),
        (["--preset", "nope"], "unknown preset"),
        (["--device", "tpu"], "unknown device"),
        (["--format", "jpg"], "--format"),
        (["-o", "out.jpg"], ".jpg"),
        (["-q", "-v"], "quiet"),
        (["--force", "--skip-existing"], "cannot be combined"),
        (["-o", "x.png", "--output-dir", "d"], "cannot be combined"),
        (["--mask", "nope.png"], "no such file"),
        (["--reference", "nope.png"], "no such file"),
        (["--mask-dir", "nope"], "no such directory"),
        (["--suffix", "a/b"], "separator"),
    ],
)
def test_usage_errors_exit_2_before_any_work(tmp_path, engine, args, needle):
    gray(tmp_path / "a.png")
    before = files(tmp_path)
    r = run("denoise", "a.png", "--device", "cpu", *args)
    assert_one_line_error(r, 2, needle)
    assert files(tmp_path) == before
    assert engine.calls == []


def test_cuda_without_gpu_is_usage_error(tmp_path, engine, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gray(tmp_path / "a.png")
    before = files(tmp_path)
    for dev in ("cuda", "cuda:1"):
        r = run("denoise", "a.png", "--device", dev)
        assert_one_line_error(r, 2, "CUDA is not available")
    assert files(tmp_path) == before and engine.calls == []


def test_auto_device_without_gpu_runs_on_cpu(tmp_path, engine, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gray(tmp_path / "a.png")
    r = run("denoise", "a.png", "--epochs", "1")
    assert r.exit_code == 0 and engine.calls[0]["device"] == "cpu"


# ---- the bad-input list ---------------------------------------------------------------------


def test_bad_missing_file(tmp_path, engine):
    r = run("denoise", "nope.png", "--json", *FAST)
    assert_one_line_error(r, 1, "nope.png", "no such file")
    (rec,) = json_lines(r)
    assert rec["status"] == "error" and "no such file" in rec["error"]
    assert files(tmp_path) == set()


@pytest.mark.parametrize("kind", ["truncated", "text", "random"])
def test_bad_unreadable_images(tmp_path, engine, kind):
    if kind == "truncated":
        buf = io.BytesIO()
        Image.fromarray(RNG.integers(0, 256, (64, 64, 3)).astype(np.uint8)).save(buf, "PNG")
        (tmp_path / "bad.png").write_bytes(buf.getvalue()[:300])
    elif kind == "text":
        (tmp_path / "bad.png").write_text("hello, I am text\n")
    else:
        (tmp_path / "bad.png").write_bytes(bytes(RNG.integers(0, 256, 2000, dtype=np.uint8)))
    before = files(tmp_path)
    r = run("denoise", "bad.png", *FAST)
    assert_one_line_error(r, 1, "bad.png")
    assert files(tmp_path) == before and engine.calls == []


def test_bad_mask_wrong_size(tmp_path, engine):
    gray(tmp_path / "a.png")
    mask_png(tmp_path / "m.png", RNG.random((H + 1, W)) < 0.5)
    before = files(tmp_path)
    r = run("inpaint", "a.png", "--mask", "m.png", *FAST)
    assert_one_line_error(r, 1, "must match")
    assert files(tmp_path) == before and engine.calls == []


@pytest.mark.parametrize("fill,needle", [(0, "nothing as missing"), (1, "every value")])
def test_bad_mask_empty_or_full(tmp_path, engine, fill, needle):
    gray(tmp_path / "a.png")
    mask_png(tmp_path / "m.png", np.full((H, W), fill, bool))
    before = files(tmp_path)
    r = run("inpaint", "a.png", "--mask", "m.png", *FAST)
    assert_one_line_error(r, 1, needle)
    assert files(tmp_path) == before


def test_bad_mask_missing(tmp_path, engine):
    gray(tmp_path / "a.png")
    before = files(tmp_path)
    assert_one_line_error(run("inpaint", "a.png", *FAST), 2, "needs a mask")
    assert_one_line_error(run("inpaint", "a.png", "--mask", "nope.png", *FAST), 2, "no such file")
    (tmp_path / "junk.png").write_text("junk")
    before = files(tmp_path)
    assert_one_line_error(run("inpaint", "a.png", "--mask", "junk.png", *FAST), 2, "--mask")
    assert files(tmp_path) == before and engine.calls == []


def test_bad_image_smaller_than_patch(tmp_path, engine):
    gray(tmp_path / "tiny.png", 3, 5)  # below the smallest automatic patch (4x4)
    before = files(tmp_path)
    r = run("denoise", "tiny.png", *FAST)
    assert_one_line_error(r, 1, "smaller than")
    assert files(tmp_path) == before


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fmt", ["npy", "tif"])
def test_bad_non_finite_float(tmp_path, engine, bad, fmt):
    a = RNG.random((H, W)).astype(np.float32) * 255
    a[1, 2] = bad
    if fmt == "npy":
        np.save(tmp_path / "f.npy", a)
    else:
        tifffile.imwrite(tmp_path / "f.tif", a)
    before = files(tmp_path)
    r = run("denoise", f"f.{fmt}", *FAST)
    assert_one_line_error(r, 1, "NaN or infinite")
    assert files(tmp_path) == before and engine.calls == []


def test_bad_output_dir_not_writable(tmp_path, engine):
    gray(tmp_path / "a.png")
    (tmp_path / "afile").write_text("x")
    before = files(tmp_path)
    r = run("denoise", "a.png", "--output-dir", "afile/sub", *FAST)
    assert_one_line_error(r, 2, "output directory")
    r = run("denoise", "a.png", "--output-dir", "afile", *FAST)
    assert_one_line_error(r, 2, "not a directory")
    r = run("denoise", "a.png", "-o", "afile/x.png", *FAST)
    assert_one_line_error(r, 2, "output directory")
    assert files(tmp_path) == before and engine.calls == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_bad_output_dir_read_only(tmp_path, engine):
    gray(tmp_path / "a.png")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = run("denoise", "a.png", "--output-dir", "ro", *FAST)
        assert_one_line_error(r, 2, "cannot write")
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)


def test_bad_output_equals_input(tmp_path, engine):
    gray(tmp_path / "a.png")
    before = files(tmp_path)
    content = (tmp_path / "a.png").read_bytes()
    for args in (
        ["-o", "a.png", "--force"],
        ["-o", "./a.png", "-f"],
        ["--suffix", "", "--output-dir", ".", "--force"],
    ):
        r = run("denoise", "a.png", *args, *FAST)
        assert_one_line_error(r, 2, "overwrite an input")
    (tmp_path / "m.png").write_bytes(b"")
    mask_png(tmp_path / "m.png", RNG.random((H, W)) < 0.5)
    r = run("inpaint", "a.png", "--mask", "m.png", "-o", "m.png", "--force", *FAST)
    assert_one_line_error(r, 2, "overwrite an input")
    assert (tmp_path / "a.png").read_bytes() == content and engine.calls == []
    assert files(tmp_path) == before | {"m.png"}


def test_bad_output_exists_without_force(tmp_path, engine):
    gray(tmp_path / "a.png")
    (tmp_path / "a_denoised.png").write_bytes(b"keep me")
    r = run("denoise", "a.png", *FAST)
    assert_one_line_error(r, 1, "exists", "--force")
    assert (tmp_path / "a_denoised.png").read_bytes() == b"keep me" and engine.calls == []
    r = run("denoise", "a.png", "--force", *FAST)
    assert r.exit_code == 0
    assert (tmp_path / "a_denoised.png").read_bytes().startswith(b"\x89PNG")


def test_cuda_oom_names_the_setting(tmp_path, engine):
    import torch

    engine.raise_on["any"] = torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    gray(tmp_path / "a.png")
    before = files(tmp_path)
    r = run("denoise", "a.png", "--json", *FAST)
    assert_one_line_error(r, 1, "out of memory", "chunk_size", "batch_size")
    assert "chunk_size" in json_lines(r)[0]["error"]
    assert files(tmp_path) == before


def test_unexpected_engine_error_is_one_line(tmp_path, engine):
    engine.raise_on["any"] = RuntimeError("something odd\nsecond line")
    gray(tmp_path / "a.png")
    r = run("denoise", "a.png", *FAST)
    assert_one_line_error(r, 1, "something odd")
    assert not (tmp_path / "a_denoised.png").exists()


def test_ctrl_c_leaves_no_partial_output(tmp_path, engine):
    engine.raise_on["any"] = KeyboardInterrupt()
    gray(tmp_path / "a.png")
    before = files(tmp_path)
    r = run("denoise", "a.png", *FAST)
    assert r.exit_code == 130
    assert "interrupted" in r.stderr
    assert files(tmp_path) == before


def test_ctrl_c_during_write_leaves_no_partial_output(tmp_path, engine, monkeypatch):
    from evodenoise import encode

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(encode.os, "replace", interrupted)
    gray(tmp_path / "a.png")
    before = files(tmp_path)
    r = run("denoise", "a.png", *FAST)
    assert r.exit_code == 130
    assert files(tmp_path) == before  # neither the image nor a temporary file


# ---- batches --------------------------------------------------------------------------------


def _mixed_folder(folder: Path) -> dict[str, tuple]:
    """Ten mixed images, one of them corrupt; name -> (mode, dtype)."""
    folder.mkdir()
    made = {}
    for i in range(3):
        gray(folder / f"gray{i}.png")
        made[f"gray{i}"] = ("L", "uint8")
    for i in range(2):
        save_png(folder / f"rgb{i}.png", RNG.integers(0, 256, (H, W, 3)).astype(np.uint8))
        made[f"rgb{i}"] = ("RGB", "uint8")
    for i in range(2):
        save_png(folder / f"rgba{i}.png", RNG.integers(0, 256, (H, W, 4)).astype(np.uint8))
        made[f"rgba{i}"] = ("RGBA", "uint8")
    save_png(folder / "g16.png", RNG.integers(0, 65536, (H, W)).astype(np.uint16))
    made["g16"] = ("L", "uint16")
    save_png(folder / "rgb16.png", RNG.integers(0, 65536, (H, W, 3)).astype(np.uint16))
    made["rgb16"] = ("RGB", "uint16")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return made


def test_batch_of_ten_mixed_images(tmp_path, engine):
    made = _mixed_folder(tmp_path / "in")
    r = run("denoise", "in", "--output-dir", "out", "--json", *FAST)
    assert r.exit_code == 1
    recs = json_lines(r)
    assert len(recs) == 10
    assert [rec["input"] for rec in recs] == sorted(rec["input"] for rec in recs)
    bad = [rec for rec in recs if rec["status"] == "error"]
    assert len(bad) == 1 and "corrupt.png" in bad[0]["error"] and "corrupt.png" in bad[0]["input"]
    assert sum(rec["status"] == "ok" for rec in recs) == 9
    outs = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert outs == sorted(f"{n}_denoised.png" for n in made)
    for name, (mode, dtype) in made.items():
        src, src_info = read_image(tmp_path / "in" / f"{name}.png")
        out, info = read_image(tmp_path / "out" / f"{name}_denoised.png")
        assert (info.mode, info.dtype) == (mode, dtype), name
        if info.has_alpha:
            assert np.array_equal(info.alpha, src_info.alpha)
    assert "9 restored, 0 skipped, 1 failed" in r.stderr
    assert len(error_lines(r)) == 1

    n_calls = len(engine.calls)
    r2 = run("denoise", "in", "--output-dir", "out", "--json", "--skip-existing", *FAST)
    assert len(engine.calls) == n_calls  # no work redone
    recs2 = json_lines(r2)
    assert [x["status"] for x in recs2].count("skipped") == 9 and len(recs2) == 10
    assert r2.exit_code == 1  # the corrupt file still fails


def test_batch_beside_inputs_rerun_does_not_pick_up_outputs(tmp_path, engine):
    folder = tmp_path / "in"
    folder.mkdir()
    gray(folder / "a.png")
    gray(folder / "b.png")
    assert run("denoise", "in", *FAST).exit_code == 0
    assert {p.name for p in folder.iterdir()} == {
        "a.png",
        "b.png",
        "a_denoised.png",
        "b_denoised.png",
    }
    r = run("denoise", "in", "--skip-existing", "--json", *FAST)
    assert r.exit_code == 0 and [x["status"] for x in json_lines(r)] == ["skipped", "skipped"]


def test_fail_fast(tmp_path, engine):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.png").write_text("broken")
    gray(folder / "b.png")
    r = run("denoise", "in", "--json", "--fail-fast", *FAST)
    assert r.exit_code == 1 and len(json_lines(r)) == 1
    assert not (folder / "b_denoised.png").exists()
    assert "not started" in r.stderr
    r = run("denoise", "in", "--json", *FAST)
    assert r.exit_code == 1 and len(json_lines(r)) == 2 and (folder / "b_denoised.png").exists()


def test_output_option_needs_single_input(tmp_path, engine):
    gray(tmp_path / "a.png")
    gray(tmp_path / "b.png")
    r = run("denoise", "a.png", "b.png", "-o", "x.png", *FAST)
    assert_one_line_error(r, 2, "single input")


def test_two_inputs_one_output_is_usage_error(tmp_path, engine):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    gray(tmp_path / "d1" / "x.png")
    gray(tmp_path / "d2" / "x.png")
    before = files(tmp_path)
    r = run("denoise", "d1/x.png", "d2/x.png", "--output-dir", "out", *FAST)
    assert_one_line_error(r, 2, "would both write")
    assert files(tmp_path) == before and engine.calls == []
    r = run("denoise", "d1/x.png", "d2/x.tif", *FAST)  # different inputs, beside themselves
    assert r.exit_code == 1  # d2/x.tif does not exist: an input failure, not a collision


def test_recursive_mirrors_subfolders_and_skips_hidden_and_masks(tmp_path, engine):
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    gray(root / "a.png")
    gray(root / "sub" / "a.png")
    gray(root / "sub" / "deeper" / "c.png")
    gray(root / ".hidden" / "h.png")
    gray(root / ".dot.png")
    gray(root / "a_mask.png")
    (root / "notes.txt").write_text("not an image")
    r = run("denoise", "in", "--output-dir", "out", *FAST)
    assert r.exit_code == 0
    assert files(tmp_path / "out") == {"a_denoised.png"}
    r = run("denoise", "in", "-r", "--output-dir", "out2", "--json", *FAST)
    assert r.exit_code == 0, r.stderr
    assert files(tmp_path / "out2") == {
        "a_denoised.png",
        "sub",
        "sub/a_denoised.png",
        "sub/deeper",
        "sub/deeper/c_denoised.png",
    }


def test_suffix_and_format(tmp_path, engine):
    gray(tmp_path / "a.png")
    assert run("denoise", "a.png", "--suffix", "_clean", "--format", "npy", *FAST).exit_code == 0
    out = np.load(tmp_path / "a_clean.npy")
    assert out.dtype == np.float32 and out.shape == (H, W) and out.max() <= 255
    assert run("denoise", "a.png", "--format", "tif", *FAST).exit_code == 0
    assert tifffile.imread(tmp_path / "a_denoised.tif").dtype == np.uint8


def test_empty_folder_is_usage_error(tmp_path, engine):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run("denoise", "empty", *FAST), 2, "no image files")


def test_mask_dir_pairs_by_stem(tmp_path, engine):
    (tmp_path / "in").mkdir()
    (tmp_path / "masks").mkdir()
    gray(tmp_path / "in" / "a.png")
    gray(tmp_path / "in" / "b.png")
    gray(tmp_path / "in" / "c.png")
    ma = RNG.random((H, W)) < 0.3
    mb = RNG.random((H, W)) < 0.6
    mask_png(tmp_path / "masks" / "a.png", ma)
    mask_png(tmp_path / "masks" / "b_mask.png", mb)
    r = run("inpaint", "in", "--mask-dir", "masks", "--output-dir", "out", "--json", *FAST)
    assert r.exit_code == 1
    recs = {Path(x["input"]).name: x for x in json_lines(r)}
    assert recs["a.png"]["status"] == "ok" and recs["b.png"]["status"] == "ok"
    assert recs["c.png"]["status"] == "error" and "no mask for c" in recs["c.png"]["error"]
    assert np.array_equal(engine.calls[0]["mask"], ma) and np.array_equal(
        engine.calls[1]["mask"], mb
    )
    assert recs["b.png"]["missing_fraction"] == pytest.approx(mb.mean())


def test_mask_dir_prefers_stem_mask_and_never_pairs_an_input_with_itself(tmp_path, engine):
    """``STEM_mask.*`` is the explicit name: it wins over ``STEM.*``; and the input itself
    is never its own mask (a --mask-dir that is the input folder)."""
    (tmp_path / "in").mkdir()
    gray(tmp_path / "in" / "a.png")
    ma = RNG.random((H, W)) < 0.3
    mask_png(tmp_path / "in" / "a_mask.png", ma)
    gray(tmp_path / "in" / "c.png")
    r = run("inpaint", "in/a.png", "in/c.png", "--mask-dir", "in", "--output-dir", "out",
            "--json", *FAST)  # fmt: skip
    recs = {Path(x["input"]).name: x for x in json_lines(r)}
    assert recs["a.png"]["status"] == "ok" and recs["a.png"]["mask"].endswith("a_mask.png")
    assert np.array_equal(engine.calls[0]["mask"], ma)
    assert recs["c.png"]["status"] == "error" and "no mask for c" in recs["c.png"]["error"]
    # a separate mask folder holding both a.png and a_mask.png: a_mask.png, not ambiguity
    (tmp_path / "masks").mkdir()
    mask_png(tmp_path / "masks" / "a.png", ~ma)
    mask_png(tmp_path / "masks" / "a_mask.png", ma)
    r = run("inpaint", "in/a.png", "--mask-dir", "masks", "-o", "o.png", *FAST)
    assert r.exit_code == 0 and np.array_equal(engine.calls[-1]["mask"], ma)


def test_reference_dir_pairs_by_stem(tmp_path, engine):
    (tmp_path / "in").mkdir()
    (tmp_path / "ref").mkdir()
    gray(tmp_path / "in" / "a.png")
    gray(tmp_path / "in" / "b.png")
    gray(tmp_path / "ref" / "a.png")
    r = run("denoise", "in", "--reference-dir", "ref", "--output-dir", "out", "--json", *FAST)
    assert r.exit_code == 0
    recs = {Path(x["input"]).name: x for x in json_lines(r)}
    assert recs["a.png"]["psnr"] is not None and recs["b.png"]["psnr"] is None
    assert "no reference for b" in r.stderr
    r = run("denoise", "in", "--reference", "ref/a.png", "--output-dir", "out2", *FAST)
    assert_one_line_error(r, 2, "--reference-dir")


def test_denoise_with_mask_and_inpaint_with_sigma(tmp_path, engine):
    gray(tmp_path / "a.png")
    m = RNG.random((H, W)) < 0.3
    mask_png(tmp_path / "m.png", m)
    r = run("denoise", "a.png", "--mask", "m.png", "--sigma", "10", *FAST)
    assert r.exit_code == 0
    call = engine.calls[-1]
    assert call["kind"] == "denoise" and np.array_equal(call["mask"], m)
    assert call["sigma"] == pytest.approx(10 / 255)
    r = run("inpaint", "a.png", "--mask", "m.png", "--sigma", "10", *FAST)
    assert r.exit_code == 0
    assert engine.calls[-1]["kind"] == "inpaint" and engine.calls[-1]["sigma"] == pytest.approx(
        10 / 255
    )


def test_colour_mask_per_value(tmp_path, engine):
    save_png(tmp_path / "c.png", RNG.integers(0, 256, (H, W, 3)).astype(np.uint8))
    m = RNG.random((H, W, 3)) < 0.3
    mask_png(tmp_path / "m.png", m)
    assert run("inpaint", "c.png", "--mask", "m.png", *FAST).exit_code == 0
    assert engine.calls[0]["mask"].shape == (H, W, 3)


# ---- streams --------------------------------------------------------------------------------


def test_stdin_to_stdout(tmp_path, engine):
    buf = io.BytesIO()
    arr = RNG.integers(0, 256, (H, W, 3)).astype(np.uint8)
    Image.fromarray(arr).save(buf, "PNG")
    r = run("denoise", "-", "-o", "-", *FAST, input=buf.getvalue())
    assert r.exit_code == 0, r.stderr
    assert r.stdout_bytes.startswith(b"\x89PNG")
    out = np.asarray(Image.open(io.BytesIO(r.stdout_bytes)))
    assert np.array_equal(out, arr)  # the stand-in returns its input
    assert b"->" not in r.stdout_bytes and "->" in r.stderr
    assert files(tmp_path) == set()


def test_stdin_to_file_and_file_to_stdout(tmp_path, engine):
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (H, W)).astype(np.uint8)).save(buf, "PNG")
    r = run("denoise", "-", "-o", "x.png", "--json", *FAST, input=buf.getvalue())
    assert r.exit_code == 0 and (tmp_path / "x.png").exists()
    assert json_lines(r)[0]["input"] == "-"
    r = run("denoise", "x.png", "-o", "-", "-q", *FAST)
    assert r.exit_code == 0 and r.stdout_bytes.startswith(b"\x89PNG") and r.stderr == ""


def test_stream_usage_errors(tmp_path, engine):
    gray(tmp_path / "a.png")
    assert_one_line_error(run("denoise", "-", *FAST, input=b""), 2, "needs -o")
    assert_one_line_error(run("denoise", "a.png", "-o", "-", "--json", *FAST), 2, "stdout")
    assert_one_line_error(run("denoise", "-", "a.png", "-o", "-", *FAST), 2, "only input")
    r = run("denoise", "-", "-o", "-", *FAST, input=b"not an image")
    assert_one_line_error(r, 1, "stdin")
    assert r.stdout_bytes == b""


def test_quiet_and_verbose(tmp_path, engine):
    gray(tmp_path / "a.png")
    r = run("denoise", "a.png", "-q", *FAST)
    assert r.exit_code == 0 and r.stderr == ""
    r = run("denoise", "a.png", "-v", "-f", *FAST)
    assert "config:" in r.stderr and "epoch 3/3" in r.stderr and "8-bit" in r.stderr
    r = run("denoise", "nope.png", "-q", *FAST)
    assert r.exit_code == 1 and error_lines(r) and len(r.stderr.splitlines()) == 1


# ---- fields and log ---------------------------------------------------------------------------


def test_save_fields_and_log(tmp_path, engine):
    gray(tmp_path / "a.png")
    r = run(
        "denoise",
        "a.png",
        "--save-fields",
        "f/fields.png",
        "--save-log",
        "log.json",
        "--sigma",
        "20",
        *FAST,
    )
    assert r.exit_code == 0, r.stderr
    im = np.asarray(Image.open(tmp_path / "f" / "fields.png"))
    p = get_preset("fast").patch_size
    assert im.ndim == 2 and im.shape[0] >= 2 * p  # 5 fields in a 3x2 grid
    log = json.loads((tmp_path / "log.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2, 3]
    assert log["epochs"][0]["sigma"] == pytest.approx(20.0)  # input units
    for key in ("free_energy", "mean_active", "lr"):
        assert key in log["epochs"][0]
    assert log["config"]["epochs"] == 3


def test_save_fields_batch_needs_stem(tmp_path, engine):
    gray(tmp_path / "a.png")
    gray(tmp_path / "b.png")
    r = run("denoise", "a.png", "b.png", "--save-fields", "fields.png", *FAST)
    assert_one_line_error(r, 2, "{stem}")
    r = run(
        "denoise",
        "a.png",
        "b.png",
        "--save-fields",
        "fields_{stem}.png",
        "--save-log",
        "log_{stem}.json",
        *FAST,
    )
    assert r.exit_code == 0
    assert {"fields_a.png", "fields_b.png", "log_a.json", "log_b.json"} <= files(tmp_path)


def test_tile_fields_shapes():
    t = tile_fields(RNG.standard_normal((10, 4, 4)))
    assert t.shape == (3 * 5 + 1, 4 * 5 + 1) and 0 <= t.min() and t.max() <= 1
    t = tile_fields(RNG.standard_normal((4, 3, 3, 3)))
    assert t.shape == (2 * 4 + 1, 2 * 4 + 1, 3)


# ---- corrupt ---------------------------------------------------------------------------------


def test_corrupt_noise_npy_is_the_protocol(tmp_path):
    from evodenoise.corrupt import add_noise

    clean = RNG.integers(0, 256, (H, W)).astype(np.uint8)
    save_png(tmp_path / "c.png", clean)
    r = run("corrupt", "c.png", "--sigma", "25", "--seed", "3", "-o", "n.npy")
    assert r.exit_code == 0, r.stderr
    noisy = np.load(tmp_path / "n.npy")
    expected = add_noise(clean.astype(np.float64), 25, seed=3)
    np.testing.assert_allclose(noisy, expected, atol=1e-3)
    assert noisy.min() < 0 or noisy.max() > 255  # unclipped
    r = run("corrupt", "c.png", "--sigma", "25", "--seed", "3", "-o", "n.tif")
    t = tifffile.imread(tmp_path / "n.tif")
    assert t.dtype == np.float32
    np.testing.assert_allclose(t, expected, atol=1e-3)


def test_corrupt_missing_writes_mask(tmp_path):
    from evodenoise.corrupt import random_mask

    clean = RNG.integers(1, 256, (H, W, 3)).astype(np.uint8)
    save_png(tmp_path / "c.png", clean)
    r = run("corrupt", "c.png", "--missing", "0.5", "--seed", "1", "-o", "holes.png", "--json")
    assert r.exit_code == 0, r.stderr
    m = np.asarray(Image.open(tmp_path / "holes_mask.png")) > 0
    assert m.shape == (H, W, 3) and np.array_equal(m, random_mask((H, W, 3), 0.5, seed=1))
    holes = np.asarray(Image.open(tmp_path / "holes.png"))
    assert np.all(holes[m] == 0) and np.array_equal(holes[~m], clean[~m])
    rec = json_lines(r)[0]
    assert rec["mask"] == "holes_mask.png" and 0.4 < rec["missing_fraction"] < 0.6
    r = run(
        "corrupt", "c.png", "--missing", "0.3", "--per-pixel", "-o", "p.png", "--mask-out", "pm.png"
    )
    assert np.asarray(Image.open(tmp_path / "pm.png")).shape == (H, W)


def test_corrupt_then_inpaint_with_its_mask(tmp_path, engine):
    save_png(tmp_path / "c.png", RNG.integers(0, 256, (H, W, 3)).astype(np.uint8))
    assert run("corrupt", "c.png", "--missing", "0.4", "-o", "h.png").exit_code == 0
    r = run("inpaint", "h.png", "--mask", "h_mask.png", "--reference", "c.png", *FAST)
    assert r.exit_code == 0, r.stderr


def test_corrupt_png_warns_about_clipping(tmp_path):
    gray(tmp_path / "c.png")
    r = run("corrupt", "c.png", "--sigma", "10", "-o", "n.png")
    assert r.exit_code == 0 and "clips" in r.stderr


@pytest.mark.parametrize(
    "args,code,needle",
    [
        ([], 2, "--sigma"),
        (["--sigma", "0"], 2, "--sigma"),
        (["--sigma", "-2"], 2, "--sigma"),
        (["--missing", "1.5"], 2, "--missing"),
        (["--missing", "0"], 2, "--missing"),
        (["--sigma", "5", "-o2", "x.jpg"], 2, ".jpg"),
    ],
)
def test_corrupt_usage_errors(tmp_path, args, code, needle):
    gray(tmp_path / "c.png")
    before = files(tmp_path)
    out = [] if "-o2" in args else ["-o", "n.npy"]
    args = ["-o" if a == "-o2" else a for a in args]
    r = run("corrupt", "c.png", *args, *out)
    assert_one_line_error(r, code, needle)
    assert files(tmp_path) == before


def test_corrupt_bad_inputs_and_outputs(tmp_path):
    gray(tmp_path / "c.png")
    assert_one_line_error(
        run("corrupt", "nope.png", "--sigma", "5", "-o", "n.npy"), 1, "no such file"
    )
    assert_one_line_error(
        run("corrupt", "c.png", "--sigma", "5", "-o", "c.png", "-f"), 2, "overwrite"
    )
    (tmp_path / "n.npy").write_bytes(b"keep")
    assert_one_line_error(run("corrupt", "c.png", "--sigma", "5", "-o", "n.npy"), 1, "exists")
    assert (tmp_path / "n.npy").read_bytes() == b"keep"
    assert run("corrupt", "c.png", "--sigma", "5", "-o", "n.npy", "-f").exit_code == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["denoise", "x.png", "--seed", "abc"],
        ["denoise"],
        ["denoise", "--bogus", "x.png"],
        ["frobnicate"],
    ],
)
def test_parse_errors_are_one_line_exit_2(argv, capsys):
    from evodenoise.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "error:" in err and "Traceback" not in err


def test_one_failing_input_prints_one_line_and_no_summary(tmp_path, engine):
    """A single bad input: its error line alone (the summary belongs to batches)."""
    (tmp_path / "bad.png").write_bytes(b"not an image")
    r = run("denoise", "bad.png", "--sigma", "25", *FAST)
    assert r.exit_code == 1
    assert len(error_lines(r)) == 1
    assert "restored" not in r.stderr and "failed" not in r.stderr.replace("error:", "")


def test_a_given_sigma_is_honoured_on_16_bit_images_in_a_batch(tmp_path):
    """8- and 16-bit files in one folder with --sigma 20: σ 20 of 65535 is far below the learned
    σ's floor (0.5/255), and is honoured, not refused (real engine, tiny images). The σ that
    ran is reported in the input's own units."""
    (tmp_path / "in").mkdir()
    img = RNG.integers(0, 256, (16, 16)).astype(np.uint8)
    save_png(tmp_path / "in" / "a8.png", img)
    save_png(tmp_path / "in" / "b16.png", img.astype(np.uint16) * 257)
    r = run(
        "denoise",
        "in",
        "--sigma",
        "20",
        "--output-dir",
        "out",
        "--json",
        "--epochs",
        "1",
        "--set",
        "n_latents=8",
        "--set",
        "n_states=8",
        "--set",
        "n_parents=2",
        "--set",
        "n_children=2",
        "--set",
        "dictionary_size=8",
    )
    assert r.exit_code == 0, r.stderr
    recs = json_lines(r)
    assert [rec["status"] for rec in recs] == ["ok", "ok"]
    _, info = read_image(tmp_path / "out" / "b16_denoised.png")
    assert info.dtype == "uint16"
    assert [rec.get("sigma") for rec in recs] == [pytest.approx(20, rel=1e-3)] * 2, recs
