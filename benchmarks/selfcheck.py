"""The result's self-check on honest runs and on runs given a wrong σ: evodenoise (default
preset) on centre crops of clean images with white Gaussian noise added, printing the check.

Each case is ``NAME:SIGMA:GIVEN`` (σ in 8-bit units; GIVEN a σ handed to evodenoise, or
``none``: estimated from the image). Noise from one generator seeded by ``--seed``, drawn case
after case in the order given.

    python benchmarks/selfcheck.py --crop 128 house:25:none house:25:25 house:10:100 \\
        camera:15:none astronaut:25:none house:5:none astronaut:5:none camera:5:none
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

IMAGES = {
    "house": "../shared/benchmark/images/house.png",
    "camera": "sample_images/camera.png",
    "astronaut": "sample_images/astronaut.png",
}


def psnr(x: np.ndarray, clean: np.ndarray) -> float:
    return round(float(10 * np.log10(1 / np.mean((np.clip(x, 0, 1) - clean) ** 2))), 2)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="+", help="NAME:SIGMA:GIVEN, e.g. house:25:none")
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from evodenoise import denoise
    from evodenoise.imageio import read_image

    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    for case in args.cases:
        name, sigma, given = case.split(":")
        clean = np.asarray(read_image(IMAGES.get(name, name))[0], dtype=np.float32)
        h, w = clean.shape[:2]
        top, left = (h - args.crop) // 2, (w - args.crop) // 2
        clean = clean[top : top + args.crop, left : left + args.crop]
        noisy = (clean + float(sigma) / 255 * rng.standard_normal(clean.shape)).astype(np.float32)
        t0 = time.perf_counter()
        out, result = denoise(noisy, None if given == "none" else float(given) / 255, seed=0)
        record = {"case": case, "psnr_input": psnr(noisy, clean), "psnr": psnr(out, clean),
                  "sigma": round(result.sigma * 255, 2),
                  "seconds": round(time.perf_counter() - t0, 1),
                  "check": result.check.as_dict()}  # fmt: skip
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
