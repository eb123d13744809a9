#!/usr/bin/env python
"""The second stage at several scales and σ on one model's estimate: PSNR of each, per input.

Runs the default denoising (``--preset``, seed 0) once per input and catches the second
stage's input (the noisy planes, the model's estimate as pilot, and the models' σ per plane,
in the planes the models saw), then applies the stage to it at each of ``--scales`` and each
of ``--factors`` (multiples of the models' σ; the default's own factor is ``Plan.stage_sigma``:
1, or 2 on noise correlated between neighbours) and each of ``--passes`` (the stage run again
with its own output as the pilot). So the differences are the stage's alone.
``--mixes`` sets the weight of the stage's hard-thresholding estimate in its pilot (step 0
of ``refine.py``; the default's own is ``Config.refine_mix`` where the noise is white).
``--chroma-factors`` gives the chroma planes (colour inputs) their own multiples, and
``--coarse-factors`` the coarse scale its own (multiples of the fine scale's σ there; 1 is
the default's halved σ). ``--cache DIR`` keeps each input's caught stage input, so that a
later scan of the same inputs skips the model. ``--set KEY=VALUE`` changes the preset the
model runs with (``run.py --set``'s syntax; cache them in their own folder); its
``refine_search`` is the stage's search, ``refine_step`` its reference grid and
``refine_coarse_mix`` its halved scales' share of step 0 (``--mixes`` sets the fine scale's;
``--mixes 0 --set refine_coarse_mix=0``: the model's estimate alone as pilot; a cached input
serves every search, grid and share). ``--joints 0 1``: the Wiener step with the one (mixed)
pilot, and with step 0's estimate as a second pilot aggregated with it (``refine_joint``).
Also reports the model's estimate without the stage, the whole run's process CPU seconds
(stage included; kept in the cache), and with ``--bm3d`` BM3D/CBM3D on the same input (σ
given only).

Inputs: clean images made noisy on the protocol's noise with each of ``--sigmas`` (σ given;
``benchmarks/run.py``'s noise and seeds, so the inputs are the ones ``run.py`` makes), or with
``--peaks`` synthetic photon counts at each peak (``benchmarks/poisson.py``'s noise, seeds and
gray crops; nothing given: the default's Anscombe path, PSNR after its inverse), or with
``--pairs`` the real noisy/reference pairs of folders as ``benchmarks/real.py`` finds them (no
σ given), in colour or with ``--gray`` as the mean of their channels. Examples::

    python benchmarks/stage_variants.py skimage:rocket skimage:moon --crop 256 \\
        --sigmas 15 25 50 --scales 1 2 --bm3d --threads 1
    python benchmarks/stage_variants.py --pairs ../shared/benchmark/real/camera \\
        ../shared/benchmark/real/repro --crop 256 --scales 2 --factors 1 1.5 2 3 --gray
    python benchmarks/stage_variants.py sample_images/camera.png --peaks 4 30 --scales 2 \\
        --joints 0 1 --threads 1
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

from real import psnr  # noqa: E402
from run import (  # noqa: E402
    centre_crop,
    corrupt,
    corruption_seed,
    load_image,
    parse_overrides,
    parse_task,
)

from evodenoise.plan import TRANSFORMED_SEARCH  # noqa: E402


def to_image(planes: torch.Tensor, colour: bool, vst=None) -> np.ndarray:
    """Planes (C, H, W) of 0–255 values, in the opponent basis for colour, as an image on the
    [0, 1] scale, (H, W) or (H, W, 3); ``vst``: each plane's Anscombe transform, inverted."""
    from evodenoise.color import from_opponent

    if vst is not None:
        planes = torch.stack([t.inverse(p) for t, p in zip(vst, planes)]).clamp(0, 255)
    out = ((from_opponent(planes) if colour else planes) / 255).numpy()
    return np.moveaxis(out, 0, 2) if colour else out[0]


