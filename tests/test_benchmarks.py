"""benchmarks/run.py: protocol plumbing, tables, and a seconds-long smoke run of the peers."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "run.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("evodenoise_bench_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    yy, xx = np.mgrid[0:24, 0:24]
    gray = (40 + 150 * ((xx // 6 + yy // 6) % 2) + 2 * yy).astype(np.uint8)
    Image.fromarray(gray).save(d / "tiny.png")
    rgb = np.stack([gray, gray[::-1], gray.T], axis=-1)
    Image.fromarray(rgb).save(d / "tinyrgb.png")
    np.save(d / "not_an_image.npy", gray)  # skipped
    (d / "notes.txt").write_text("skipped")
    return d


def test_parse_task(bench):
    assert bench.parse_task("denoise-25") == bench.Task("denoise", 25.0)
    assert bench.parse_task("inpaint50").name == "inpaint-50"
    assert bench.parse_task("inpaint-80%").level_str == "80%"
    assert bench.parse_task("denoise:15").level_str == "σ=15"
    for bad in ("deblur-3", "denoise", "inpaint-100"):
        with pytest.raises(ValueError):
            bench.parse_task(bad)


def test_corruption_follows_protocol(bench):
    clean = np.random.default_rng(0).random((16, 16))
    task = bench.parse_task("denoise-25")
    seed = bench.corruption_seed(0, "house", task)
    assert seed == bench.corruption_seed(0, "house", task)  # fixed per (image, task)
    assert seed != bench.corruption_seed(0, "house", bench.parse_task("denoise-50"))
    assert seed != bench.corruption_seed(0, "other", task)
    assert seed != bench.corruption_seed(1, "house", task)
    x, mask, sigma01 = bench.corrupt(clean, task, seed)
    expected255 = clean * 255 + 25 * np.random.default_rng(seed).standard_normal(clean.shape)
    assert mask is None and sigma01 == pytest.approx(25 / 255)
    np.testing.assert_allclose(x * 255.0, expected255, atol=1e-3)  # float, unclipped
    assert x.min() < 0 or x.max() > 1
    x2, mask2, s2 = bench.corrupt(clean, bench.parse_task("inpaint-50"), 3)
    np.testing.assert_array_equal(mask2, np.random.default_rng(3).random(clean.shape) < 0.5)
    assert s2 is None and np.all(x2[mask2] == 0)
    np.testing.assert_allclose(x2[~mask2], clean[~mask2], atol=1e-7)


def test_overrides_and_presets(bench):
    from evodenoise import get_preset

    assert bench.parse_overrides(["hidden=128", "selection=best", "lr_max=0.02"]) == {
        "hidden": 128,
        "selection": "best",
        "lr_max": 0.02,
    }
    with pytest.raises(ValueError):
        bench.parse_overrides(["epochs"])
    task = bench.parse_task("denoise-25")
    cfg, label = bench.build_config("fast", task, 1, 3, {"hidden": "64,32", "n_states": 16})
    assert cfg.hidden == (64, 32) and cfg.n_states == 16 and cfg.epochs == 3
    assert label.startswith("fast ") and "epochs=3" in label
    cfg, label = bench.build_config("paper", bench.parse_task("denoise-50"), 1, None, {})
    assert label == "paper-house-50" and cfg == get_preset("paper-house-50")
    assert bench.paper_preset_for(bench.parse_task("inpaint-50"), 1) == "paper-inpaint-house"
    assert bench.paper_preset_for(bench.parse_task("inpaint-50"), 3) == "paper-inpaint-color-50"
    with pytest.raises(ValueError):
        bench.build_config("fast", task, 1, None, {"no_such_key": 1})


def test_ablation_variants_one_at_a_time(bench):
    from evodenoise import get_preset

    base = get_preset("fast")
    task = bench.parse_task("denoise-25")
    variants = list(bench.ablation_variants(base, task, 25 / 255, ["n_latents=x0.5|x2"]))
    labels = [v[0] for v in variants]
    assert labels[0] == "baseline" and len(set(labels)) == len(labels)
    for label, cfg, sigma in variants[1:]:
        if label.startswith("sigma=learned"):
            assert sigma is None and cfg == base
            continue
        changed = [k for k, v in cfg.to_dict().items() if v != base.to_dict()[k]]
        if label.startswith("epochs="):  # an epoch count given is the one that runs
            assert cfg.mixed_pilot_epochs == 0
            changed.remove("mixed_pilot_epochs")
        assert len(changed) == 1 and label.startswith(changed[0] + "=")
    assert f"epochs={base.epochs * 2}" in labels
    assert f"n_latents={base.n_latents // 2}" in labels
    assert all(
        f"selection={m}" in labels for m in {"fitness", "uniform", "best"} - {base.selection}
    )
    assert "merge=gaussian" in labels
    assert "hidden=" + ",".join(str(2 * h) for h in base.hidden) in labels
    inpaint = [
        v[0] for v in bench.ablation_variants(base, bench.parse_task("inpaint-50"), None, [])
    ]
    assert not any(v.startswith(("sigma", "sigma_mode")) for v in inpaint)


def test_tables(bench):
    row = dict(
        image="house",
        task="denoise",
        level="σ=25",
        method="nlm",
        psnr=30.123,
        ssim=0.81234,
        seconds=0.25,
        peak_rss_delta_mb=3.2,
        device="cpu",
        preset="-",
        seed=0,
    )
    skipped = dict(row, method="bm3d", error="bm3d not importable", skipped=True)
    table = bench.markdown_table([row, skipped]).splitlines()
    assert table[0] == (
        "| image | task | level | method | PSNR | SSIM | seconds | peak memory "
        "| device | preset | seed |"
    )
    assert (
        table[2] == "| house | denoise | σ=25 | nlm | 30.12 | 0.8123 | 0.25 | 3 MB | cpu | - | 0 |"
    )
    assert "skipped: bm3d not importable" in table[3]
    abl = bench.ablation_table(
        [
            dict(row, method="evodenoise", variant="baseline"),
            dict(row, method="evodenoise", variant="merge=gaussian", psnr=30.623),
        ]
    )
    assert "| merge=gaussian | 30.62 | +0.50 |" in abl


def test_load_image_scales_and_skips(bench, image_dir, tmp_path):
    paths = bench.find_images([str(image_dir)])
    assert [p.name for p in paths] == ["tiny.png", "tinyrgb.png"]
    gray = bench.load_image(paths[0])
    assert (
        gray.shape == (24, 24) and gray.dtype == np.float64 and 0 <= gray.min() <= gray.max() <= 1
    )
    assert bench.load_image(paths[1]).shape == (24, 24, 3)
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(tmp_path / "w16.png")
    assert bench.load_image(tmp_path / "w16.png").max() == pytest.approx(1.0)
    assert bench.centre_crop(np.zeros((10, 20)), 8).shape == (8, 8)


def test_peers_in_process(bench):
    clean = np.random.default_rng(0).random((20, 20))
    task = bench.parse_task("denoise-25")
    x, _, s = bench.corrupt(clean, task, 1)
    out = bench.run_method(
        dict(method="nlm", task="denoise", input=x, mask=None, sigma=s), isolate=False
    )
    assert out["estimate"].shape == clean.shape and out["seconds"] >= 0
    x, mask, _ = bench.corrupt(np.dstack([clean] * 3), bench.parse_task("inpaint-50"), 1)
    out = bench.run_method(
        dict(method="biharmonic", task="inpaint", input=x, mask=mask, sigma=None), isolate=False
    )
    est = out["estimate"]
    assert est.shape == (20, 20, 3)
    np.testing.assert_allclose(est[~mask], x[~mask], atol=1e-6)  # observed values kept


def _run_script(args, tmp_path, timeout=120):
    cmd = [sys.executable, str(SCRIPT), "--out", str(tmp_path), "--name", "smoke", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "smoke.json").read_text())
    return proc, report


def test_smoke_peers_isolated(image_dir, tmp_path):
    """The whole script on a tiny image, peers only, each method in a spawn subprocess."""
    proc, report = _run_script(
        [
            "--images",
            str(image_dir / "tiny.png"),
            "--tasks",
            "denoise-25,inpaint-50",
            "--methods",
            "input,nlm,bm3d,biharmonic",
        ],
        tmp_path,
    )
    rows = report["rows"]
    got = {(r["task"], r["method"]) for r in rows}
    assert got == {
        ("denoise", "input"),
        ("denoise", "nlm"),
        ("denoise", "bm3d"),
        ("inpaint", "biharmonic"),
    }
    by = {r["method"]: r for r in rows}
    assert by["nlm"]["psnr"] > by["input"]["psnr"] + 3
    assert by["input"]["psnr"] == pytest.approx(20.17, abs=1.5)
    assert by["biharmonic"]["psnr"] > 15 and 0 < by["biharmonic"]["ssim"] <= 1
    assert by["nlm"]["peak_rss_delta_mb"] is not None and by["nlm"]["seconds"] > 0
    if by["bm3d"].get("skipped"):
        assert "bm3d" in by["bm3d"]["error"]
    else:
        assert by["bm3d"]["psnr"] > by["input"]["psnr"] + 3
    md = (tmp_path / "smoke.md").read_text()
    assert "| image | task | level | method | PSNR | SSIM | seconds | peak memory |" in md
    assert "| tiny | denoise | σ=25 | nlm |" in proc.stdout
    # same run again: identical corrupted inputs, identical peer results
    _, again = _run_script(
        [
            "--images",
            str(image_dir / "tiny.png"),
            "--tasks",
            "denoise-25,inpaint-50",
            "--methods",
            "input,biharmonic",
            "--no-isolate",
        ],
        tmp_path,
    )
    again_by = {r["method"]: r for r in again["rows"]}
    assert again_by["input"]["psnr"] == by["input"]["psnr"]
    assert again_by["biharmonic"]["psnr"] == by["biharmonic"]["psnr"]


def test_smoke_evodenoise_tiny_config(image_dir, tmp_path):
    """evodenoise through the library API with a tiny config; 'default' picks each task's preset."""
    _, report = _run_script(
        [
            "--images",
            str(image_dir),
            "--quick",
            "--methods",
            "evodenoise",
            "--no-isolate",
            "--crop",
            "12",
            "--epochs",
            "1",
            "--set",
            "patch_size=4",
            "--set",
            "n_latents=8",
            "--set",
            "hidden=8",
            "--set",
            "n_states=4",
            "--set",
            "n_parents=2",
            "--set",
            "n_children=2",
            "--set",
            "n_generations=1",
            "--threads",
            "1",
        ],
        tmp_path,
        timeout=180,
    )
    rows = report["rows"]
    assert {r["image"] for r in rows} == {"tiny"}  # --quick: the smallest image only
    assert {(r["task"], r["level"]) for r in rows} == {("denoise", "σ=25"), ("inpaint", "50%")}
    errors = [r["error"] for r in rows if r.get("error")]
    assert not errors, errors
    for r in rows:
        assert r["method"] == "evodenoise" and r["config"]["epochs"] == 1
        assert r["config"]["hidden"] == [8] and np.isfinite(r["psnr"])
        assert r["preset"].startswith("inpaint " if r["task"] == "inpaint" else "fast ")


