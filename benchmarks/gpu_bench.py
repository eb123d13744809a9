#!/usr/bin/env python
"""The GPU path measured on a CUDA machine: ``make gpu-bench`` (long) and the stages of
``benchmarks/gpu_check.sh`` (``make gpu-check``: sized for a 15-minute lease, docs/gpu.md).

Full bench (no ``--check``):

1. runs the ``cuda`` tests (``pytest -m cuda``);
2. per preset (default ``fast,quality,inpaint,paper-house-25``) on House
   (``../shared/benchmark/images/house.png``, read in place, never copied): warm-up/compile
   time (first epoch), seconds per steady epoch, kernels and synchronisations per step
   (torch.profiler over one epoch), peak GPU memory, achieved TFLOP/s (work model of
   ``throughput.py``), PSNR after 20 epochs and at the end of the preset's run, each against
   the CPU run with the same seed (``--cpu`` picks which CPU runs are made: the 20-epoch one by
   default, the full one only for presets whose full run is short on a CPU);
3. writes ``benchmarks/results/gpu-bench-<time>.json`` and prints a table.

Check stages (``--check STAGE``, one process each, run by gpu_check.sh under its own timeout;
each writes its JSON part (``--part``) as it goes, so a stage cut off by its timeout still
reports what it measured):

- ``preset``: one preset (``--presets``) for ``--epochs`` epochs on ``--device``: compile and
  capture time (epochs 1-2), seconds per steady epoch, kernels and synchronisations per step
  (torch.profiler over epoch 3, CUDA only), peak GPU memory, PSNR; for ``fast``, ``quality``
  and ``inpaint`` also the preset's own whole run (``--full-epochs`` overrides its epochs);
- ``cpu-ref``: the same ``--epochs`` runs of ``--presets`` on the CPU (``--cores``,
  ``--threads``), one after another, for the PSNR at equal seed and epochs;
- ``cli``: one ``python -m evodenoise denoise IMAGE --sigma 25 --device D --json`` run on a
  synthetic RGB image of ``--size`` (a mosaic of scikit-image's photos, seed 0): wall time,
  peak GPU memory, PSNR;
- ``collect``: the parts of ``--parts`` into ``--out``/gpu_check.json and one table.

Inputs follow the benchmark protocol of ``benchmarks/run.py`` (seed per image and task):
``inpaint`` is measured on House with 50 % of the values missing, the other presets on House
with noise σ = 25. Without CUDA, the full bench and ``--device cuda`` stages exit 2 with one
line.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import importlib.util
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("evodenoise") is None:
    sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

HOUSE = ROOT.parent / "shared" / "benchmark" / "images" / "house.png"
PRESETS = "fast,quality,inpaint,paper-house-25"
CHECK_PRESETS = "fast,quality,inpaint,gpu-house-25,paper-house-25"
CPU_FULL = {"fast", "quality", "inpaint"}  # full CPU runs of minutes, not hours
FULL_ON_CHECK = ("fast", "quality", "inpaint")  # whole runs of seconds on a GPU
SYNC_EVENTS = (
    "cudaDeviceSynchronize",
    "cudaStreamSynchronize",
    "cudaEventSynchronize",
    "cudaMemcpy",
    "cudaStreamIsCapturing",
)
LAUNCH_EVENTS = ("cudaLaunchKernel", "cudaGraphLaunch", "cuLaunchKernel", "cuLaunchKernelEx")
SIGMA = 25.0  # 8-bit units
MISSING = 0.5

# CPU figures on the full House image (benchmark protocol, seed 0) that benchmarks/RESULTS.md
# and the README record: (preset, training epochs) -> (PSNR dB, where). Code has changed
# since some of them: the live CPU reference (stage cpu-ref) is the comparison that counts.
CPU_RECORDED = {
    ("fast", 16): (32.34, "RESULTS.md House table, 2 CPU threads"),
    ("fast", 4): (32.93, "RESULTS.md table 7, the training the pilot needs, 2 CPU threads"),
    ("quality", 16): (32.32, "RESULTS.md, 2 CPU threads, 5492310: 8x8, H = 64, indicative"),
    ("inpaint", 40): (38.06, "RESULTS.md House table, 2 CPU threads"),
    ("paper-house-25", 20): (31.79, "RESULTS.md, 2 CPU threads, 3a0a7d7: indicative"),
}
PSNR_TOLERANCE_DB = 0.1
# Targets on one H100-class GPU (docs/gpu.md): seconds.
TARGET_PAPER_S = 60.0  # paper-house-25, 500 epochs on House, compile included
TARGET_FAST_S = 3.0  # fast on House, whole run
TARGET_CLI_S = 60.0  # 12-megapixel RGB through the command line, wall time

NEEDS_CUDA = "skipped: needs CUDA"


def cuda_or_exit(what: str = "gpu-bench") -> None:
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA device"
        print(f"{what}: needs a CUDA device ({build} here); nothing measured", file=sys.stderr)
        sys.exit(2)


# --------------------------------------------------------------------------- inputs


def corruption_seed(image_name: str, task: str, base_seed: int = 0) -> int:
    """The seed ``benchmarks/run.py`` draws a task's noise or mask with (per image and task)."""
    key = [int(base_seed), zlib.crc32(image_name.encode()), zlib.crc32(task.encode())]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def task_input(preset: str, clean: np.ndarray, name: str = "house"):
    """(noisy or masked image, sigma, mask) of the preset's task, as benchmarks/run.py makes
    it: noise σ = 25 added on the 0-255 scale, unclipped; or 50 % of the values missing."""
    from evodenoise.corrupt import add_noise, random_mask

    if "inpaint" in preset:
        mask = random_mask(clean.shape, MISSING, seed=corruption_seed(name, "inpaint-50"))
        return np.where(mask, 0.0, clean).astype(np.float32), None, mask
    seed = corruption_seed(name, f"denoise-{SIGMA:g}")
    noisy255 = add_noise(clean * 255.0, SIGMA, seed=seed).astype(np.float64)
    return (noisy255 / 255.0).astype(np.float32), SIGMA / 255, None


