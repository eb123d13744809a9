#!/usr/bin/env python
"""Where a restoration run spends its time: seconds, arithmetic and achieved rate per phase.

Runs one ``denoise`` (by default the ``fast`` preset on House, σ = 25, seed 0) with timers
wrapped around the engine's functions, and prints per phase its process CPU seconds
(exclusive: a phase's time excludes the phases called inside it), its share of the run, the
multiply-adds ×2 of its matrix products and the rate they ran at, against the rate of a large
float32 matrix product measured on the same machine and threads in the same run.

Phases: training E-step (rescoring the sets K_n, parent selection, mutation, scoring the
children, de-duplication and survivors, posterior sums), M-step (gradients, Adam), closed-form
π and σ², random numbers; estimate (E-step sweeps of the pool's and the fresh patches,
dictionary, posterior means, folding); second stage (block matching, the transforms and
aggregation, the coarse scale's DCTs). "epoch loop" and "bands" are what training and the estimate
spend outside the phases named (Python, indexing, write-back, allocation); "other" is the rest
of the run (planning, patch extraction, the colour transform).

With ``--src`` (repeatable) the same run is profiled for each source tree (e.g. the code
before a change, ``git archive REV src | tar -x -C /tmp/before``), in one process, one after
the other. Example::

    python benchmarks/phases.py
    python benchmarks/phases.py --src /tmp/before/src --src src --epochs 2 --json out.json
    python benchmarks/phases.py --image skimage:astronaut --size 1024 1365

On one torch thread: with more, a run's E-steps run in worker threads (``parallel.py``),
whose time the phases cannot attribute; ``benchmarks/wall_pair.py`` times whole runs on all
threads.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
HOUSE = ROOT.parent / "shared" / "benchmark" / "images" / "house.png"

# (label, module, attribute): the functions timed, innermost calls attributed to themselves.
TIMED = [
    ("E-step: first layer of K_n, bookkeeping", "evolution", "estep"),
    ("E-step: parent selection", "evolution", "_select_parents"),
    ("E-step: mutation", "evolution", "distinct_bits"),
    ("E-step: mutation", "evolution", "_flips"),
    ("E-step: mutation", "evolution", "_bitflip"),
    ("E-step: de-duplication, survivors", "evolution", "_survivors"),
    ("E-step: posterior sums", "train", "add_estep_sums"),
    ("E-step: unpack for the M-step", "train", "unpack"),
    ("random numbers", "train", "draw_noise"),
    ("M-step: gradients", "train", "mstep"),
    ("closed-form π, σ²", "train", "PosteriorStats"),
    ("estimate: dictionary", "estimate", "Dictionary"),
    ("estimate: dictionary seeds", "estimate", "_estimate_fresh"),
    ("estimate: posterior means", "estimate", "estimate_patches"),
    ("estimate: folding", "estimate", "fold_rows"),
    ("estimate: random numbers", "estimate", "PatchNoise.__call__"),
    ("second stage: block matching", "refine", "_match"),
    ("second stage: transforms, aggregation", "refine", "_filter"),
    ("second stage: coarse scale's DCTs", "refine", "_halve"),
    ("second stage: coarse scale's DCTs", "refine", "_take_low"),
]


CURRENT: list = [None]  # the Timer of the run being profiled


class Timer:
    """Exclusive process CPU time and FLOP per label; nested calls are charged to themselves."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.flop: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.stack: list[list] = []  # [label, start, time of children]
        self.context = "train"

    def wrap(self, label: str, fn, flop=None):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            name = f"{label}" if label.startswith(("estimate", "E-step")) else label
            if self.context == "estimate" and name.startswith("E-step"):
                name = "estimate: E-step sweeps" + name[len("E-step") :]
            self.stack.append([name, time.process_time(), 0.0])
            try:
                out = fn(*args, **kwargs)
            finally:
                name, t0, inner = self.stack.pop()
                dt = time.process_time() - t0
                self.seconds[name] += dt - inner
                self.calls[name] += 1
                if self.stack:
                    self.stack[-1][2] += dt
            if flop is not None:
                self.flop[name] += flop(args, kwargs, out)
            return out

        return timed


