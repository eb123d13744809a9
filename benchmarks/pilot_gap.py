"""Where the gap to BM3D/CBM3D lies: in the model's estimate (the second stage's pilot), in the
second stage, or at scales above the patches.

For each image and σ: the default's model estimate without the second stage (the pilot), the
same with the second stage as a run applies it (``refine.refine_estimate`` in the orthonormal
opponent basis, σ given), BM3D's first step (hard thresholding) in the same basis, our second
stage with *that* as the pilot, and BM3D whole. Then the error of the pilot, the default and BM3D
split by scale: above about 4 pixels (a Gaussian of σ 4 px of the error), 1-4 pixels, below 1 pixel.
PSNR in dB, data range 255; noise clean + σ·N(0, 1) on the 0–255 scale, float, unclipped,
numpy's generator seeded ``--seed``; centre crops of ``--crop`` pixels.

    python benchmarks/pilot_gap.py skimage:coffee:25 skimage:astronaut:25 \\
        skimage:chelsea:15 skimage:camera:50 ../shared/benchmark/images/house.png:25
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from evodenoise import denoise, get_preset
from evodenoise.color import OPPONENT
from evodenoise.refine import refine_estimate


def load(spec: str, crop: int) -> tuple[str, np.ndarray, float]:
    """(name, clean image 0–255 float, σ) of ``skimage:NAME:SIGMA`` or ``PATH:SIGMA``."""
    source, sigma = spec.rsplit(":", 1)
    if source.startswith("skimage:"):
        from skimage import data

        name = source.split(":", 1)[1]
        image = getattr(data, name)()
    else:
        from PIL import Image

        name = source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        image = np.asarray(Image.open(source))
    image = image.astype(np.float64)[..., :3] if image.ndim == 3 else image.astype(np.float64)
    h, w = image.shape[:2]
    if crop:
        image = image[
            h // 2 - crop // 2 : h // 2 + crop // 2, w // 2 - crop // 2 : w // 2 + crop // 2
        ]
    return name, image, float(sigma)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="+", help="skimage:NAME:SIGMA or PATH:SIGMA")
    ap.add_argument("--crop", type=int, default=256, help="centre crop side (0: whole)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print("| image | σ | model estimate (pilot) | + second stage (default) | BM3D step 1 | "
          "BM3D step 1 + our second stage | BM3D | error MSE above 4 px / 1-4 px / below 1 px: "
          "pilot | default | BM3D | model s |")  # fmt: skip
    print("|---" * 11 + "|")
    for spec in args.cases:
        print(measure(spec, args.crop, args.seed), flush=True)


def measure(spec: str, crop: int, seed: int) -> str:
    """One case's table row."""
    import bm3d

    name, clean, sigma = load(spec, crop)
    noisy = clean + sigma * np.random.default_rng(seed).standard_normal(clean.shape)
    colour = clean.ndim == 3
    basis = OPPONENT.double().numpy() if colour else np.eye(1)

    def to_planes(a):  # (H, W[, 3]) -> (C, H, W), opponent basis for colour
        a = np.atleast_3d(a)
        return np.einsum("kc,hwc->khw", basis, a)

    def from_planes(a):
        out = np.einsum("kc,khw->hwc", basis, a)
        return out if colour else out[..., 0]

    t0 = time.perf_counter()
    cfg = get_preset("fast").replace(second_stage="off")
    pilot, _ = denoise(np.float32(noisy / 255), sigma / 255, config=cfg, seed=seed)
    seconds = time.perf_counter() - t0
    pilot = pilot.astype(np.float64) * 255

    def stage(p):  # our second stage on the noisy planes with pilot p (C, H, W)
        x = torch.from_numpy(np.float32(to_planes(noisy)))
        out = refine_estimate(x, torch.from_numpy(np.float32(p)), [sigma] * x.shape[0])
        return from_planes(out.double().numpy())

    z = to_planes(noisy)
    z_bm = np.moveaxis(z, 0, 2) if colour else z[0]
    step1 = bm3d.bm3d(z_bm, sigma, stage_arg=bm3d.BM3DStages.HARD_THRESHOLDING)
    step1 = np.moveaxis(np.atleast_3d(step1), 2, 0)
    full = from_planes(np.moveaxis(np.atleast_3d(bm3d.bm3d(z_bm, sigma)), 2, 0))
    default = stage(to_planes(pilot))
    psnr = [_psnr(a, clean) for a in (pilot, default, from_planes(step1), stage(step1), full)]
    bands = " | ".join(
        " / ".join(f"{v:.1f}" for v in _bands(a - clean)) for a in (pilot, default, full)
    )
    cells = " | ".join(f"{v:.2f}" for v in psnr)
    return f"| {name} | {sigma:g} | {cells} | {bands} | {seconds:.0f} |"


def _psnr(a: np.ndarray, clean: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / np.mean((a - clean) ** 2)))


def _bands(error: np.ndarray) -> tuple[float, float, float]:
    """Mean square of the error above ~4 px, between 1 and 4 px and below 1 px, per value."""
    e = np.atleast_3d(error)
    low = np.stack([gaussian_filter(e[..., c], 4) for c in range(e.shape[2])], 2)
    mid = np.stack([gaussian_filter(e[..., c], 1) for c in range(e.shape[2])], 2)
    return float(np.mean(low**2)), float(np.mean((mid - low) ** 2)), float(np.mean((e - mid) ** 2))


if __name__ == "__main__":
    main()