def load_clean(path: str | None, crop: int = 0) -> tuple[np.ndarray, str, str]:
    """(gray image in [0, 1] as float64, its name for the protocol's seeds, a description).
    ``path`` missing: scikit-image's ``camera`` cropped to 256x256 (said in the description).
    ``crop``: the centre crop x crop (0: whole)."""
    if path and Path(path).is_file():
        try:
            from evodenoise.imageio import read_image

            img = np.asarray(read_image(path)[0], dtype=np.float64)
        except ImportError:  # an older or newer layout of the package
            from PIL import Image

            img = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
        if img.ndim == 3:
            img = img[..., :3].mean(-1)
        name, what = Path(path).stem, str(path)
    else:
        from skimage import data

        img = _centre(np.asarray(data.camera(), dtype=np.float64) / 255.0, 256)
        name, what = "camera", f"skimage camera 256x256 (no file at {path})"
    if crop:
        img = _centre(img, crop)
        what += f", centre {img.shape[1]}x{img.shape[0]}"
    return np.ascontiguousarray(img), name, what


def _centre(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return img[top : top + ch, left : left + cw]


def is_whole_house(what: str) -> bool:
    return Path(what.split(",")[0]).name == "house.png" and "centre" not in what


# --------------------------------------------------------------------------- runs


def preset_config(preset: str, clean: np.ndarray, name: str = "house"):
    """The preset's config as a run on this image uses it (the automatic patch size settled)."""
    from throughput import sized

    import evodenoise

    return sized(evodenoise.get_preset(preset), task_input(preset, clean, name)[0], SIGMA / 255)


def run_once(
    preset: str,
    clean: np.ndarray,
    device: str,
    epochs: int | None = None,
    callback=None,
    name: str = "house",
) -> dict:
    import evodenoise
    from evodenoise.metrics import psnr

    cfg = preset_config(preset, clean, name)
    if epochs is not None:
        cfg = cfg.replace(epochs=epochs, min_visits=0)
    image, sigma, mask = task_input(preset, clean, name)
    t0 = time.perf_counter()
    if mask is None:
        out, res = evodenoise.denoise(
            image, sigma, config=cfg, seed=0, device=device, callback=callback
        )
    else:
        out, res = evodenoise.inpaint(
            image, mask, config=cfg, seed=0, device=device, callback=callback
        )
    return {
        "psnr": psnr(clean, out),
        "seconds": time.perf_counter() - t0,
        "epochs": res.config.epochs,
        "log": res.log,
    }


def train_seconds(callback=None):
    """A run callback that keeps each training epoch's seconds (``.seconds``) and passes the
    training entries on to ``callback``."""
    seconds = []

    def cb(entry):
        if entry.get("phase", "train") != "train" or entry.get("model") not in (None, "luminance"):
            return
        seconds.append(entry["seconds"])
        if callback is not None:
            callback(entry)

    cb.seconds = seconds
    return cb


class EpochProfile:
    """torch.profiler over training epoch ``epoch`` (1-based, at least 2) of a run, used as a
    run callback: starts when epoch - 1 ends, stops when ``epoch`` ends. ``counts``: kernels,
    synchronisations and launches per step (``steps`` per epoch); kernels and syncs are None
    off CUDA (the profiler runs there too, so a CPU smoke run takes the same path)."""

    def __init__(self, epoch: int, device: str, steps: int):
        self.epoch, self.steps = epoch, steps
        self.cuda = str(device).startswith("cuda")
        self.prof = None
        self.counts: dict | None = None

    def __call__(self, entry: dict) -> None:
        try:
            self._step(entry["epoch"])
        except Exception as e:  # a profiler failure must not end the run it watches
            self.counts = {"error": f"{type(e).__name__}: {e}"}
            print(f"warning: profiling failed: {self.counts['error']}", file=sys.stderr)

    def _step(self, e: int) -> None:
        import torch

        if e == self.epoch - 1 and self.prof is None:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if self.cuda:
                torch.cuda.synchronize()
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=acts)
            self.prof.__enter__()
        elif e == self.epoch and self.prof is not None and self.counts is None:
            if self.cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            self.prof.__exit__(None, None, None)
            self.counts = count_events(self.prof, self.steps, self.cuda)
            self.counts["profile_parse_s"] = time.perf_counter() - t0


