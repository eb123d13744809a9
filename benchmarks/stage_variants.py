#!/usr/bin/env python
"""The second stage at several scales on one model's estimate: PSNR of each, per image-level.

Runs the default denoising (``--preset``, σ given, seed 0) once per image and σ on the
protocol's noisy input (``benchmarks/run.py``'s noise and seeds, so the inputs are the ones
``run.py`` makes), catches the second stage's input (the noisy planes, the model's estimate as
pilot and each plane's σ, in the planes the models saw), and applies the stage to it with each
of ``--scales``. So the differences are the stage's alone. Also reports the model's estimate
without the stage, and BM3D/CBM3D on the same input with ``--bm3d``. Example::

    python benchmarks/stage_variants.py skimage:rocket skimage:moon --crop 256 \\
        --sigmas 15 25 50 --scales 1 2 --bm3d --threads 1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from real import psnr  # noqa: E402
from run import centre_crop, corrupt, corruption_seed, load_image, parse_task  # noqa: E402


def to_image(planes: torch.Tensor, colour: bool) -> np.ndarray:
    """Planes (C, H, W) of 0–255 values, in the opponent basis for colour, as an image on the
    [0, 1] scale, (H, W) or (H, W, 3)."""
    from evodenoise.color import from_opponent

    out = ((from_opponent(planes) if colour else planes) / 255).numpy()
    return np.moveaxis(out, 0, 2) if colour else out[0]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+", help="image paths or skimage:NAME")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[25.0], help="0–255 units")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--crop", type=int, default=256, help="centre crop (default 256)")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bm3d", action="store_true", help="BM3D/CBM3D on the same input")
    ap.add_argument("--json", help="append the records here (one per line)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import evodenoise.restore as restore
    from evodenoise import denoise, get_preset

    stage = restore.refine_estimate
    caught: dict = {}

    def catch(x, pilot, sigmas, scales):
        caught.update(x=x.clone(), pilot=pilot.clone(), sigmas=sigmas)
        return stage(x, pilot, sigmas, scales)

    restore.refine_estimate = catch
    cfg = get_preset(args.preset)
    print(f"| image | σ | model | {' | '.join(f'{s} scale(s)' for s in args.scales)} | BM3D |")
    print("|---|---|---|" + "---|" * len(args.scales) + "---|")
    for path in args.images:
        name = path.split(":", 1)[1] if path.startswith("skimage:") else Path(path).stem
        clean = centre_crop(load_image(path), args.crop)
        if clean.ndim == 3:
            clean = clean[..., :3]
        for sigma in args.sigmas:
            task = parse_task(f"denoise-{sigma:g}")
            noisy, _, sigma01 = corrupt(clean, task, corruption_seed(0, name, task))
            caught.clear()
            denoise(noisy, sigma01, config=cfg, seed=0)
            if not caught:
                raise SystemExit(f"{name} σ={sigma:g}: the second stage did not run")

            x, pilot, sigmas = caught["x"], caught["pilot"], caught["sigmas"]
            colour = clean.ndim == 3
            rec = {"image": name, "sigma": sigma, "model": psnr(to_image(pilot, colour), clean)}
            for s in args.scales:
                rec[f"scales_{s}"] = psnr(to_image(stage(x, pilot, sigmas, s), colour), clean)
            if args.bm3d:
                import bm3d

                fn = bm3d.bm3d_rgb if colour else bm3d.bm3d
                rec["bm3d"] = psnr(fn(noisy.astype(np.float64), sigma_psd=sigma01), clean)
            cells = " | ".join(f"{rec[f'scales_{s}']:.2f}" for s in args.scales)
            peer = f"{rec['bm3d']:.2f}" if "bm3d" in rec else "–"
            print(f"| {name} | {sigma:g} | {rec['model']:.2f} | {cells} | {peer} |", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
