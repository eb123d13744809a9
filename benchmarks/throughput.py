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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("evodenoise") is None:
    sys.path.insert(0, str(ROOT / "src"))


def decoder_flops(cfg, channels: int) -> tuple[int, int]:
    """FLOPs of one full decoder evaluation and of the layers after the first."""
    widths = [cfg.n_latents, *cfg.hidden, cfg.patch_size**2 * channels]
    layers = [2 * a * b for a, b in zip(widths[:-1], widths[1:])]
    return sum(layers), sum(layers[1:])


def sized(cfg, image: np.ndarray, sigma: float):
    """``cfg`` with the patch size a run on ``image`` (gray, [0, 1]) at ``sigma`` uses: its
    own, or (patch_size 0) the one evodenoise chooses from the image."""
    if cfg.patch_size:
        return cfg
    import torch

    try:
        from evodenoise.plan import choose_patch_size
    except ImportError:  # before the run planning moved out of restore.py
        from evodenoise.plan import choose_patch_size
    scale = 255.0  # the library works on 0-255 values
    plane = torch.from_numpy(np.asarray(image, np.float32) * scale)
    return cfg.replace(patch_size=choose_patch_size(plane, None, sigma * scale, min(image.shape)))


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


VIEW_EVENTS = {
    "aten::view",
    "aten::slice",
    "aten::select",
    "aten::unsqueeze",
    "aten::expand",
    "aten::as_strided",
    "aten::t",
    "aten::permute",
    "aten::alias",
    "aten::detach",
    "aten::reshape",
    "aten::flatten",
    "aten::squeeze",
    "aten::_unsafe_view",
    "aten::transpose",
    "aten::unbind",
    "aten::split",
    "aten::lift_fresh",
    "aten::resolve_conj",
    "aten::resolve_neg",
    "aten::empty",
    "aten::empty_strided",
}