def test_ablation_only_vary_keeps_just_the_given_axes(bench):
    from evodenoise import get_preset

    base = get_preset("fast").replace(selection="fitness")
    task = bench.parse_task("denoise-25")
    variants = list(
        bench.ablation_variants(base, task, 25 / 255, ["selection=uniform|best"], only_vary=True)
    )
    assert [v[0] for v in variants] == ["baseline", "selection=uniform", "selection=best"]
    assert [v[1].selection for v in variants] == ["fitness", "uniform", "best"]


def test_suites_set_defaults_that_flags_override(bench):
    args = bench.parse_args(["--suite", "color"])
    assert args.images == bench.COLOR_IMAGES and args.crop == 256 and args.threads == 2
    assert [t.name for t in args.tasks] == ["denoise-15", "denoise-25", "denoise-50"]
    assert args.name.startswith("color-")
    args = bench.parse_args(["--suite", "inpaint", "--crop", "64", "--tasks", "inpaint-50"])
    assert args.crop == 64 and [t.name for t in args.tasks] == ["inpaint-50"]
    assert args.images == bench.COLOR_IMAGES
    gray = bench.parse_args(["--suite", "gray"])
    assert [t.name for t in gray.tasks] == list(bench.DEFAULT_TASKS)
    assert all(Path(p).is_file() for p in gray.images)
    quick = bench.parse_args(["--suite", "color", "--quick"])  # --quick's tasks and crop win
    assert [t.name for t in quick.tasks] == list(bench.QUICK_TASKS) and quick.crop is None
    assert bench.parse_args([]).suite is None
    with pytest.raises(SystemExit):
        bench.parse_args(["--suite", "nope"])