def _widths(model) -> list[int]:
    layers = model.decoder.linears
    return [layers[0].in_features] + [layer.out_features for layer in layers]


def _score_flop(widths: list[int], states: int) -> float:
    """Matrix products of scoring ``states`` states from their first-layer pre-activations."""
    w = widths[1:]
    return 2.0 * states * sum((a + (i == 0)) * b for i, (a, b) in enumerate(zip(w[:-1], w[1:])))


def instrument(pkg: str, timer: Timer) -> None:
    """Wrap the engine functions of the package ``pkg`` (an imported evodenoise) in timers."""
    mods = {
        m: importlib.import_module(f"{pkg}.{m}")
        for m in ("evolution", "train", "estimate", "refine")
    }
    evolution, train, estimate = mods["evolution"], mods["train"], mods["estimate"]

    model_of: list = [None]  # the model of the E-step being timed (for its score function)
    prepare = evolution._prepare

    def timed_prepare(model, *args):
        model_of[0] = model
        wt, bias, score = prepare(model, *args)
        return wt, bias, timer.wrap("E-step: scoring (decoder)", score, score_flop)

    evolution._prepare = timed_prepare

    def estep_flop(args, kwargs, out):
        model, states = args[0], args[3]
        widths = _widths(model)
        b, s = states.shape[:2]
        # the first layer of K_n (unpacked states times the extended first layer), when the
        # caller has no pre-activations; scoring is counted by the score function
        return 2.0 * b * s * widths[0] * (widths[1] + 1) if kwargs.get("a") is None else 0.0

    def score_flop(args, kwargs, out):
        a = args[0]  # (B, M, width_1 + 1)
        return _score_flop(_widths(model_of[0]), a.shape[0] * a.shape[1])

    def mstep_flop(args, kwargs, out):
        model, s = args[0], args[3]
        widths = _widths(model)
        n = s.shape[0] * s.shape[1]
        fwd = 2.0 * n * sum(a * b for a, b in zip(widths[:-1], widths[1:]))
        return 3 * fwd  # forward, and a backward of about twice its products

    flops = {("evolution", "estep"): estep_flop, ("train", "mstep"): mstep_flop}
    for label, mod, attr in TIMED:
        owner = getattr(mods[mod], attr.split(".")[0]) if "." in attr else mods[mod]
        name = attr.split(".")[-1]
        setattr(owner, name, timer.wrap(label, getattr(owner, name), flops.get((mod, attr))))
    # train imported estep by name before it was wrapped: route it through the wrapper
    train.estep = evolution.estep
    estimate.estep = evolution.estep
    original = estimate.estimate_image

    @functools.wraps(original)
    def in_estimate(*args, **kwargs):
        timer.context = "estimate"
        try:
            return original(*args, **kwargs)
        finally:
            timer.context = "train"

    restore = importlib.import_module(f"{pkg}.restore")
    restore.estimate_image = timer.wrap("estimate: bands, indexing", in_estimate)
    restore.fit = timer.wrap("training: epoch loop, indexing", restore.fit)
    CURRENT[0] = timer
    optim = torch.optim.Adam
    if not getattr(optim.step, "_timed", False):  # wrapped once, timed by the current Timer
        step = optim.step

        def timed_step(*args, **kwargs):
            return CURRENT[0].wrap("M-step: Adam", step)(*args, **kwargs)

        timed_step._timed = True  # type: ignore[attr-defined]
        optim.step = timed_step


