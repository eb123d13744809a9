"""Whole default runs with ``fresh_stride`` 1 (every patch) and 2, one after the other: PSNR,
wall and process CPU seconds per run (RESULTS.md, table 7, "Fresh patches on a coarser grid").

Inputs: scikit-image's images at their own size or upscaled bicubic to ``--size H W`` (as in
table 5), plus white noise of ``--sigma`` from numpy's generator seeded 0 (float, unclipped);
σ given, seed 0. PSNR of the output (0–255) against the clean image, both clipped to 0–255.

    python benchmarks/fresh_stride.py camera astronaut                   # 512x512
    python benchmarks/fresh_stride.py camera --size 1024 1024
    python benchmarks/fresh_stride.py astronaut --size 1024 1365
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from skimage import data
from skimage.transform import resize

from evodenoise import denoise, get_preset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("images", nargs="+", help="scikit-image names (camera, astronaut, ...)")
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="upscale to this")
    ap.add_argument("--sigma", type=float, default=25.0, help="0–255 units")
    ap.add_argument("--strides", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args()
    for name in args.images:
        clean = getattr(data, name)().astype(np.float64)
        if args.size:
            shape = (*args.size, *clean.shape[2:])
            clean = resize(clean, shape, order=3, preserve_range=True, anti_aliasing=False)
        noise = args.sigma * np.random.default_rng(0).standard_normal(clean.shape)
        noisy = np.float32((clean + noise) / 255)
        for stride in args.strides:
            cfg = get_preset("fast").replace(fresh_stride=stride)
            wall, cpu = time.perf_counter(), time.process_time()
            out, _ = denoise(noisy, args.sigma / 255, config=cfg, seed=0)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            error = np.clip(out * 255.0, 0, 255) - np.clip(clean, 0, 255)
            psnr = 10 * np.log10(255**2 / np.mean(error**2))
            print(f"| {name} {'×'.join(map(str, clean.shape[:2]))} | {stride} | {psnr:.3f} dB | "
                  f"{wall:.0f} s | {cpu:.0f} s |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