def count_ops_per_step(cfg, image: np.ndarray, sigma: float, crop: int = 48) -> dict:
    """Torch operator calls per mini-batch step of one epoch, on a ``crop``² corner (eager).

    ``dispatched``: every call that reaches the dispatcher (views included; the count the GPU work
    started from); ``launches``: the calls that run work (not views, not profiler marks), about
    one kernel launch each on a GPU. Counted as a GPU runs them: distinct bits by one top-k,
    not by the CPU's Floyd loop (evodenoise.evolution.FLOYD_ON_CPU).
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    import evodenoise
    import evodenoise.evolution as evolution
    from evodenoise.patches import count_patches

    class Count(TorchDispatchMode):
        calls = launches = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            Count.launches += not (func.is_view or func.namespace == "profiler")
            return func(*args, **(kwargs or {}))

    small = image[:crop, :crop]
    cfg = cfg.replace(epochs=2, min_visits=0, compile="off")
    steps = work_per_epoch(cfg, count_patches(*small.shape[:2], cfg.patch_size), 1)["steps"]
    counts = []

    def cb(entry):
        if entry["phase"] == "train":
            counts.append((Count.calls, Count.launches))

    floyd, evolution.FLOYD_ON_CPU = getattr(evolution, "FLOYD_ON_CPU", False), False
    try:
        with Count():
            evodenoise.denoise(small, sigma, config=cfg, seed=0, callback=cb)
    finally:
        evolution.FLOYD_ON_CPU = floyd
    (c0, l0), (c1, l1) = counts  # the second epoch: no set-up calls
    return {"dispatched": (c1 - c0) / steps, "launches": (l1 - l0) / steps}


def count_compiled_kernels(cfg, image: np.ndarray, sigma: float, crop: int = 48) -> float:
    """Kernels per mini-batch step of the compiled path (CPU inductor, ``cfg.compile = "on"``),
    on a ``crop``² corner: the kernels the compiled E-step and M-step run (generated fused
    kernels and library calls) plus the eager calls around them in an E-batch. On CUDA one
    E-batch is one captured graph holding all of these. Compiles: minutes on a small CPU."""
    import torch
    import torch._inductor.config as inductor_config

    import evodenoise
    from evodenoise.patches import count_patches

    inductor_config.cpp.enable_kernel_profile = True  # name every generated kernel
    small = image[:crop, :crop]
    cfg = cfg.replace(epochs=2, min_visits=0, compile="on")
    steps = work_per_epoch(cfg, count_patches(*small.shape[:2], cfg.patch_size), 1)["steps"]
    prof = torch.profiler.profile()

    def cb(entry):  # profile the second epoch only (the first compiles)
        if entry["epoch"] == 1:
            prof.__enter__()

    evodenoise.denoise(small, sigma, config=cfg, seed=0, callback=cb)
    prof.__exit__(None, None, None)
    kernels = 0
    for e in prof.events():
        parent = e.cpu_parent
        if parent is not None and parent.name.startswith("## Call CompiledFxGraph"):
            kernels += e.name not in VIEW_EVENTS  # a generated kernel or a library call
        elif parent is None and e.name.startswith("aten::"):
            kernels += e.name not in VIEW_EVENTS  # eager, around the compiled calls
    # the epoch's end (π, σ², the log) and its start are not per step: close to nothing
    return kernels / steps


def measure(
    preset: str, image: np.ndarray, sigma: float, epochs: int, device: str, compile: str = "auto"
) -> dict:
    import evodenoise
    from evodenoise.patches import count_patches

    cfg = sized(evodenoise.get_preset(preset), image, sigma)
    seconds = []
    run_cfg = cfg.replace(epochs=epochs, min_visits=0, final_sweeps=1, compile=compile)
    evodenoise.denoise(
        image,
        sigma,
        config=run_cfg,
        seed=0,
        device=device,
        callback=lambda e: e["phase"] == "train" and seconds.append(e["seconds"]),
    )
    work = work_per_epoch(cfg, count_patches(*image.shape[:2], cfg.patch_size), 1)
    best = min(seconds)
    return {
        "preset": preset,
        "compile": compile,
        "epoch_seconds": best,
        "first_epoch_seconds": seconds[0],
        "epochs_of_preset": cfg.epochs,
        **work,
        "evaluations_per_s": work["evaluations"] / best,
        "gflops": work["flops"] / best / 1e9,
    }


def project(row: dict, cfg, tflops: float = 25.0, launch_us: float = 8.0) -> dict:
    """Projected GPU seconds of the preset's whole run (its own epochs), the GPU cost model: the
    larger of the arithmetic at ``tflops`` and the launches at ``launch_us`` each, where a
    captured CUDA graph counts as one launch plus 1 µs per kernel in it.

    The GPU path (compile ``auto`` on CUDA) replays one graph per chunk of E-batches holding at
    least 8 Adam steps (evodenoise.train._train_epoch) and draws the chunk's random numbers with
    one more launch; the kernels in the graph are ``kernels_per_step`` (counted on the compiled
    CPU step, ``--compiled``) or, without that count, the eager launches (no fusion: an upper
    bound). ``gpu_projected_eager_s`` is eager PyTorch, every call a launch.
    """
    e, steps = row["epochs_of_preset"], row["steps"]
    per_e = max(1, math.ceil(max(cfg.estep_batch, cfg.batch_size) / cfg.batch_size))
    per_graph = per_e * math.ceil(8 / per_e)  # Adam steps per captured graph
    kernels = row.get("kernels_per_step", row["launches_per_step"])
    flop_s = e * row["flops"] / (tflops * 1e12)
    launch_s = e * steps * (2 * launch_us / per_graph + kernels * 1.0) * 1e-6
    eager_s = e * steps * row["launches_per_step"] * launch_us * 1e-6
    return {
        "gpu_flop_bound_s": flop_s,
        "gpu_launch_bound_s": launch_s,
        "gpu_projected_s": max(flop_s, launch_s),
        "gpu_projected_eager_s": max(flop_s, eager_s),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--image", default=str(ROOT / "sample_images" / "camera.png"))
    p.add_argument("--sigma", type=float, default=25.0, help="noise σ, 8-bit units")
    p.add_argument("--presets", default="fast,paper-house-25")
    p.add_argument("--epochs", type=int, default=2, help="epochs timed per preset")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--project", action="store_true", help="project each preset's GPU time")
    p.add_argument(
        "--gpu-tflops",
        type=float,
        default=25.0,
        help="sustained FP32 TFLOP/s assumed for the projection",
    )
    p.add_argument(
        "--launch-us",
        type=float,
        default=8.0,
        help="µs per eager operator call assumed for the projection",
    )
    p.add_argument(
        "--compile",
        default="auto",
        choices=["auto", "on", "off"],
        help="Config.compile of the timed epochs (compiled: the first epoch compiles)",
    )
    p.add_argument(
        "--compiled",
        action="store_true",
        help="with --project: count the kernels of the compiled step (compiles: slow)",
    )
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
    print(
        f"# {Path(args.image).name} {clean.shape[1]}x{clean.shape[0]}, σ={args.sigma:g}, "
        f"device {args.device}, torch threads {torch.get_num_threads()}, "
        f"torch {torch.__version__}, evodenoise {evodenoise.__version__}, seed 0"
    )
    print(
        "| preset | s/epoch | patches | decoder evals/epoch | evals/s | GFLOP/epoch | GFLOP/s "
        "| ops/step | launches/step | kernels/step | projected GPU run |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for preset in args.presets.split(","):
        row = measure(preset, noisy, args.sigma / 255, args.epochs, args.device, args.compile)
        projected = "-"
        if args.project:
            cfg = sized(evodenoise.get_preset(preset), noisy, args.sigma / 255)
            ops = count_ops_per_step(cfg, noisy, args.sigma / 255)
            row["ops_per_step"] = ops["dispatched"]
            row["launches_per_step"] = ops["launches"]
            if args.compiled:
                row["kernels_per_step"] = count_compiled_kernels(cfg, noisy, args.sigma / 255)
            row.update(project(row, cfg, args.gpu_tflops, args.launch_us))
            projected = (
                f"{row['gpu_projected_s']:.0f} s ({row['epochs_of_preset']} epochs; "
                f"arithmetic {row['gpu_flop_bound_s']:.0f} s, launches "
                f"{row['gpu_launch_bound_s']:.0f} s; eager "
                f"{row['gpu_projected_eager_s']:.0f} s)"
            )
        rows.append(row)
        print(
            f"| {preset} | {row['epoch_seconds']:.1f} | {row['patches']} | "
            f"{row['evaluations'] / 1e6:.1f} M | {row['evaluations_per_s'] / 1e6:.2f} M | "
            f"{row['flops'] / 1e9:.0f} | {row['gflops']:.1f} | "
            f"{row.get('ops_per_step', float('nan')):.0f} | "
            f"{row.get('launches_per_step', float('nan')):.0f} | "
            f"{row.get('kernels_per_step', float('nan')):.0f} | {projected} |",
            flush=True,
        )
    if args.json:
        meta = {
            "image": args.image,
            "sigma": args.sigma,
            "device": args.device,
            "threads": torch.get_num_threads(),
            "gpu_tflops": args.gpu_tflops,
            "launch_us": args.launch_us,
            "seed": 0,
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
