"""Whole default runs and variants of them, one after the other: PSNR, wall and process CPU
seconds per run (RESULTS.md, table 7: "Fresh patches on a coarser grid", "Fresh patches
without sweeps").

Inputs: scikit-image's images (``NAME``, or ``NAME:gray`` for its luminance by scikit-image's
``rgb2gray``) at their own size or upscaled bicubic to ``--size H W`` (as in table 5), plus
white noise of ``--sigma`` from numpy's generator seeded 0 (float, unclipped); σ given, seed
0. A variant is ``-`` (the default preset) or settings ``key=value[,key=value…]`` over it
(``--set`` of the command line). PSNR of the output (0–255) against the clean image, both
clipped to 0–255.

    python benchmarks/variants.py camera astronaut --variants - fresh_stride=2      # 512x512
    python benchmarks/variants.py camera --size 1024 1024 --variants - fresh_stride=2
    python benchmarks/variants.py astronaut --size 1024 1365 --variants - fresh_stride=2
    python benchmarks/variants.py astronaut:gray coffee:gray --sigma 15 \\
        --variants - fresh_sweeps=3,poor_fit_quantile=0.99
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from run import parse_overrides  # KEY=VALUE, as run.py --set
from skimage import data
from skimage.color import rgb2gray
from skimage.transform import resize

from evodenoise import denoise, get_preset


def load(name: str, size) -> np.ndarray:
    """scikit-image's image ``name`` (``name:gray``: its luminance), 0–255 float64, upscaled."""
    base, _, kind = name.partition(":")
    clean = np.asarray(getattr(data, base)(), dtype=np.float64)
    if kind == "gray":
        clean = rgb2gray(clean / 255.0) * 255.0
    if size:
        shape = (*size, *clean.shape[2:])
        clean = resize(clean, shape, order=3, preserve_range=True, anti_aliasing=False)
    return clean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", help="scikit-image names (camera, astronaut:gray, ...)")
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="upscale to this")
    ap.add_argument("--sigma", type=float, default=25.0, help="0–255 units")
    ap.add_argument("--variants", nargs="+", default=["-"], help="'-' or key=value[,...]")
    args = ap.parse_args()
    for name in args.images:
        clean = load(name, args.size)
        noise = args.sigma * np.random.default_rng(0).standard_normal(clean.shape)
        noisy = np.float32((clean + noise) / 255)
        for variant in args.variants:
            sets = [] if variant == "-" else variant.split(",")
            cfg = get_preset("fast").replace(**parse_overrides(sets))
            wall, cpu = time.perf_counter(), time.process_time()
            out, _ = denoise(noisy, args.sigma / 255, config=cfg, seed=0)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            error = np.clip(out * 255.0, 0, 255) - np.clip(clean, 0, 255)
            psnr = 10 * np.log10(255**2 / np.mean(error**2))
            print(f"| {name} {'×'.join(map(str, clean.shape[:2]))} | {args.sigma:g} | {variant} | "
                  f"{psnr:.3f} dB | {wall:.0f} s | {cpu:.0f} s |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