def count_events(prof, steps: int, cuda: bool = True) -> dict:
    """Kernels, synchronisations and launches per step in a finished profile. The span also
    holds the epoch's end (π, σ², the log: a few syncs), which per step rounds to nothing."""
    import torch

    kernels = syncs = launches = ops = 0
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels += 1
        elif e.name.startswith(SYNC_EVENTS):
            syncs += 1
        elif e.name in LAUNCH_EVENTS:
            launches += 1
        elif e.name.startswith("aten::"):
            ops += 1
    return {
        "kernels_per_step": kernels / steps if cuda else None,
        "syncs_per_step": syncs / steps if cuda else None,
        "launches_per_step": launches / steps if cuda else None,
        "aten_ops_per_step": ops / steps,
        "steps": steps,
    }


def profile_epoch(preset: str, clean: np.ndarray) -> dict:
    """Kernels and synchronisations per step over the second epoch of a 2-epoch CUDA run."""
    from throughput import work_per_epoch

    from evodenoise.patches import count_patches

    cfg = preset_config(preset, clean)
    steps = work_per_epoch(cfg, count_patches(*clean.shape, cfg.patch_size), 1)["steps"]
    prof = EpochProfile(2, "cuda", steps)
    run_once(preset, clean, "cuda", epochs=2, callback=train_seconds(prof))
    return prof.counts or {}