def test_estimate_variants_smoke(tmp_path):
    """benchmarks/estimate_variants.py: one training, the estimate once per variant (the same
    seed: a variant that changes nothing gives the same PSNR), one table row each."""
    out = tmp_path / "runs.jsonl"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "estimate_variants.py"), "skimage:camera",
         "-", "sweep_tol=0", "--crop", "40", "--sigma", "25", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["change"] for r in records] == [{}, {"sweep_tol": 0}]
    assert records[0]["psnr"] == records[1]["psnr"] > 20  # every patch in the pool: no sweep
    assert run.stdout.count("\n| ") == 3  # the header, then one row per variant


def test_stage_variants_smoke(tmp_path):
    """benchmarks/stage_variants.py: one run, its second stage's input caught and the stage
    applied at each number of scales; one table row per image-level; --set reaches the model."""
    out = tmp_path / "runs.jsonl"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "stage_variants.py"), "skimage:camera",
         "--crop", "40", "--sigmas", "25", "--scales", "1", "2", "--json", str(out),
         "--set", "epochs=4"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["image"] == "camera" and record["sigma"] == 25
    assert all(20 < record[k] < 40 for k in ("model", "scales_1", "scales_2"))
    assert record["scales_1"] != record["scales_2"]
    assert sum(line.startswith("| ") for line in run.stdout.splitlines()) == 2  # header, row
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "stage_variants.py"), "skimage:camera",
         "--crop", "40", "--set", "no_such_setting=1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert bad.returncode != 0 and "no_such_setting" in bad.stderr