def matmul_rate(threads: int, n: int = 1024, reps: int = 10, trials: int = 5) -> float:
    """FLOP/s of a float32 (n × n) @ (n × n) product on ``threads`` threads: the best of
    ``trials`` timings of ``reps`` products, per second of process CPU time (as the phases are
    timed: on a shared machine other jobs' time is not counted)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(trials):
        t = time.process_time()
        for _ in range(reps):
            a @ b
        best = min(best, time.process_time() - t)
    return 2.0 * n**3 * reps / best


def profile(src: str, tag: str, args, noisy: np.ndarray, clean: np.ndarray) -> dict:
    from cpu_pair import load  # a source tree as a package

    pkg = load(f"evo_{tag}", src)
    timer = Timer()
    instrument(pkg.__name__, timer)
    cfg = pkg.get_preset(args.preset)
    if args.epochs:
        cfg = cfg.replace(epochs=args.epochs, min_visits=0)
    torch.set_num_threads(1)
    t0, w0 = time.process_time(), time.perf_counter()
    out, res = pkg.denoise(noisy, args.sigma / 255, config=cfg, seed=args.seed)
    total, wall = time.process_time() - t0, time.perf_counter() - w0
    other = total - sum(timer.seconds.values())
    mse = float(np.mean((np.asarray(out, np.float64) - clean) ** 2))
    return dict(
        src=src,
        total=total,
        wall=wall,
        psnr=10 * np.log10(1 / mse),
        epochs=res.config.epochs,
        patch_size=res.config.patch_size,
        phases={**timer.seconds, "other": other},
        flop=dict(timer.flop),
        calls=dict(timer.calls),
    )


def table(runs: list[dict], rate: float) -> str:
    labels = sorted({k for r in runs for k in r["phases"]}, key=_order)
    head = "| phase | " + " | ".join(f"s ({r['tag']}) | share | GFLOP/s" for r in runs) + " |"
    lines = [head, "|---" * (1 + 3 * len(runs)) + "|"]
    for label in labels:
        cells = []
        for r in runs:
            s = r["phases"].get(label, 0.0)
            f = r["flop"].get(label)
            rate_txt = f"{f / s / 1e9:.1f} ({f / s / rate:.0%})" if f and s > 0 else ""
            cells += [f"{s:.2f}", f"{s / r['total']:.0%}", rate_txt]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    total = " | ".join(f"**{r['total']:.2f}** | 100% | " for r in runs)
    lines.append(f"| **total** (CPU s) | {total}|")
    lines.append(
        "| PSNR (dB), wall s | "
        + " | ".join(f"{r['psnr']:.2f} | {r['wall']:.1f} s wall | " for r in runs)
        + "|"
    )
    return "\n".join(lines)


def _order(label: str) -> tuple:
    groups = ("E-step", "M-step", "closed", "random", "training", "estimate", "second", "other")
    return (next(i for i, g in enumerate(groups) if label.startswith(g)), label)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default=str(HOUSE), help="image path or skimage:NAME (House)")
    ap.add_argument("--sigma", type=float, default=25.0, help="noise σ on the 0–255 scale")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--epochs", type=int, default=0, help="override the epochs (0: the preset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="upscale (bicubic)")
    ap.add_argument("--src", action="append", help="source tree(s) to profile (default: src)")
    ap.add_argument("--json", help="write the runs here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from run import load_image  # a path or skimage:NAME

    from evodenoise.corrupt import add_noise
    from evodenoise.memory import keep_freed_memory

    keep_freed_memory()  # as the command line does

    clean = load_image(args.image)
    if args.size:  # as table 5's large images: bicubic, no anti-aliasing
        from skimage.transform import resize

        clean = resize(clean, (*args.size, *clean.shape[2:]), order=3, anti_aliasing=False)
    noisy = add_noise(clean * 255, args.sigma, seed=args.seed).astype(np.float32) / 255
    rate = matmul_rate(1)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch's one-off lazy imports
    runs = []
    for i, src in enumerate(args.src or [str(ROOT / "src")]):
        run = profile(src, str(i), args, noisy, clean)
        run["tag"] = Path(src).parent.name or src
        runs.append(run)
    print(
        f"{Path(args.image).name} σ={args.sigma:g}, preset {args.preset}, "
        f"1 thread, seed {args.seed}; float32 matrix product "
        f"{rate / 1e9:.1f} GFLOP per CPU second (rates below: per CPU second, and against it)"
    )
    print(table(runs, rate))
    if args.json:
        Path(args.json).write_text(json.dumps(dict(matmul_flops=rate, runs=runs), indent=1))


if __name__ == "__main__":
    main()
