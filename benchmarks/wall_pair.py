#!/usr/bin/env python
"""Wall time and PSNR of whole default runs of two source trees of evodenoise, alternately.

Both trees are loaded in one process and run one after the other on the same noisy input
(the benchmark protocol's noise: ``benchmarks/run.py``), with the allocator set as the command
line sets it and torch's lazy imports done before the first timing, ``--rounds`` times each,
alternating, so that both meet the same conditions. For timings of whole runs on all threads
(``benchmarks/cpu_pair.py`` times training epochs on one thread). ``--preset P Q …``: the
before tree runs P, the after tree P and then each of the others. Example::

    git archive v0.2.0 src | tar -x -C /tmp/before
    python benchmarks/wall_pair.py /tmp/before/src src --threads 2 \\
        --images ../shared/benchmark/images/house.png skimage:astronaut --sigma 25
    python benchmarks/wall_pair.py /tmp/before/src src --preset fast quick
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument(
        "--images", nargs="+", default=[str(ROOT.parent / "shared/benchmark/images/house.png")]
    )
    ap.add_argument("--sigma", type=float, default=25.0)
    ap.add_argument("--crop", type=int, default=256)
    ap.add_argument("--preset", nargs="+", default=["fast"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import run as bench  # benchmarks/run.py: images and the protocol's noise
    from cpu_pair import load  # a source tree as a package

    versions = {"before": load("evo_before", args.before), "after": load("evo_after", args.after)}
    importlib.import_module("evo_after.memory").keep_freed_memory()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch's one-off lazy imports
    torch.set_num_threads(args.threads)
    for image in args.images:
        clean = bench.centre_crop(bench.load_image(image), args.crop)
        task = bench.Task("denoise", args.sigma)
        noisy, _, sigma01 = bench.corrupt(clean, task, bench.corruption_seed(0, image, task))
        runs = [("before", args.preset[0])] + [("after", p) for p in args.preset]
        for r in range(args.rounds):
            for tag, preset in runs:
                t0 = time.perf_counter()
                out, res = versions[tag].denoise(noisy, sigma01, config=preset, seed=args.seed)
                wall = time.perf_counter() - t0
                mse = float(np.mean((np.asarray(out, np.float64) - clean) ** 2))
                row = dict(image=Path(image).name, sigma=args.sigma, version=tag, preset=preset,
                           round=r, threads=args.threads, wall=round(wall, 2),
                           psnr=round(10 * np.log10(1 / mse), 3))  # fmt: skip
                print(json.dumps(row), flush=True)
                assert torch.get_num_threads() == args.threads


if __name__ == "__main__":
    main()
