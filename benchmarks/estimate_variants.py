#!/usr/bin/env python
"""The estimate of one trained model under config variants: PSNR and CPU seconds each.

Trains once (a default run of ``--preset`` on a gray image with white Gaussian noise of
``--sigma``, seed 0), then repeats the estimate (``estimate.estimate_image``) with the same
model, pool, trained states (a copy each time: the estimate sweeps them in place) and random
seed under each variant, so that PSNR differences are the estimate's
alone. Each variant is ``KEY=VALUE[,KEY=VALUE…]`` of config changes; ``-`` is the preset
itself. PSNR is that of the model's estimate before the second stage (against the clean image,
0–255 values clipped), CPU seconds are the process's for the estimate, and "E-step rows" counts
the patches of every E-step sweep. Colour images are averaged to gray (one model: its estimate
is the whole result). Example::

    python benchmarks/estimate_variants.py skimage:camera --sigma 25 --threads 1 \\
        - sweep_tol=0 fresh_sweeps=1,poor_fit_sweeps=1

On 512×512 images most patches are outside the training pool of 65,536, so the fresh
patches' dictionary seeds and sweeps make most of the estimate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from run import centre_crop, load_image, parse_overrides  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", help="image path or skimage:NAME")
    ap.add_argument("variants", nargs="+", help="KEY=VALUE[,KEY=VALUE…] per variant, - for none")
    ap.add_argument("--sigma", type=float, default=25.0, help="noise σ, 0–255 units")
    ap.add_argument("--crop", type=int, default=512, help="centre crop (default 512)")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="append the records here (one per line)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    import evodenoise.estimate as estimate_module
    import evodenoise.restore as restore
    from evodenoise import denoise, get_preset
    from evodenoise.train import Fit

    clean = load_image(args.image)
    clean = centre_crop(clean.mean(2) if clean.ndim == 3 else clean, args.crop)
    rng = np.random.default_rng(0)
    noisy = (clean + rng.normal(0, args.sigma / 255, clean.shape)).astype(np.float32)
    changes = [{} if v == "-" else parse_overrides(v.split(",")) for v in args.variants]

    rows = [0]
    estep_rows = estimate_module.estep_rows

    def counted(model, y, *a, **k):  # E-step rows of the estimate's sweeps
        rows[0] += y.shape[0]
        return estep_rows(model, y, *a, **k)

    estimate_module.estep_rows = counted
    estimate_image, centre = restore.estimate_image, restore._centre
    runs: list[dict] = []
    units: dict = {}

    def each_variant(fitted, x, observed, pool, cfg, gen, callback=None):
        state = gen.get_state()
        for change in changes:
            gen.set_state(state)  # the same seed for every variant
            rows[0] = 0
            t0 = time.process_time()
            fit = Fit(fitted.model, fitted.states.clone(), fitted.config)  # swept in place
            out = estimate_image(fit, x.clone(), observed, pool, cfg.replace(**change), gen)
            runs.append(
                {"change": change, "cpu_s": time.process_time() - t0, "rows": rows[0], "out": out}
            )
        return runs[0]["out"]

    def centre_kept(x, missing, standardize):
        x, observed, offset, unit = centre(x, missing, standardize)
        units.update(offset=float(offset), unit=unit)
        return x, observed, offset, unit

    restore.estimate_image, restore._centre = each_variant, centre_kept
    _, result = denoise(noisy, args.sigma / 255, config=get_preset(args.preset), seed=0)
    print(
        f"{args.image} {clean.shape[0]}x{clean.shape[1]} σ={args.sigma:g}, {args.preset}, "
        f"patch {result.config.patch_size}, seed 0, {args.threads} thread(s)"
    )
    print("| variant | PSNR (dB) | Δ | estimate CPU s | ratio | E-step rows |")
    print("|---|---|---|---|---|---|")
    base = None
    for r in runs:
        est = (r.pop("out")[0] * units["unit"] + units["offset"]).numpy() / 255
        r["psnr"] = float(10 * np.log10(1 / np.mean((np.clip(est, 0, 1) - clean) ** 2)))
        base = base or r
        name = ",".join(f"{k}={v}" for k, v in r["change"].items()) or args.preset
        print(
            f"| {name} | {r['psnr']:.3f} | {r['psnr'] - base['psnr']:+.3f} | {r['cpu_s']:.1f} | "
            f"{r['cpu_s'] / base['cpu_s']:.2f}x | {r['rows']:,} |"
        )
        if args.json:
            with open(args.json, "a") as f:
                record = {"image": args.image, "sigma": args.sigma, "preset": args.preset, **r}
                f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