def bench_preset(preset: str, clean: np.ndarray, cpu: str) -> dict:
    import torch
    from throughput import work_per_epoch

    from evodenoise.patches import count_patches

    cfg = preset_config(preset, clean)
    row = {"preset": preset, "config": cfg.to_dict()}
    torch.cuda.reset_peak_memory_stats()
    cb = train_seconds()
    short = run_once(preset, clean, "cuda", epochs=20, callback=cb)
    seconds = cb.seconds
    row["warmup_s"] = seconds[0]
    row["epoch_s"] = float(np.median(seconds[2:])) if len(seconds) > 2 else min(seconds)
    row["psnr_20"] = short["psnr"]
    row["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    work = work_per_epoch(cfg, count_patches(*clean.shape, cfg.patch_size), 1)
    row["tflops"] = work["flops"] / row["epoch_s"] / 1e12
    row.update(profile_epoch(preset, clean))
    full = run_once(preset, clean, "cuda")
    row.update(psnr_end=full["psnr"], run_s=full["seconds"], epochs=full["epochs"])
    if cpu in ("20", "all"):
        row["cpu_psnr_20"] = run_once(preset, clean, "cpu", epochs=20)["psnr"]
    if cpu == "all" or (cpu == "20" and preset in CPU_FULL):
        c = run_once(preset, clean, "cpu")
        row.update(cpu_psnr_end=c["psnr"], cpu_run_s=c["seconds"])
    return row


# --------------------------------------------------------------------------- check stages


class Part:
    """A stage's JSON record, rewritten whole (atomically) at every update."""

    def __init__(self, path: str | None, **fields):
        self.path = Path(path) if path else None
        self.data = dict(fields)
        self.write()

    def update(self, **fields) -> None:
        self.data.update(fields)
        self.write()

    def write(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        os.replace(tmp, self.path)


def set_cores(cores: str | None, threads: int | None) -> None:
    """Pin this process to ``cores`` ("A-B" or "A,B,C") and use ``threads`` torch threads."""
    import torch

    if cores and hasattr(os, "sched_setaffinity"):
        ids = set()
        for part in cores.split(","):
            lo, _, hi = part.partition("-")
            ids.update(range(int(lo), int(hi or lo) + 1))
        try:
            os.sched_setaffinity(0, ids)
        except OSError as e:
            print(f"warning: cannot pin to cores {cores}: {e}", file=sys.stderr)
    if threads:
        torch.set_num_threads(threads)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def check_preset(args) -> int:
    """Stage ``preset``: see the module's docstring."""
    import torch
    from throughput import work_per_epoch

    from evodenoise.patches import count_patches
    from evodenoise.plan import shorten_training

    preset, device = args.presets, args.device
    cuda = device.startswith("cuda")
    if cuda:
        cuda_or_exit("gpu-check")
        torch.backends.cuda.matmul.allow_tf32 = False  # keep log-joint rankings as in float32
    set_cores(args.cores, args.threads)
    clean, name, what = load_clean(args.image, args.crop)
    cfg = preset_config(preset, clean, name)
    work = work_per_epoch(cfg, count_patches(*clean.shape, cfg.patch_size), 1)
    part = Part(
        args.part,
        stage="preset",
        preset=preset,
        device=device,
        image=what,
        shape=list(clean.shape),
        epochs=args.epochs,
        epochs_of_preset=cfg.epochs,
        patch_size=cfg.patch_size,
        steps_per_epoch=work["steps"],
        gflop_per_epoch=work["flops"] / 1e9,
        status="running",
        torch_threads=torch.get_num_threads(),
    )
    prof = EpochProfile(min(3, args.epochs), device, work["steps"]) if args.epochs >= 2 else None
    in_callback = [0.0]  # seconds spent here (profiling, writing the part): not the run's

    def on_epoch(entry):
        t0 = time.perf_counter()
        if prof is not None:
            prof(entry)
            if prof.counts is not None and "profile" not in part.data:
                part.data["profile"] = prof.counts
                part.data["profiled_epoch"] = prof.epoch
        part.update(epoch_seconds=cb.seconds)
        in_callback[0] += time.perf_counter() - t0

    cb = train_seconds(on_epoch)
    if cuda:
        t0 = time.perf_counter()
        torch.zeros(1, device=device).add_(1)  # the CUDA context: not part of the run's time
        torch.cuda.synchronize()
        part.update(cuda_init_s=time.perf_counter() - t0)
        torch.cuda.reset_peak_memory_stats()
    print(f"# {preset}: {args.epochs} epochs on {device}, {what}", file=sys.stderr, flush=True)
    r = run_once(preset, clean, device, epochs=args.epochs, callback=cb, name=name)
    sec = cb.seconds
    profiled = part.data.get("profiled_epoch")
    steady = [s for i, s in enumerate(sec, 1) if i > 2 and i != profiled]
    epoch_s = statistics.median(steady) if steady else min(sec)
    first = sum(sec[:2])
    rest = r["seconds"] - sum(sec) - in_callback[0]  # set-up, the estimate's sweeps and merge
    e_full = shorten_training(cfg).epochs  # (the inputs here: white noise of a σ given)
    fields = {
        "psnr": r["psnr"],
        "run_s": r["seconds"],
        "epoch_s": epoch_s,
        "first_epochs_s": sec[:2],
        "compile_capture_s": max(first - min(2, len(sec)) * epoch_s, 0.0) if cuda else None,
        "setup_estimate_s": rest,
        "tflops": work["flops"] / epoch_s / 1e12,
        # the preset's own epochs at this speed: with the first two epochs (compiling and
        # capturing) as measured, and warm (every epoch at the steady speed)
        "projected_run_s": rest + first + max(e_full - 2, 0) * epoch_s,
        "projected_run_warm_s": rest + e_full * epoch_s,
        "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
        "peak_gpu_reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else None,
        "peak_rss_mib": peak_rss_mib(),
    }
    part.update(**fields)
    if preset in FULL_ON_CHECK and not args.no_full:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        print(f"# {preset}: its own run on {device}", file=sys.stderr, flush=True)
        try:
            f = run_once(preset, clean, device, epochs=args.full_epochs, name=name)
        except Exception as e:  # keep what the 20-epoch run measured
            part.update(full={"error": f"{type(e).__name__}: {e}"}, status="own run failed")
            raise
        part.update(
            full={
                "epochs": f["epochs"],
                "psnr": f["psnr"],
                "run_s": f["seconds"],
                "peak_gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                "note": "same process: compiled code is cached, CUDA graphs captured anew",
            }
        )
    part.update(status="ok")
    return 0


def check_cpu_ref(args) -> int:
    """Stage ``cpu-ref``: the presets' ``--epochs`` runs on the CPU, one after another."""
    import torch

    set_cores(args.cores, args.threads)
    clean, name, what = load_clean(args.image, args.crop)
    part = Part(
        args.part,
        stage="cpu-ref",
        image=what,
        epochs=args.epochs,
        cores=args.cores,
        torch_threads=torch.get_num_threads(),
        rows=[],
        status="running",
    )
    for preset in args.presets.split(","):
        part.update(running=preset)
        print(f"# CPU reference {preset}: {args.epochs} epochs", file=sys.stderr, flush=True)
        r = run_once(preset, clean, "cpu", epochs=args.epochs, name=name)
        row = {"preset": preset, "epochs": r["epochs"], "psnr": r["psnr"], "run_s": r["seconds"]}
        part.update(rows=[*part.data["rows"], row])
    part.update(status="ok", running=None)
    return 0


PHOTOS = ("astronaut", "coffee", "chelsea")


def synthetic_rgb(height: int, width: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """An 8-bit RGB test image: a mosaic of crops of scikit-image's colour photos (shipped
    with it, free licences), each crop at a random place and flipped at random (seed); a
    smooth random pattern where those photos cannot be loaded."""
    rng = np.random.default_rng(seed)
    th, tw = min(300, -(-height // 10)), min(400, -(-width // 10))
    try:
        from skimage import data

        photos = [np.asarray(getattr(data, n)())[..., :3] for n in PHOTOS]
        what = f"mosaic of {th}x{tw} crops of skimage {', '.join(PHOTOS)} (seed {seed})"
    except Exception as e:  # any failure to load them: the fallback
        yy, xx = np.mgrid[0:256, 0:256] / 256.0
        base = 127 + 100 * np.sin(6 * xx + rng.random()) * np.cos(5 * yy + rng.random())
        photos = [np.stack([base, base[::-1], base.T], -1).clip(0, 255).astype(np.uint8)]
        what = f"sinusoid pattern (seed {seed}; skimage photos unavailable: {e})"
    out = np.empty((height, width, 3), np.uint8)
    for top in range(0, height, th):
        for left in range(0, width, tw):
            src = photos[rng.integers(len(photos))]
            h, w = min(th, height - top), min(tw, width - left)
            y = rng.integers(src.shape[0] - min(h, src.shape[0]) + 1)
            x = rng.integers(src.shape[1] - min(w, src.shape[1]) + 1)
            tile = src[y : y + h, x : x + w]
            if rng.random() < 0.5:
                tile = tile[:, ::-1]
            if rng.random() < 0.5:
                tile = tile[::-1]
            tile = np.pad(tile, ((0, h - tile.shape[0]), (0, w - tile.shape[1]), (0, 0)), "edge")
            out[top : top + h, left : left + w] = tile
    return out, what


# Runs the command line exactly as ``python -m evodenoise`` does, then (at exit) writes the
# process's peak GPU memory to $GPU_CHECK_PEAK_FILE.
CLI_WRAPPER = """\
import atexit, json, os, runpy, sys
def _peak():
    torch = sys.modules.get("torch")
    path = os.environ.get("GPU_CHECK_PEAK_FILE")
    if path and torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        with open(path, "w") as f:
            json.dump({"allocated": torch.cuda.max_memory_allocated(),
                       "reserved": torch.cuda.max_memory_reserved()}, f)
atexit.register(_peak)
sys.argv = ["evodenoise", *sys.argv[1:]]
runpy.run_module("evodenoise", run_name="__main__", alter_sys=True)
"""


def check_cli(args) -> int:
    """Stage ``cli``: see the module's docstring."""
    from PIL import Image

    from evodenoise.corrupt import add_noise
    from evodenoise.metrics import psnr

    width, height = (int(v) for v in args.size.lower().split("x"))
    cuda = args.device.startswith("cuda")
    if cuda:
        cuda_or_exit("gpu-check")
    set_cores(args.cores, None)  # the command line inherits the cores
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    clean, what = synthetic_rgb(height, width, seed=0)
    noisy = np.clip(np.rint(add_noise(clean, SIGMA, seed=0)), 0, 255).astype(np.uint8)
    src, dst, peak = work / "cli_noisy.png", work / "cli_denoised.png", work / "cli_peak.json"
    Image.fromarray(noisy).save(src, compress_level=1)
    del noisy
    cmd = [sys.executable, "-c", CLI_WRAPPER, "denoise", str(src), "--sigma", f"{SIGMA:g}"]
    cmd += ["--device", args.device, "--seed", "0", "--json", "-o", str(dst), "--force"]
    if args.cli_epochs is not None:
        cmd += ["--epochs", str(args.cli_epochs)]
    shown = f"python -m evodenoise denoise {src.name} " + " ".join(cmd[5:]).replace(
        str(dst), dst.name
    )
    part = Part(
        args.part,
        stage="cli",
        image=f"{width}x{height} RGB 8-bit PNG, σ = {SIGMA:g}: {what}",
        megapixels=width * height / 1e6,
        device=args.device,
        command=shown,
        make_input_s=time.perf_counter() - t0,
        status="running",
    )
    print(f"# CLI: {shown} ({width}x{height})", file=sys.stderr, flush=True)
    env = dict(os.environ, GPU_CHECK_PEAK_FILE=str(peak))
    peak.unlink(missing_ok=True)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    record = {}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            record = json.loads(line)
            break
    fields = {"rc": p.returncode, "wall_s": wall, "seconds": record.get("seconds")}
    fields["record"] = {k: record.get(k) for k in ("status", "error", "sigma", "preset", "device")}
    if peak.is_file():
        got = json.loads(peak.read_text())
        fields["peak_gpu_gib"] = got["allocated"] / 2**30
        fields["peak_gpu_reserved_gib"] = got["reserved"] / 2**30
    if p.returncode == 0 and dst.is_file():
        out = np.asarray(Image.open(dst).convert("RGB"))
        fields["psnr"] = psnr(clean, out, data_range=255.0)
        noisy = np.asarray(Image.open(src).convert("RGB"))
        fields["psnr_input"] = psnr(clean, noisy, data_range=255.0)
    part.update(**fields, status="ok" if p.returncode == 0 else "failed")
    return 0 if p.returncode == 0 else 1


# --------------------------------------------------------------------------- collect


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _rc_status(parts: Path, stage: str) -> tuple[int | None, str | None]:
    """(exit code, status word) the shell recorded for a stage: ok, timed out, failed."""
    try:
        rc = int((parts / f"{stage}.rc").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None, None
    if rc == 0:
        return rc, "ok"
    if rc in (124, 137):
        return rc, "timed out"
    return rc, f"failed (exit {rc})"


def _src_digest() -> str:
    h = hashlib.sha1()
    for p in sorted((ROOT / "src" / "evodenoise").glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def collect(args) -> int:
    """Stage ``collect``: the parts into gpu_check.json and one table."""
    parts = Path(args.parts)
    smoke = args.mode == "cpu-smoke"
    meta = {
        "mode": args.mode,
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "src_sha1": _src_digest(),
        "git": (parts / "git.txt").read_text().strip() if (parts / "git.txt").is_file() else None,
        "budget_s": args.budget,
        "elapsed_s": args.elapsed,
        "seed": 0,
        "sigma": SIGMA,
        "setup": (parts / "setup.txt").read_text().splitlines()
        if (parts / "setup.txt").is_file()
        else [],
    }
    try:
        import torch

        meta["torch"] = torch.__version__
        meta["cuda"] = torch.version.cuda
        if torch.cuda.is_available():
            meta["device"] = torch.cuda.get_device_name()
        else:
            meta["device"] = f"cpu ({os.cpu_count()} cores)"
    except ImportError:
        meta["torch"] = None
    skipped = []

    # the cuda tests
    rc, status = _rc_status(parts, "tests")
    log = (
        (parts / "tests.log").read_text(errors="replace") if (parts / "tests.log").is_file() else ""
    )
    summary = next(
        (ln.strip("= ") for ln in reversed(log.splitlines()) if re.search(r"\d+ \w+ in ", ln)),
        None,
    )
    tests = {"rc": rc, "status": status or "not run", "summary": summary}
    if smoke:
        if rc == 0:
            tests["status"] = f"{NEEDS_CUDA} (selected, then skipped on this CPU)"
        if summary is not None and re.search(r"\d+ (passed|failed)", summary):
            tests["status"] = "unexpected: cuda tests ran on the CPU"
        skipped.append(f"cuda tests: {NEEDS_CUDA}")
    if rc not in (None, 0):
        tests["log_tail"] = log.splitlines()[-30:]

    # the CPU references (live): preset -> row
    cpu_ref = {}
    for p in sorted(parts.glob("cpuref-*.json")):
        d = _load(p) or {}
        for row in d.get("rows", []):
            cpu_ref[row["preset"]] = row
        if d.get("status") != "ok" and d.get("running"):
            cpu_ref.setdefault(d["running"], {"preset": d["running"], "status": "not finished"})

    # the presets
    rows = []
    for preset in args.presets.split(","):
        d = _load(parts / f"preset-{preset}.json") or {"preset": preset}
        rc, status = _rc_status(parts, f"preset-{preset}")
        d["preset"] = preset
        d["status"] = status or d.get("status") or "not run"
        if status == "ok" and d.get("psnr") is None:
            d["status"] = "incomplete"
        ref = cpu_ref.get(preset)
        if ref and ref.get("psnr") is not None and d.get("psnr") is not None:
            d["cpu_psnr"] = ref["psnr"]
            d["cpu_run_s"] = ref["run_s"]
            d["psnr_delta_db"] = d["psnr"] - ref["psnr"]
            d["psnr_within_tolerance"] = abs(d["psnr_delta_db"]) <= PSNR_TOLERANCE_DB
        elif ref:
            d["cpu_psnr"] = None
            d["cpu_status"] = ref.get("status", "not run")
        whole_house = is_whole_house(d.get("image", ""))
        rec = CPU_RECORDED.get((preset, d.get("epochs")))
        if whole_house and rec and d.get("psnr") is not None:
            d["cpu_recorded"] = {"psnr": rec[0], "source": rec[1], "delta_db": d["psnr"] - rec[0]}
        full = d.get("full")
        rec = full and CPU_RECORDED.get((preset, full.get("epochs")))
        if whole_house and rec and full.get("psnr") is not None:
            full["cpu_recorded"] = {
                "psnr": rec[0],
                "source": rec[1],
                "delta_db": full["psnr"] - rec[0],
            }
        rows.append(d)
    if smoke:
        skipped += [
            f"compile and CUDA-graph capture: {NEEDS_CUDA}",
            f"kernels and synchronisations per step: {NEEDS_CUDA}",
            f"peak GPU memory: {NEEDS_CUDA}",
        ]

    # the command line
    cli = _load(parts / "cli.json") or {}
    rc, status = _rc_status(parts, "cli")
    cli["status"] = status or cli.get("status") or "not run"
    if smoke:
        cli["peak_gpu_gib"] = None

    # targets (meaningful on a GPU only)
    by = {r["preset"]: r for r in rows}
    targets = {}
    if not smoke:
        paper = by.get("paper-house-25", {})
        if paper.get("projected_run_s") is not None:
            v = paper["projected_run_s"]
            targets["paper-house-25 500 epochs <= 60 s (projected from 20)"] = {
                "value_s": v,
                "warm_s": paper["projected_run_warm_s"],
                "met": v <= TARGET_PAPER_S,
            }
        fast = by.get("fast", {}).get("full")
        if fast and fast.get("run_s") is not None:
            targets["fast on House <= 3 s"] = {
                "value_s": fast["run_s"],
                "cold_s": fast["run_s"] + (by["fast"].get("compile_capture_s") or 0.0),
                "met": fast["run_s"] <= TARGET_FAST_S,
            }
        if cli.get("wall_s") is not None and cli.get("rc") == 0:
            targets["12 MP RGB CLI <= 60 s"] = {
                "value_s": cli["wall_s"],
                "met": cli["wall_s"] <= TARGET_CLI_S,
            }
        deltas = {r["preset"]: r["psnr_delta_db"] for r in rows if "psnr_delta_db" in r}
        if deltas:
            targets["PSNR within 0.1 dB of the CPU (equal seed and epochs)"] = {
                "delta_db": deltas,
                "met": all(abs(v) <= PSNR_TOLERANCE_DB for v in deltas.values()),
            }
    else:
        skipped.append(f"targets: {NEEDS_CUDA}")

    result = {
        "meta": meta,
        "tests": tests,
        "presets": rows,
        "cpu_reference": list(cpu_ref.values()),
        "cli": cli,
        "targets": targets,
        "skipped": skipped,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu_check.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print_table(result, path)
    return 0


def _f(v, fmt: str = ".2f", none: str = "-") -> str:
    return none if v is None else format(v, fmt)


def print_table(result: dict, path: Path) -> None:
    meta, tests, cli = result["meta"], result["tests"], result["cli"]
    for line in result["skipped"]:
        print(line)
    print(
        f"# {meta.get('device')}, torch {meta.get('torch')}, src {meta['src_sha1']}, "
        f"seed 0, {meta['elapsed_s']} s of {meta['budget_s']} -> {path}"
    )
    print(f"cuda tests: {tests['status']}" + (f" ({tests['summary']})" if tests["summary"] else ""))
    print(
        "| preset | status | compile s | s/epoch | kernels/step | syncs/step | peak GiB "
        "| PSNR@N (CPU, Δ) | own run s, PSNR | projected run s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in result["presets"]:
        prof = r.get("profile") or {}
        cpu = f"{_f(r.get('cpu_psnr'))}, {_f(r.get('psnr_delta_db'), '+.2f')}"
        if r.get("cpu_psnr") is None and r.get("cpu_recorded"):
            rec = r["cpu_recorded"]
            cpu = f"{rec['psnr']:.2f} rec., {rec['delta_db']:+.2f}"
        full = r.get("full") or {}
        own = f"{_f(full.get('run_s'))}, {_f(full.get('psnr'))}" if full else "-"
        if full.get("cpu_recorded"):
            own += f" (rec. {full['cpu_recorded']['psnr']:.2f})"
        status = r["status"]
        if status != "ok" and r.get("epoch_seconds"):
            status += f" at epoch {len(r['epoch_seconds'])}"
        print(
            f"| {r['preset']} | {status} | {_f(r.get('compile_capture_s'), '.1f')} "
            f"| {_f(r.get('epoch_s'), '.3f')} | {_f(prof.get('kernels_per_step'), '.0f')} "
            f"| {_f(prof.get('syncs_per_step'), '.3f')} | {_f(r.get('peak_gpu_gib'))} "
            f"| {_f(r.get('psnr'))}@{r.get('epochs', '-')} ({cpu}) | {own} "
            f"| {_f(r.get('projected_run_s'), '.1f')} ({r.get('epochs_of_preset', '-')} ep.) |"
        )
    print(
        f"CLI {cli.get('megapixels', 0):.1f} MP: {cli['status']}, wall {_f(cli.get('wall_s'), '.1f')}"
        f" s, peak GPU {_f(cli.get('peak_gpu_gib'))} GiB, PSNR {_f(cli.get('psnr'))} dB "
        f"(input {_f(cli.get('psnr_input'))})"
    )
    for name, t in result["targets"].items():
        if "delta_db" in t:
            worst = max(t["delta_db"].values(), key=abs)
            what = f"largest {worst:+.2f} dB; {', '.join(t['delta_db'])} compared"
        else:
            what = f"{t['value_s']:.1f} s"
        print(f"target {name}: {'met' if t['met'] else 'MISSED'} ({what})")


# --------------------------------------------------------------------------- main


def check_main(args) -> int:
    if args.check == "collect":
        return collect(args)
    if args.part is None:
        print("gpu_bench --check: needs --part FILE", file=sys.stderr)
        return 2
    if args.check == "preset":
        return check_preset(args)
    if args.check == "cpu-ref":
        return check_cpu_ref(args)
    return check_cli(args)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=None, help=f"default {PRESETS} ({CHECK_PRESETS} checked)")
    p.add_argument("--image", default=str(HOUSE))
    p.add_argument(
        "--cpu",
        default="20",
        choices=["none", "20", "all"],
        help="CPU reference runs: none; 20 epochs (and full runs of the short "
        "presets); all (full CPU runs of every preset: hours for the paper's)",
    )
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    g = p.add_argument_group("check stages (benchmarks/gpu_check.sh)")
    g.add_argument("--check", choices=["preset", "cpu-ref", "cli", "collect"], default=None)
    g.add_argument("--part", default=None, help="the stage's JSON part")
    g.add_argument("--device", default="cuda")
    g.add_argument("--epochs", type=int, default=20)
    g.add_argument("--full-epochs", type=int, default=None, help="epochs of the preset's own run")
    g.add_argument("--no-full", action="store_true", help="skip the presets' own runs")
    g.add_argument("--crop", type=int, default=0, help="centre crop of the image (0: whole)")
    g.add_argument("--cores", default=None, help="pin to these cores, e.g. 0-7")
    g.add_argument("--threads", type=int, default=None, help="torch threads")
    g.add_argument("--size", default="4000x3000", help="cli: WIDTHxHEIGHT")
    g.add_argument("--cli-epochs", type=int, default=None, help="cli: --epochs (default: none)")
    g.add_argument("--work", default=None, help="cli: scratch folder for the images")
    g.add_argument("--parts", default=None, help="collect: the folder of the parts")
    g.add_argument("--mode", default="cuda", choices=["cuda", "cpu-smoke"])
    g.add_argument("--budget", type=float, default=None)
    g.add_argument("--elapsed", type=float, default=None)
    args = p.parse_args(argv)
    if args.check:
        args.presets = args.presets or CHECK_PRESETS
        if args.check == "cli" and args.work is None:
            args.work = str(Path(args.part).parent if args.part else ROOT / "out")
        return check_main(args)
    args.presets = args.presets or PRESETS
    cuda_or_exit()
    import torch

    if not args.skip_tests:
        rc = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-m", "cuda", str(ROOT / "tests")]
        )
        if rc != 0:
            print(f"gpu-bench: the cuda tests failed (exit {rc})", file=sys.stderr)
            return rc
    torch.backends.cuda.matmul.allow_tf32 = False  # keep log-joint rankings as in float32
    clean, _, what = load_clean(args.image)
    rows = []
    for preset in args.presets.split(","):
        print(f"# {preset} ...", file=sys.stderr, flush=True)
        rows.append(bench_preset(preset, clean, args.cpu))
    meta = {
        "image": what,
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "seed": 0,
        "time": _dt.datetime.now().isoformat(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu-bench-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    print(
        f"# {meta['device']}, torch {meta['torch']}, House {clean.shape[1]}x{clean.shape[0]}, "
        f"seed 0 -> {path}"
    )
    print(
        "| preset | warm-up s | s/epoch | kernels/step | syncs/step | peak GiB | TFLOP/s "
        "| PSNR@20 (CPU) | PSNR end (CPU) | run s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['warmup_s']:.1f} | {r['epoch_s']:.3f} | "
            f"{_f(r.get('kernels_per_step'), '.0f')} | {_f(r.get('syncs_per_step'))} | "
            f"{r['peak_gpu_gib']:.2f} | {r['tflops']:.2f} | {r['psnr_20']:.2f} "
            f"({r.get('cpu_psnr_20', float('nan')):.2f}) | {r['psnr_end']:.2f} "
            f"({r.get('cpu_psnr_end', float('nan')):.2f}) | {r['run_s']:.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