def stage_at(x, pilot, sigmas, scales, coarse, stage, mix=0.0, search=19, coarse_mix=None,
             step=3, joint=False):  # fmt: skip
    """The second stage with the coarse scale's σ ``coarse`` times its default."""
    if coarse == 1 or scales < 2:
        return stage(x, pilot, sigmas, scales, mix, search, coarse_mix, step, joint)
    if joint:
        raise SystemExit("--joints 1 takes the coarse scale's own σ only (--coarse-factors 1)")
    from evodenoise import refine

    C, H, W = x.shape
    s = torch.as_tensor(sigmas, dtype=x.dtype)
    low = pilot
    if mix > 0 or coarse_mix:
        step0 = refine._filter(x, None, s, refine.SEARCH, step)
        low = pilot.lerp(step0, mix if coarse_mix is None else coarse_mix)
        pilot = pilot.lerp(step0, mix)
    fine = refine._filter(x, (pilot,), s, search, step)
    f = (((H // 2) * (W // 2)) / (H * W)) ** 0.5
    low = stage(refine._halve(x), refine._halve(low), s * f * coarse, scales - 1, 0.0, search,
                None, step)  # fmt: skip
    return refine._take_low(fine, low, f)


def inputs(args):
    """(name, σ in 0–255 units, noisy, clean, σ on the [0, 1] scale) of every input asked
    for; both σ None for real pairs."""
    if args.pairs:
        from real import find_pairs, load

        for name, noisy_path, ref_path in find_pairs(args.pairs):
            if args.only and name not in args.only.split(","):
                continue
            noisy, ref = load(noisy_path, args.crop), load(ref_path, args.crop)
            if args.gray and noisy.ndim == 3:
                noisy, ref = noisy[..., :3].mean(2), ref[..., :3].mean(2)
            yield name, None, noisy.astype(np.float32), ref, None
        return
    if args.peaks:
        from poisson import READ_NOISE, add_noise, load_gray

        for index, path in enumerate(args.images):
            clean = load_gray(path, args.crop)
            for peak in args.peaks:
                seed = (0, index, int(round(peak * 1000)))
                noisy = add_noise(clean, peak, READ_NOISE, seed)
                yield Path(path).stem, f"peak {peak:g}", noisy, clean, None
        return
    for path in args.images:
        name = path.split(":", 1)[1] if path.startswith("skimage:") else Path(path).stem
        clean = centre_crop(load_image(path), args.crop)
        if clean.ndim == 3:
            clean = clean[..., :3]
        for sigma in args.sigmas:
            task = parse_task(f"denoise-{sigma:g}")
            noisy, _, sigma01 = corrupt(clean, task, corruption_seed(0, name, task))
            yield name, sigma, noisy, clean, sigma01


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="*", help="image paths or skimage:NAME")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[25.0], help="0–255 units")
    ap.add_argument("--peaks", type=float, nargs="+", help="synthetic photon counts at these "
                    "peaks instead (poisson.py's)")  # fmt: skip
    ap.add_argument("--pairs", nargs="+", help="folders of real noisy/reference pairs instead")
    ap.add_argument("--gray", action="store_true", help="pairs: the mean of their channels")
    ap.add_argument("--scales", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--factors", type=float, nargs="+", default=[1.0], help="× the models' σ")
    ap.add_argument("--chroma-factors", type=float, nargs="+", help="× the chroma planes' "
                    "σ (colour inputs; default: the same as --factors)")  # fmt: skip
    ap.add_argument("--coarse-factors", type=float, nargs="+", default=[1.0], help="the "
                    "coarse scale's σ in multiples of its default (scales 2 only)")  # fmt: skip
    ap.add_argument("--mixes", type=float, nargs="+", default=[0.0], help="weights of the "
                    "hard-thresholding estimate in the pilot (refine.py, step 0)")  # fmt: skip
    ap.add_argument("--joints", type=int, nargs="+", default=[0], choices=[0, 1], help="1: "
                    "step 0's estimate a second pilot (refine_joint)")  # fmt: skip
    ap.add_argument("--only", help="pairs: comma-separated names")
    ap.add_argument("--cache", help="folder keeping each input's caught stage input")
    ap.add_argument("--passes", type=int, nargs="+", default=[1], help="the stage run again "
                    "with its output as the next pilot, this many passes in all")  # fmt: skip
    ap.add_argument("--crop", type=int, default=256, help="centre crop (default 256)")
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting of the preset's, for the model (repeatable)")  # fmt: skip
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bm3d", action="store_true", help="BM3D/CBM3D on the same input")
    ap.add_argument("--json", help="append the records here (one per line)")
    args = ap.parse_args(argv)
    if not args.images and not args.pairs:
        ap.error("give images or --pairs")
    torch.set_num_threads(args.threads)

    import evodenoise.restore as restore
    from evodenoise import denoise, get_preset

    stage, plane_sigmas, stabilise = (
        restore.refine_estimate,
        restore._plane_sigmas,
        restore._stabilise,
    )
    caught: dict = {}

    def catch_vst(*a, **k):  # each plane's Anscombe transform, where the default takes it
        out = stabilise(*a, **k)
        caught["vst"] = out[1]
        return out

    def catch_sigmas(*a):  # the models' σ, before the plan's factor
        caught["sigmas"] = plane_sigmas(*a)
        return caught["sigmas"]

    def catch(x, pilot, sigmas, scales, mix=0.0, search=19, coarse_mix=None, step=3, joint=False):
        caught.update(x=x.clone(), pilot=pilot.clone())
        return stage(x, pilot, sigmas, scales, mix, search, coarse_mix, step, joint)

    restore.refine_estimate, restore._plane_sigmas = catch, catch_sigmas
    restore._stabilise = catch_vst
    cfg = get_preset(args.preset).replace(**parse_overrides(args.set))
    chroma = args.chroma_factors or [None]
    keys = [
        (s, f, c, k, n, m, j)
        for s in args.scales
        for f in args.factors
        for c in chroma
        for k in (args.coarse_factors if s > 1 else [1.0])
        for n in args.passes
        for m in args.mixes
        for j in args.joints
    ]
    label = {
        key: f"scales_{key[0]}"
        + ("" if key[1] == 1 else f"_x{key[1]:g}")
        + ("" if key[2] is None else f"_c{key[2]:g}")
        + ("" if key[3] == 1 else f"_k{key[3]:g}")
        + ("" if key[4] == 1 else f"_p{key[4]}")
        + ("" if key[5] == 0 else f"_m{key[5]:g}")
        + ("_joint" if key[6] else "")
        for key in keys
    }
    names = " | ".join(
        f"{s} scale(s)"
        + ("" if f == 1 else f", {f:g}σ")
        + ("" if c is None else f", chroma {c:g}σ")
        + ("" if k == 1 else f", coarse {k:g}")
        + ("" if n == 1 else f", {n} passes")
        + ("" if m == 0 else f", mix {m:g}")
        + (", joint" if j else "")
        for s, f, c, k, n, m, j in keys
    )
    print(f"| image | σ | model | {names} | BM3D | CPU s |")
    print("|---|---|---|" + "---|" * len(keys) + "---|---|")
    for name, level, noisy, clean, sigma01 in inputs(args):
        caught.clear()
        cached = Path(args.cache or ".", f"{name}_{level}.pt")
        if args.cache and cached.exists():
            caught.update(torch.load(cached, weights_only=False))  # (the transforms)
        else:
            t0 = time.process_time()
            denoise(noisy, sigma01, config=cfg, seed=0)
            caught["seconds"] = time.process_time() - t0  # the whole run's CPU, stage included
            if "x" not in caught:
                raise SystemExit(f"{name} σ={level}: the second stage did not run")
            if args.cache:
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.save(dict(caught), cached)
        x, pilot, sigmas = caught["x"], caught["pilot"], list(caught["sigmas"])
        colour = clean.ndim == 3
        vst = caught.get("vst")  # (None: no transform)
        search, coarse_mix = cfg.refine_search, cfg.refine_coarse_mix
        if vst is not None:  # after the transform, as plan_run settles it
            search, coarse_mix = min(search, TRANSFORMED_SEARCH), 0.0
        rec = {"image": name, "sigma": level, "model": psnr(to_image(pilot, colour, vst), clean)}
        rec["cpu_s"] = caught.get("seconds")  # (None: cached before it was kept)
        for s, f, c, k, n, m, j in keys:
            planes = [f if c is None or i == 0 else c for i in range(len(sigmas))]
            sig = [m * v for m, v in zip(planes, sigmas)]
            out = pilot
            for _ in range(n):
                out = stage_at(x, out, sig, s, k, stage, m, search, coarse_mix,
                               cfg.refine_step, bool(j))  # fmt: skip
            rec[label[s, f, c, k, n, m, j]] = psnr(to_image(out, colour, vst), clean)
        if args.bm3d and sigma01 is not None:
            import bm3d

            fn = bm3d.bm3d_rgb if colour else bm3d.bm3d
            rec["bm3d"] = psnr(fn(noisy.astype(np.float64), sigma_psd=sigma01), clean)
        cells = " | ".join(f"{rec[label[k]]:.2f}" for k in keys)
        peer = f"{rec['bm3d']:.2f}" if "bm3d" in rec else "–"
        shown = "–" if level is None else level if isinstance(level, str) else f"{level:g}"
        secs = "–" if rec["cpu_s"] is None else f"{rec['cpu_s']:.0f}"
        print(f"| {name} | {shown} | {rec['model']:.2f} | {cells} | {peer} | {secs} |", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
