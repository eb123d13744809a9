#!/usr/bin/env python
"""Training throughput of evodenoise presets, and a projection of their time on a GPU.

For each preset, times whole training epochs on one image (the benchmark protocol's noise,
seed 0) and reports:

- seconds per epoch (the fastest of ``--epochs`` epochs) and patches per epoch;
- decoder evaluations per epoch and per second: every patch re-scores its S states, scores
  its G·P·C children and back-propagates through k gradient states (``grad_states``, or S);
- arithmetic per epoch (multiply-adds ×2 of the decoder's matrix products; one-bit children
  pay only the layers after the first, a backward pass counts twice a forward pass);
- torch operator calls per mini-batch step (counted with a dispatch mode on a small crop:
  every call is about one kernel launch on a GPU).

From these, ``--project`` gives two lower bounds for the preset's whole run (its own number of
epochs) on a GPU: the arithmetic at ``--gpu-tflops``, and the operator calls at
``--launch-us`` each (eager PyTorch issues them one by one from Python). The projection is the
larger of the two. It is an estimate, not a measurement: measure on a GPU where one is lent
(``benchmarks/run.py --device cuda``).

Example::

    python benchmarks/throughput.py --image ../shared/benchmark/images/house.png \\
        --presets fast,paper-house-25 --threads 2 --project
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("evodenoise") is None:
    sys.path.insert(0, str(ROOT / "src"))


def decoder_flops(cfg, channels: int) -> tuple[int, int]:
    """FLOPs of one full decoder evaluation and of the layers after the first."""
    widths = [cfg.n_latents, *cfg.hidden, cfg.patch_size ** 2 * channels]
    layers = [2 * a * b for a, b in zip(widths[:-1], widths[1:])]
    return sum(layers), sum(layers[1:])


def work_per_epoch(cfg, n_patches: int, channels: int) -> dict:
    """Decoder evaluations and FLOPs of one training epoch over ``n_patches`` patches."""
    n = min(n_patches, cfg.train_patches)
    children = cfg.n_generations * cfg.n_parents * cfg.n_children
    k = cfg.grad_states or cfg.n_states
    full, rest = decoder_flops(cfg, channels)
    return {
        "patches": n,
        "steps": math.ceil(n / cfg.batch_size),
        "evaluations": n * (cfg.n_states + children + k),
        "flops": n * (cfg.n_states * full + children * rest + 3 * k * full),
    }


def count_ops_per_step(cfg, image: np.ndarray, sigma: float, crop: int = 48) -> float:
    """Torch operator calls per mini-batch step of one epoch, on a ``crop``² corner."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import evodenoise
    from evodenoise.patches import count_patches

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    small = image[:crop, :crop]
    cfg = cfg.replace(epochs=2, min_visits=0)
    steps = work_per_epoch(cfg, count_patches(*small.shape[:2], cfg.patch_size), 1)["steps"]
    counts = []

    def cb(entry):
        counts.append(Count.calls)

    with Count():
        evodenoise.denoise(small, sigma, config=cfg, seed=0, callback=cb)
    return (counts[1] - counts[0]) / steps  # the second epoch: no set-up calls


def measure(preset: str, image: np.ndarray, sigma: float, epochs: int, device: str) -> dict:
    import evodenoise
    from evodenoise.patches import count_patches

    cfg = evodenoise.get_preset(preset)
    seconds = []
    run_cfg = cfg.replace(epochs=epochs, min_visits=0, final_sweeps=1)
    evodenoise.denoise(image, sigma, config=run_cfg, seed=0, device=device,
                       callback=lambda e: e["phase"] == "train" and seconds.append(e["seconds"]))
    work = work_per_epoch(cfg, count_patches(*image.shape[:2], cfg.patch_size), 1)
    best = min(seconds)
    return {"preset": preset, "epoch_seconds": best, "epochs_of_preset": cfg.epochs, **work,
            "evaluations_per_s": work["evaluations"] / best, "gflops": work["flops"] / best / 1e9}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default=str(ROOT / "sample_images" / "camera.png"))
    p.add_argument("--sigma", type=float, default=25.0, help="noise σ, 8-bit units")
    p.add_argument("--presets", default="fast,paper-house-25")
    p.add_argument("--epochs", type=int, default=2, help="epochs timed per preset")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--project", action="store_true", help="project each preset's GPU time")
    p.add_argument("--gpu-tflops", type=float, default=25.0,
                   help="sustained FP32 TFLOP/s assumed for the projection")
    p.add_argument("--launch-us", type=float, default=8.0,
                   help="µs per eager operator call assumed for the projection")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)

    import torch
    from PIL import Image

    import evodenoise
    from evodenoise.corrupt import add_noise

    if args.threads:
        torch.set_num_threads(args.threads)
    clean = np.asarray(Image.open(args.image).convert("L"), dtype=np.float32) / 255
    noisy = add_noise(clean, args.sigma / 255, seed=0)
    rows = []
    print(f"# {Path(args.image).name} {clean.shape[1]}x{clean.shape[0]}, σ={args.sigma:g}, "
          f"device {args.device}, torch threads {torch.get_num_threads()}, "
          f"torch {torch.__version__}, evodenoise {evodenoise.__version__}, seed 0")
    print("| preset | s/epoch | patches | decoder evals/epoch | evals/s | GFLOP/epoch | GFLOP/s "
          "| ops/step | projected GPU run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        row = measure(preset, noisy, args.sigma / 255, args.epochs, args.device)
        projected = "-"
        if args.project:
            cfg = evodenoise.get_preset(preset)
            row["ops_per_step"] = count_ops_per_step(cfg, noisy, args.sigma / 255)
            e = row["epochs_of_preset"]
            row["gpu_flop_bound_s"] = e * row["flops"] / (args.gpu_tflops * 1e12)
            row["gpu_launch_bound_s"] = e * row["steps"] * row["ops_per_step"] * args.launch_us * 1e-6
            row["gpu_projected_s"] = max(row["gpu_flop_bound_s"], row["gpu_launch_bound_s"])
            projected = (f"{row['gpu_projected_s']:.0f} s ({e} epochs; arithmetic "
                         f"{row['gpu_flop_bound_s']:.0f} s, launches {row['gpu_launch_bound_s']:.0f} s)")
        rows.append(row)
        print(f"| {preset} | {row['epoch_seconds']:.1f} | {row['patches']} | "
              f"{row['evaluations'] / 1e6:.1f} M | {row['evaluations_per_s'] / 1e6:.2f} M | "
              f"{row['flops'] / 1e9:.0f} | {row['gflops']:.1f} | "
              f"{row.get('ops_per_step', float('nan')):.0f} | {projected} |", flush=True)
    if args.json:
        meta = {"image": args.image, "sigma": args.sigma, "device": args.device,
                "threads": torch.get_num_threads(), "gpu_tflops": args.gpu_tflops,
                "launch_us": args.launch_us, "seed": 0}
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
