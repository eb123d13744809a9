"""Synthetic Poisson–Gaussian noise: evodenoise and its peers on clean gray images made noisy as
a photon-counting sensor would, with nothing but the noisy image given.

``noisy = a·Poisson(x/a) + N(0, b²)`` on the [0, 1] scale, ``a = 1/peak`` (the peak is the
brightest value's expected photon count), ``b`` a small read noise; values are kept as floats,
neither rounded nor clipped. One noise draw per (image, peak), seeded by ``--seed``, the
image's place in the list and the peak. PSNR against the clean image, data range 1, estimates
clipped to [0, 1] (``benchmarks/real.py``'s methods and metric).

    python benchmarks/poisson.py ../shared/benchmark/images/house.png sample_images/camera.png \\
        --crop 256 --peaks 1,4,10,30 --threads 1

Writes ``OUT/NAME.json`` (one record per image, peak and method) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real import CHECKS, add_engine_options, engine_config, psnr, run_method  # noqa: E402

READ_NOISE = 2 / 255  # b, on the [0, 1] scale


def load_gray(path: str, crop: int | None) -> np.ndarray:
    """The image as float64 gray on [0, 1] (colour: the mean of its channels), centre-cropped."""
    from evodenoise.imageio import read_image

    img = np.asarray(read_image(path)[0], dtype=np.float64)
    img = img[..., :3].mean(axis=2) if img.ndim == 3 else img
    if crop:
        h, w = img.shape
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        img = img[top : top + crop, left : left + crop]
    return img


def add_noise(clean: np.ndarray, peak: float, read: float, seed) -> np.ndarray:
    """``a·Poisson(clean/a) + N(0, read²)`` with ``a = 1/peak``, as float32."""
    rng = np.random.default_rng(seed)
    a = 1.0 / peak
    noisy = a * rng.poisson(clean / a) + read * rng.standard_normal(clean.shape)
    return noisy.astype(np.float32)


def run_known(method: str, noisy, config, seed: int, clean, peak: float, args):
    """``benchmarks/real.py``'s methods, and ``evodenoise-known``: evodenoise told the noise's
    level function (``--gain 1/peak --sigma b``) instead of estimating it."""
    if method != "evodenoise-known":
        return run_method(method, noisy, config, seed, clean)
    from evodenoise import denoise

    out, result = denoise(noisy, args.read_noise / 255, gain=1 / peak, config=config, seed=seed)
    return out, result.sigma * 255


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+", help="clean images (colour ones are made gray)")
    ap.add_argument("--crop", type=int, default=256, help="centre crop to CROP x CROP (0: none)")
    ap.add_argument("--peaks", default="1,4,10,30", help="comma separated peaks (photons)")
    ap.add_argument("--read-noise", type=float, default=READ_NOISE * 255, help="b, 0–255 units")
    ap.add_argument(
        "--methods",
        default="input,evodenoise,gat-bm3d,nlm-cal",
        help="comma separated, from benchmarks/real.py's methods and evodenoise-known (the "
        "noise's gain and read noise given)",
    )
    add_engine_options(ap, "poisson")
    args = ap.parse_args(argv)
    config = engine_config(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for index, path in enumerate(args.images):
        clean = load_gray(path, args.crop)
        for peak in (float(p) for p in args.peaks.split(",")):
            seed = (args.seed, index, int(round(peak * 1000)))
            noisy = add_noise(clean, peak, args.read_noise / 255, seed)
            for method in args.methods.split(","):
                t0 = time.perf_counter()
                est, sigma = run_known(method, noisy, config, args.seed, clean, peak, args)
                rec = {
                    "image": Path(path).stem,
                    "peak": peak,
                    "method": method,
                    "psnr": round(psnr(est, clean), 3),
                    "seconds": round(time.perf_counter() - t0, 1),
                    "sigma": None if sigma is None else round(float(sigma), 2),
                    "read_noise": args.read_noise,
                    "crop": args.crop,
                    "set": args.set,
                    "seed": args.seed,
                    "threads": args.threads,
                }
                if method == "evodenoise":
                    rec["check"] = CHECKS.get("check")
                records.append(rec)
                print(json.dumps(rec), flush=True)
            (out / f"{args.name}.json").write_text(json.dumps(records, indent=1))
    print(table(records))


def table(records: list[dict]) -> str:
    """A Markdown table: one row per (image, peak), one column per method (PSNR, dB)."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    rows = list(dict.fromkeys((r["image"], r["peak"]) for r in records))
    cell = {(r["image"], r["peak"], r["method"]): r["psnr"] for r in records}
    lines = ["| image | peak | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
    for im, peak in rows:
        values = (cell.get((im, peak, m), float("nan")) for m in methods)
        lines.append(f"| {im} | {peak:g} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