def test_stage_variants_on_real_pairs_at_sigma_factors(tmp_path):
    """--pairs: a noisy/reference pair with noise correlated between neighbours (σ not
    given), its stage applied at each multiple of the models' σ."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:40, 0:40] / 40
    ref = (0.5 + 0.3 * np.sin(6 * xx) * np.cos(4 * yy)).astype(np.float32)
    noise = rng.normal(0, 36 / 255, (42, 42))
    noise = sum(noise[i : i + 40, j : j + 40] for i in range(3) for j in range(3)) / 9
    np.save(tmp_path / "cam_noisy.npy", (ref + noise).astype(np.float32))
    np.save(tmp_path / "cam_clean.npy", ref)
    out = tmp_path / "runs.jsonl"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "stage_variants.py"), "--pairs",
         str(tmp_path), "--crop", "0", "--scales", "2", "--factors", "1", "2",
         "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["image"] == "cam" and record["sigma"] is None
    assert record["scales_2"] != record["scales_2_x2"]


def test_stage_variants_on_photon_counts_with_two_pilots(tmp_path):
    """--peaks: synthetic photon counts (poisson.py's), the stage scored after the inverse
    transform with one pilot and with step 0's as a second; a cached input gives the same."""
    out = tmp_path / "runs.jsonl"
    args = [sys.executable, str(ROOT / "benchmarks" / "stage_variants.py"),
            str(ROOT / "sample_images" / "camera.png"), "--crop", "48", "--peaks", "2",
            "--scales", "2", "--joints", "0", "1", "--set", "epochs=2", "--json", str(out),
            "--cache", str(tmp_path / "cache")]  # fmt: skip
    for _ in range(2):
        run = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
    first, again = [json.loads(line) for line in out.read_text().splitlines()]
    assert first["image"] == "camera" and first["sigma"] == "peak 2"
    assert all(10 < first[k] < 40 for k in ("model", "scales_2", "scales_2_joint"))
    assert first["scales_2"] != first["scales_2_joint"]
    assert {k: v for k, v in first.items() if k != "cpu_s"} == {
        k: v for k, v in again.items() if k != "cpu_s"
    }
