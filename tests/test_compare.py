"""``--compare``: the side-by-side image (compare.py) and its place among the side files; batch
progress (files done, batch ETA) and shell completion."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_cli import FAST, RNG, assert_one_line_error, files, gray, json_lines, run, save_png

from evodenoise.compare import caption, compare_image, detail_box, to_rgb8
from evodenoise.report import BatchProgress, Reporter

pytestmark = pytest.mark.usefixtures("in_tmp_path")


def _sheet(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "RGB"
        return np.asarray(im)


# ---- the module -----------------------------------------------------------------------------


def test_detail_box_finds_the_largest_change():
    before = np.zeros((40, 50))
    after = before.copy()
    after[30:36, 10:16] = 1.0
    top, left = detail_box(before, after, 6)
    assert (top, left) == (30, 10)


@pytest.mark.parametrize("shape", [(9, 7), (9, 7, 1), (9, 7, 2), (9, 7, 3), (9, 7, 4)])
def test_to_rgb8_takes_every_layout(shape):
    rgb = to_rgb8(np.full(shape, 0.5))
    assert rgb.shape == (9, 7, 3) and rgb.dtype == np.uint8


def test_alpha_shows_a_checkerboard_where_transparent():
    a = np.zeros((16, 16, 4))
    rgb = to_rgb8(a)  # fully transparent black: the board, two grays
    assert len(np.unique(rgb)) == 2 and rgb.min() > 150


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (40, 60, 3), (1500, 1100)])
def test_sheet_sizes(shape):
    x = RNG.random(shape)
    sheet = compare_image(x, x * 0.5, x, record={"psnr": 30.0, "sigma": 25.0, "seconds": 1.5})
    assert sheet.ndim == 3 and sheet.shape[2] == 3 and sheet.dtype == np.float32
    assert 0 <= sheet.min() and sheet.max() <= 1
    assert sheet.shape[1] <= 3 * 1024 + 16  # large images are reduced


def test_caption_says_what_is_known():
    assert caption({"psnr": 29.554, "psnr_input": 20.1, "sigma": 25.0, "seconds": 72.61}) == (
        "PSNR 29.55 dB (input 20.10 dB)   sigma 25   72.6 s"
    )
    assert caption({"sigma": 0.5}) == "sigma 0.5" and caption(None) == ""


def test_batch_progress_eta_from_pixels():
    now = [0.0]
    b = BatchProgress(4, clock=lambda: now[0])
    assert b.text() == "[0/4 files]"
    b.start(100)
    now[0] = 10.0
    assert b.eta(0.5) == pytest.approx(10 / 50 * 350)  # 50 of 400 pixels in 10 s
    b.finish(100)
    assert b.text().startswith("[1/4 files, batch ETA 0:00:")
    b.finish(0), b.finish(0), b.finish(0)
    assert b.text() == "[4/4 files]"


# ---- the command line ---------------------------------------------------------------------


def _inputs(tmp_path):
    return {
        "gray": gray(tmp_path / "g.png"),
        "colour": save_png(tmp_path / "c.png", RNG.integers(0, 256, (20, 24, 3)).astype("u1")),
        "rgba": save_png(tmp_path / "r.png", RNG.integers(0, 256, (20, 24, 4)).astype("u1")),
        "16-bit": save_png(tmp_path / "s.png", RNG.integers(0, 65536, (20, 24, 3)).astype("u2")),
    }


@pytest.mark.parametrize("kind", ["gray", "colour", "rgba", "16-bit"])
def test_compare_with_a_reference(tmp_path, engine, kind):
    src = _inputs(tmp_path)[kind]
    r = run("denoise", src.name, "--sigma", "5", "--reference", src.name, "--compare", "k.png")
    assert r.exit_code == 0, r.stderr
    sheet = _sheet(tmp_path / "k.png")
    assert sheet.shape[1] > 3 * 192  # three panels of at least 192 pixels
    assert (tmp_path / f"{src.stem}_denoised.png").exists()


@pytest.mark.parametrize("kind", ["gray", "rgba"])
def test_compare_without_a_reference_has_two_panels(tmp_path, engine, kind):
    src = _inputs(tmp_path)[kind]
    r = run("denoise", src.name, "--sigma", "5", "--compare", "k.png", *FAST)
    assert r.exit_code == 0, r.stderr
    assert 2 * 192 < _sheet(tmp_path / "k.png").shape[1] < 3 * 192


def test_compare_in_a_batch_needs_stem_and_writes_one_each(tmp_path, engine):
    gray(tmp_path / "a.png"), gray(tmp_path / "b.png")
    r = run("denoise", "a.png", "b.png", "--sigma", "5", "--compare", "k.png", *FAST)
    assert_one_line_error(r, 2, "{stem}")
    r = run("denoise", "a.png", "b.png", "--sigma", "5", "-O", "o", "--compare", "k_{stem}.png")
    assert r.exit_code == 0, r.stderr
    assert {"k_a.png", "k_b.png"} <= files(tmp_path)


def test_compare_never_overwrites_without_force(tmp_path, engine):
    gray(tmp_path / "a.png")
    (tmp_path / "k.png").write_bytes(b"mine")
    r = run("denoise", "a.png", "--sigma", "5", "--compare", "k.png", *FAST)
    assert_one_line_error(r, 1, "k.png", "exists")
    assert (tmp_path / "k.png").read_bytes() == b"mine" and not engine.calls
    r = run("denoise", "a.png", "--sigma", "5", "--compare", "k.png", "-f", *FAST)
    assert r.exit_code == 0 and _sheet(tmp_path / "k.png").ndim == 3


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--compare", "a.png"], "would overwrite an input"),
        (["--compare", "o.png", "-o", "o.png"], "same file"),
        (["--compare", "k.txt"], "--compare"),
        (["--compare", "k.npy"], "--compare"),
        (["--compare", "-"], "--compare"),
        (["--compare", "k.png", "--compare", "l.png"], "given 2 times"),
    ],
)
def test_compare_names_are_checked_first(tmp_path, engine, args, needle):
    gray(tmp_path / "a.png")
    r = run("denoise", "a.png", "--sigma", "5", *args, *FAST)
    assert_one_line_error(r, 2, needle)
    assert not engine.calls and files(tmp_path) == {"a.png"}


def test_compare_is_named_in_the_record(tmp_path, engine):
    gray(tmp_path / "a.png")
    r = run("denoise", "a.png", "--sigma", "5", "--compare", "k.png", "--json", *FAST)
    (record,) = json_lines(r)
    assert record["compare"] == "k.png" and record["status"] == "ok"


# ---- batch progress and completion -----------------------------------------------------------


def test_a_batch_tells_files_done_and_its_eta(tmp_path, engine):
    for s in "abc":
        gray(tmp_path / f"{s}.png")
    r = run("denoise", "a.png", "b.png", "c.png", "--sigma", "5", "-O", "o", *FAST)
    done = [ln for ln in r.stderr.splitlines() if "->" in ln]
    assert len(done) == 3
    assert "[1/3 files, batch ETA" in done[0] and done[2].endswith("[3/3 files]")
    assert r.stderr.splitlines()[-1] == "3 restored, 0 skipped, 0 failed"


def test_a_single_input_has_no_batch_count(tmp_path, engine):
    gray(tmp_path / "a.png")
    r = run("denoise", "a.png", "--sigma", "5", *FAST)
    assert "files" not in r.stderr


def test_progress_lines_of_a_batch_name_the_place(capsys):
    rep = Reporter()
    rep.start_files(2)
    rep.start_file("a.png", 100)
    rep.update({"phase": "train", "epoch": 1, "epochs": 1, "progress": 1.0}, 255.0)
    assert capsys.readouterr().err.startswith("  [1/2] a.png: 100%")


def test_shell_completion_is_offered():
    r = run("--help")
    assert "--install-completion" in r.stdout and "--show-completion" in r.stdout


def test_compare_of_an_inpainting_run(tmp_path, engine):
    from test_cli import mask_png

    gray(tmp_path / "a.png")
    mask_png(tmp_path / "m.png", np.eye(20, 24))
    r = run("inpaint", "a.png", "--mask", "m.png", "--compare", "k.png", *FAST)
    assert r.exit_code == 0, r.stderr
    assert _sheet(tmp_path / "k.png").shape[1] > 2 * 192


def test_compare_with_the_real_engine(tmp_path):
    """One tiny real run: the sheet is written beside the output, with three panels."""
    from conftest import tiny_cli

    save_png(tmp_path / "c.png", RNG.integers(0, 256, (16, 16, 3)).astype("u1"))
    args = ["--sigma", "20", "--reference", "c.png", "--compare", "look.png", *tiny_cli()]
    r = run("denoise", "c.png", *args)
    assert r.exit_code == 0, r.stderr
    assert _sheet(tmp_path / "look.png").shape[1] > 3 * 192
    assert {"c.png", "c_denoised.png", "look.png"} == files(tmp_path)
