#!/usr/bin/env python
"""The GPU path measured on a CUDA machine (issue 10): ``make gpu-bench``.

1. runs the ``cuda`` tests (``pytest -m cuda``);
2. per preset (default ``fast,quality,inpaint,paper-house-25``) on House
   (``../shared/benchmark/images/house.png``, read in place, never copied): warm-up/compile
   time (first epoch), seconds per steady epoch, kernels and synchronisations per step
   (torch.profiler over one epoch), peak GPU memory, achieved TFLOP/s (work model of
   ``throughput.py``), PSNR after 20 epochs and at the end of the preset's run, each against
   the CPU run with the same seed (``--cpu`` picks which CPU runs are made: the 20-epoch one by
   default, the full one only for presets whose full run is short on a CPU);
3. writes ``benchmarks/results/gpu-bench-<time>.json`` and prints a table.

``inpaint`` is measured on House with 50 % of the pixels missing, the other presets on House
with noise σ = 25 (the benchmark protocol's seeds). Exits 2 with a one-line message where no
CUDA device exists.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("evodenoise") is None:
    sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

HOUSE = ROOT.parent / "shared" / "benchmark" / "images" / "house.png"
PRESETS = "fast,quality,inpaint,paper-house-25"
CPU_FULL = {"fast", "quality", "inpaint"}  # full CPU runs of minutes, not hours
SYNC_EVENTS = ("cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize",
               "cudaMemcpy", "cudaStreamIsCapturing")


def cuda_or_exit() -> None:
    import torch

    if not torch.cuda.is_available():
        build = "a CPU-only build of torch" if torch.version.cuda is None else "no CUDA device"
        print(f"gpu-bench: needs a CUDA device ({build} here); nothing measured", file=sys.stderr)
        sys.exit(2)


def task_input(preset: str, clean: np.ndarray):
    """(noisy or masked image, sigma, mask) of the preset's task, protocol seeds."""
    from evodenoise.corrupt import add_noise, random_mask

    if "inpaint" in preset:
        mask = random_mask(clean.shape, 0.5, seed=0)
        return np.where(mask, 0.0, clean).astype(np.float32), None, mask
    return add_noise(clean, 25 / 255, seed=0), 25 / 255, None


def run_once(preset: str, clean: np.ndarray, device: str, epochs: int | None = None,
             callback=None) -> dict:
    import evodenoise
    from evodenoise.metrics import psnr
    from throughput import sized

    cfg = sized(evodenoise.get_preset(preset), task_input(preset, clean)[0], 25 / 255)
    if epochs is not None:
        cfg = cfg.replace(epochs=epochs, min_visits=0)
    image, sigma, mask = task_input(preset, clean)
    t0 = time.perf_counter()
    if mask is None:
        out, res = evodenoise.denoise(image, sigma, config=cfg, seed=0, device=device,
                                      callback=callback)
    else:
        out, res = evodenoise.inpaint(image, mask, config=cfg, seed=0, device=device,
                                      callback=callback)
    return {"psnr": psnr(clean, out), "seconds": time.perf_counter() - t0,
            "epochs": res.config.epochs, "log": res.log}


def profile_epoch(preset: str, clean: np.ndarray) -> dict:
    """Kernels and synchronisations per step over the second epoch of a 2-epoch CUDA run."""
    import torch

    import evodenoise
    from evodenoise.patches import count_patches
    from throughput import sized, work_per_epoch

    cfg = sized(evodenoise.get_preset(preset), task_input(preset, clean)[0], 25 / 255)
    steps = work_per_epoch(cfg, count_patches(*clean.shape, cfg.patch_size), 1)["steps"]
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    prof = torch.profiler.profile(activities=acts)

    def cb(entry):
        if entry["epoch"] == 1:
            torch.cuda.synchronize()
            prof.__enter__()

    run_once(preset, clean, "cuda", epochs=2, callback=cb)
    torch.cuda.synchronize()
    prof.__exit__(None, None, None)
    kernels = syncs = launches = 0
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels += 1
        elif e.name.startswith(SYNC_EVENTS):
            syncs += 1
        elif e.name in ("cudaLaunchKernel", "cudaGraphLaunch", "cuLaunchKernel"):
            launches += 1
    # The profiled span also holds the epoch's end (π, σ², the log: one sync) and the final
    # estimate's start; per step these round to nothing.
    return {"kernels_per_step": kernels / steps, "syncs_per_step": syncs / steps,
            "launches_per_step": launches / steps, "steps": steps}


def bench_preset(preset: str, clean: np.ndarray, cpu: str) -> dict:
    import torch

    import evodenoise
    from evodenoise.patches import count_patches
    from throughput import sized, work_per_epoch

    cfg = sized(evodenoise.get_preset(preset), task_input(preset, clean)[0], 25 / 255)
    row = {"preset": preset, "config": cfg.to_dict()}
    torch.cuda.reset_peak_memory_stats()
    seconds = []
    short = run_once(preset, clean, "cuda", epochs=20, callback=lambda e: seconds.append(
        e["seconds"]))
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=PRESETS)
    p.add_argument("--image", default=str(HOUSE))
    p.add_argument("--cpu", default="20", choices=["none", "20", "all"],
                   help="CPU reference runs: none; 20 epochs (and full runs of the short "
                        "presets); all (full CPU runs of every preset: hours for the paper's)")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args(argv)
    cuda_or_exit()
    import torch
    from PIL import Image

    if not args.skip_tests:
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-m", "cuda",
                              str(ROOT / "tests")])
        if rc != 0:
            print(f"gpu-bench: the cuda tests failed (exit {rc})", file=sys.stderr)
            return rc
    torch.backends.cuda.matmul.allow_tf32 = False  # keep log-joint rankings as in float32
    clean = np.asarray(Image.open(args.image).convert("L"), dtype=np.float32) / 255
    rows = []
    for preset in args.presets.split(","):
        print(f"# {preset} ...", file=sys.stderr, flush=True)
        rows.append(bench_preset(preset, clean, args.cpu))
    meta = {"image": args.image, "device": torch.cuda.get_device_name(),
            "torch": torch.__version__, "seed": 0, "time": _dt.datetime.now().isoformat()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu-bench-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=str))
    print(f"# {meta['device']}, torch {meta['torch']}, House {clean.shape[1]}x{clean.shape[0]}, "
          f"seed 0 -> {path}")
    print("| preset | warm-up s | s/epoch | kernels/step | syncs/step | peak GiB | TFLOP/s "
          "| PSNR@20 (CPU) | PSNR end (CPU) | run s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | {r['warmup_s']:.1f} | {r['epoch_s']:.3f} | "
              f"{r['kernels_per_step']:.0f} | {r['syncs_per_step']:.2f} | "
              f"{r['peak_gpu_gib']:.2f} | {r['tflops']:.2f} | {r['psnr_20']:.2f} "
              f"({r.get('cpu_psnr_20', float('nan')):.2f}) | {r['psnr_end']:.2f} "
              f"({r.get('cpu_psnr_end', float('nan')):.2f}) | {r['run_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
