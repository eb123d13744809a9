"""The command line with the real engine, end to end, on tiny images and tiny configs.

Each run takes about a second; the demo at full size is a slow test.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from evodenoise.cli import app
from evodenoise.imageio import encode_png16 as _encode_png16
from evodenoise.imageio import read_image

H, W = 16, 18
RNG = np.random.default_rng(11)
TINY = [
    "--device",
    "cpu",
    "--set",
    "epochs=2",
    "--set",
    "n_states=4",
    "--set",
    "n_latents=8",
    "--set",
    "hidden=8",
    "--set",
    "patch_size=3",
    "--set",
    "n_parents=2",
    "--set",
    "n_children=2",
    "--set",
    "n_generations=1",
]
REPO = Path(__file__).resolve().parents[1]


def run(*args, input=None):
    result = CliRunner().invoke(app, [str(a) for a in args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def smooth(h=H, w=W, c=None):
    y, x = np.mgrid[0:h, 0:w]
    base = 0.5 + 0.4 * np.sin(x / 3.0) * np.cos(y / 4.0)
    return base if c is None else np.stack([base * (0.6 + 0.2 * k) for k in range(c)], -1)


pytestmark = pytest.mark.usefixtures("in_tmp_path")


def test_denoise_npy_with_reference_json(tmp_path):
    clean = np.rint(smooth() * 255).astype(np.uint8)
    Image.fromarray(clean).save(tmp_path / "clean.png")
    r = run("corrupt", "clean.png", "--sigma", "20", "-o", "noisy.npy", "-q")
    assert r.exit_code == 0, r.stderr
    r = run(
        "denoise",
        "noisy.npy",
        "--sigma",
        "20",
        "--reference",
        "clean.png",
        "--json",
        "-o",
        "out/den.png",
        *TINY,
    )
    assert r.exit_code == 0, r.stderr
    (rec,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert rec["status"] == "ok" and rec["device"] == "cpu"
    assert np.isfinite(rec["psnr"]) and 0 < rec["ssim"] <= 1
    assert rec["sigma"] == pytest.approx(20, rel=0.05)  # σ given and fixed, 8-bit units
    assert rec["config"]["epochs"] == 2 and rec["config"]["patch_size"] == 3
    out, info = read_image(tmp_path / "out" / "den.png")
    assert out.shape == (H, W) and info.dtype == "uint8"


def test_inpaint_rgba16_keeps_depth_alpha_and_observed_values(tmp_path):
    rgb = np.rint(smooth(c=3) * 65535).astype(np.uint16)
    alpha = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
    (tmp_path / "img.png").write_bytes(_encode_png16(np.concatenate([rgb, alpha[..., None]], -1)))
    m = RNG.random((H, W)) < 0.3
    Image.fromarray((m * 255).astype(np.uint8)).save(tmp_path / "m.png")
    r = run(
        "inpaint",
        "img.png",
        "--mask",
        "m.png",
        "--json",
        "--save-fields",
        "fields.png",
        "--save-log",
        "log.json",
        *TINY,
    )
    assert r.exit_code == 0, r.stderr
    out, info = read_image(tmp_path / "img_inpainted.png")
    assert info.dtype == "uint16" and info.has_alpha
    assert np.array_equal(info.alpha, alpha)
    # observed values are kept (up to one 16-bit step)
    assert np.abs(out[~m] * 65535 - rgb[~m]).max() <= 1.0
    log = json.loads((tmp_path / "log.json").read_text())
    # a colour image (same mask on every channel): a luminance and a chroma model, 2 epochs each
    assert [e["model"] for e in log["epochs"]] == ["luminance"] * 2 + ["chroma"] * 2
    assert (tmp_path / "fields.png").stat().st_size > 0


def test_batch_mixed_real_engine(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.rint(smooth() * 255).astype(np.uint8)).save(folder / "g.png")
    Image.fromarray(np.rint(smooth(c=3) * 255).astype(np.uint8)).save(
        folder / "rgb.jpg", quality=95
    )
    (folder / "broken.png").write_text("not a png")
    r = run("denoise", "in", "--output-dir", "out", "--json", *TINY)
    assert r.exit_code == 1
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["status"] for x in recs] == ["error", "ok", "ok"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "g_denoised.png",
        "rgb_denoised.png",
    ]


def test_image_smaller_than_patch_real_engine(tmp_path):
    Image.fromarray(RNG.integers(0, 256, (2, 2)).astype(np.uint8)).save(tmp_path / "t.png")
    r = run("denoise", "t.png", *TINY)
    assert r.exit_code == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "smaller" in errors[0]
    assert not (tmp_path / "t_denoised.png").exists()
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_make_demo_command(tmp_path):
    """The Makefile's demo line, as a subprocess (minutes on 2 cores)."""
    out = tmp_path / "camera_denoised.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "evodenoise",
            "denoise",
            str(REPO / "sample_images" / "camera_noisy25.npy"),
            "--sigma",
            "25",
            "--reference",
            str(REPO / "sample_images" / "camera.png"),
            "-o",
            str(out),
            "--force",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr
    rec = json.loads(proc.stdout)
    assert rec["psnr"] > 25 and out.exists()


@pytest.mark.slow  # a subprocess importing torch: ~5-20 s each
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_interrupt_leaves_no_partial_output(tmp_path, sig):
    """Ctrl-C (or a polite kill) mid-run: exit 130, no output file, no temporary file."""
    import signal

    Image.fromarray(np.rint(smooth() * 255).astype(np.uint8)).save(tmp_path / "g.png")
    cmd = [
        sys.executable,
        "-m",
        "evodenoise",
        "denoise",
        "g.png",
        "-o",
        "out/g.png",
        "-v",
        *[a if a != "epochs=2" else "epochs=100000" for a in TINY],
    ]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        for line in proc.stderr:  # wait until the image's line: its work starts right after
            if line.startswith("g.png:"):
                break
        time.sleep(3)  # training runs (100,000 epochs: it will not end by itself)
        proc.send_signal(getattr(signal, sig))
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    leftovers = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert leftovers == []


@pytest.mark.slow
def test_issue4_done_when_batch_of_ten_real_engine(tmp_path):
    """The batch acceptance case: 10 mixed images (one corrupt) -> exit 1, nine outputs with bit
    depth and alpha kept, ten JSON lines naming the corrupt file; --skip-existing re-run does
    no work."""
    from test_cli import _mixed_folder

    made = _mixed_folder(tmp_path / "in")
    r = run("denoise", "in", "--output-dir", "out", "--json", *TINY)
    assert r.exit_code == 1
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(recs) == 10 and sum(x["status"] == "ok" for x in recs) == 9
    (bad,) = [x for x in recs if x["status"] == "error"]
    assert "corrupt.png" in bad["error"]
    for name, (mode, dtype) in made.items():
        _, src = read_image(tmp_path / "in" / f"{name}.png")
        _, out = read_image(tmp_path / "out" / f"{name}_denoised.png")
        assert (out.mode, out.dtype) == (mode, dtype)
        if src.has_alpha:
            assert np.array_equal(out.alpha, src.alpha)
    r = run("denoise", "in", "--output-dir", "out", "--json", "--skip-existing", *TINY)
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["status"] for x in recs].count("skipped") == 9
    assert all(x["seconds"] is None for x in recs if x["status"] == "skipped")
