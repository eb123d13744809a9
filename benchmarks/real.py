"""Real noise: evodenoise on noisy/reference pairs, with nothing but the noisy image given.

Pairs are found by name in the folders given: ``NAME_real.png`` + ``NAME_mean.png`` (camera
photos, many-shot mean as reference), ``NAME_noisy.*`` + ``NAME_clean.*`` or
``NAME_reference.*`` (microscopy, single cases). No σ is given to evodenoise (it learns it);
``cbm3d``/``nlm`` get σ from scikit-image's wavelet estimator, as a user would; ``nlm-cal`` tunes
NL-means' strength on the noisy image itself (``calibrate_denoiser``). PSNR against the
reference over the whole (cropped) image, data range 255, also per RGB channel.

    python benchmarks/real.py ../shared/benchmark/real/camera --crop 256 --threads 2 \\
        --set poor_fit_sweeps=0 --name camera_old

Writes ``OUT/NAME.json`` (one record per image and method) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

SUFFIXES = (("_real", "_mean"), ("_noisy", "_clean"), ("_noisy", "_reference"))


def find_pairs(folders: list[str]) -> list[tuple[str, Path, Path]]:
    """(name, noisy path, reference path) for every pair in ``folders``, sorted by name."""
    pairs = []
    for folder in map(Path, folders):
        for noisy in sorted(folder.iterdir()):
            for a, b in SUFFIXES:
                if noisy.stem.endswith(a):
                    ref = noisy.with_name(noisy.stem[: -len(a)] + b + noisy.suffix)
                    if ref.exists():
                        pairs.append((noisy.stem[: -len(a)], noisy, ref))
    return pairs


def load(path: Path, crop: int | None) -> np.ndarray:
    from evodenoise.imageio import read_image

    img = np.asarray(read_image(path)[0], dtype=np.float32)
    if crop:
        h, w = img.shape[:2]
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        img = img[top : top + crop, left : left + crop]
    return img


def psnr(x: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.clip(x, 0, 1) - ref) ** 2)))


CHECKS: dict[str, str | None] = {}  # the last evodenoise run's self-check: "check" -> message

SIGMA_GRID = (2, 4, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60)  # 0–255 units


def run_method(method: str, noisy: np.ndarray, config, seed: int, ref: np.ndarray):
    """(estimate, σ assumed in 0–255 units) of one method on ``noisy``. ``cbm3d-best`` is
    (C)BM3D at the σ of ``SIGMA_GRID`` that scores best against ``ref``: what an expert
    adjusting σ by eye could reach at best, not something a user can run. ``gat-bm3d``
    (gray): the generalised Anscombe transform with evodenoise's estimate of the noise level
    function, BM3D at σ 1 in that domain, the closed-form exact unbiased inverse."""
    if method == "input":
        return noisy, None
    if method == "evodenoise":
        from evodenoise import denoise

        out, result = denoise(noisy, None, config=config, seed=seed)
        CHECKS["check"] = None if result.check is None else result.check.message
        return out, result.sigma * 255
    from skimage.restoration import denoise_nl_means, estimate_sigma

    colour = noisy.ndim == 3
    sigma = float(np.mean(estimate_sigma(noisy, channel_axis=-1 if colour else None)))
    if method == "nlm":
        return denoise_nl_means(
            noisy, h=0.8 * sigma, sigma=sigma, fast_mode=True, channel_axis=-1 if colour else None
        ), sigma * 255
    if method == "nlm-cal":
        return calibrated_nlm(noisy, sigma)
    import bm3d

    fn = bm3d.bm3d_rgb if colour else bm3d.bm3d
    if method == "cbm3d":
        return fn(noisy, max(sigma, 1e-3)), sigma * 255
    if method == "cbm3d-best":
        best = max((psnr(fn(noisy, g / 255), ref), g) for g in SIGMA_GRID)[1]
        return fn(noisy, best / 255), float(best)
    if method == "gat-bm3d" and not colour:
        import torch

        from evodenoise.noise import Anscombe, estimate_poisson_gaussian

        x = torch.from_numpy(noisy.astype(np.float64) * 255)
        a, c = estimate_poisson_gaussian(x)
        if a <= 0:  # no signal dependence: BM3D as it is
            return fn(noisy, max(sigma, 1e-3)), sigma * 255
        t = Anscombe.fit(a, c)
        z = fn(t.forward(x).numpy() / 255, t.scale / 255)
        return t.inverse(torch.from_numpy(z * 255)).numpy() / 255, None
    raise ValueError(f"unknown method {method!r}")


NLM_STRENGTHS = (0.4, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0)  # h as multiples of σ estimated


def calibrated_nlm(noisy: np.ndarray, sigma: float):
    """(estimate, h in 0–255 units): scikit-image NL-means with its strength h chosen by
    ``calibrate_denoiser`` (Noise2Self's self-supervised loss on the noisy image alone) from
    ``NLM_STRENGTHS`` times the wavelet estimate σ; a self-tuned classical peer."""
    from skimage.restoration import calibrate_denoiser, denoise_nl_means

    sigma = max(sigma, 1e-3)
    axis = -1 if noisy.ndim == 3 else None
    grid = {"h": [k * sigma for k in NLM_STRENGTHS], "sigma": [sigma], "fast_mode": [True]}
    grid["channel_axis"] = [axis]
    _, (tried, losses) = calibrate_denoiser(
        noisy.astype(np.float64), denoise_nl_means, grid, extra_output=True
    )
    h = tried[int(np.argmin(losses))]["h"]
    out = denoise_nl_means(noisy, h=h, sigma=sigma, fast_mode=True, channel_axis=axis)
    return out, h * 255


def add_engine_options(ap: argparse.ArgumentParser, name: str, overrides=()) -> None:
    """The options of evodenoise's runs and of the output, shared by the real-noise scripts:
    --preset, --set (``overrides`` first), --seed, --threads, --out, --name."""
    ap.add_argument("--preset", default=None, help="evodenoise preset (default: the default)")
    ap.add_argument("--set", action="append", default=list(overrides), metavar="KEY=VALUE",
                    help="evodenoise config override (repeatable)")  # fmt: skip
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="benchmarks/results")
    ap.add_argument("--name", default=name)


def engine_config(args):
    """The torch threads of ``args`` set, and the evodenoise Config its options ask for."""
    import torch

    from evodenoise.presets import resolve_config

    if args.threads:
        torch.set_num_threads(args.threads)
    return resolve_config(args.preset, overrides=args.set)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", help="folders holding noisy/reference pairs")
    ap.add_argument("--crop", type=int, default=None, help="centre crop to CROP x CROP")
    ap.add_argument(
        "--methods",
        default="input,evodenoise",
        help="comma separated, from input,evodenoise,cbm3d,cbm3d-best,gat-bm3d,nlm,nlm-cal",
    )
    ap.add_argument("--only", default=None, help="comma separated names: run only these pairs")
    add_engine_options(ap, "real")
    args = ap.parse_args(argv)
    config = engine_config(args)
    pairs = find_pairs(args.folders)
    if args.only:
        keep = set(args.only.split(","))
        pairs = [p for p in pairs if p[0] in keep]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for name, noisy_path, ref_path in pairs:
        noisy, ref = load(noisy_path, args.crop), load(ref_path, args.crop)
        for method in args.methods.split(","):
            t0 = time.perf_counter()
            est, sigma = run_method(method, noisy, config, args.seed, ref)
            rec = {
                "image": name,
                "method": method,
                "psnr": round(psnr(est, ref), 3),
                "seconds": round(time.perf_counter() - t0, 1),
                "sigma": None if sigma is None else round(float(sigma), 2),
                "set": args.set,
                "seed": args.seed,
                "threads": args.threads,
            }
            if method == "evodenoise":
                rec["check"] = CHECKS.get("check")
            if noisy.ndim == 3:
                rec["channels"] = [
                    round(psnr(est[..., c], ref[..., c]), 2) for c in range(noisy.shape[2])
                ]
            records.append(rec)
            print(json.dumps(rec), flush=True)
        (out / f"{args.name}.json").write_text(json.dumps(records, indent=1))
    print(table(records))


def table(records: list[dict]) -> str:
    """A Markdown table: one row per image, one column per method (PSNR, dB)."""
    methods = list(dict.fromkeys(r["method"] for r in records))
    images = list(dict.fromkeys(r["image"] for r in records))
    cell = {(r["image"], r["method"]): r["psnr"] for r in records}
    lines = ["| image | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
    for im in images:
        lines.append(
            f"| {im} | "
            + " | ".join(f"{cell.get((im, m), float('nan')):.2f}" for m in methods)
            + " |"
        )
    means = [np.mean([cell[(im, m)] for im in images if (im, m) in cell]) for m in methods]
    lines.append("| **mean** | " + " | ".join(f"{v:.2f}" for v in means) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
