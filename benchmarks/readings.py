"""How the noise reads (``noise.Reading``) on real camera photos and on synthetic cases that
bracket them: white and box-filtered (correlated) noise on scikit-image's images, fine texture
(grass, gravel) under weak white noise. For each: whiteness over the whole image and over the
tenth of 32x32 blocks whose 2x2-block-means σ is smallest (the flattest), σ at 4x4-block means
over that at 2x2 (correlation should level off, texture keep growing), the class a run takes
and whether it warns that the σ is uncertain. ``--bm3d``: BM3D on the textures at the σ a run
would assume, against their noisy input (does the peer, given a blind σ, fail there too?).

    python benchmarks/readings.py ../shared/benchmark/real/camera \\
        ../shared/benchmark/real/microscopy --bm3d

Noise: numpy's generator seeded 0, float, unclipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import uniform_filter
from skimage import data, io
from skimage.metrics import peak_signal_noise_ratio
from skimage.restoration import estimate_sigma

from evodenoise.noise import read_noise, stabilise


def pooled(x: np.ndarray, k: int) -> np.ndarray:
    """Means of k x k blocks."""
    h, w = x.shape[0] // k * k, x.shape[1] // k * k
    return x[:h, :w].reshape(h // k, k, w // k, k).mean((1, 3))


def flattest_whiteness(y: np.ndarray, block: int = 32) -> float:
    """Median whiteness (finest-scale σ over twice the 2x2-block means' σ, each from the
    median absolute diagonal Haar detail) of the tenth of the blocks where the latter is
    smallest."""
    rows = []
    for i in range(0, y.shape[0] - block + 1, block):
        for j in range(0, y.shape[1] - block + 1, block):
            b = y[i : i + block, j : j + block]
            rows.append((_haar_sigma(b), 2 * _haar_sigma(pooled(b, 2))))
    r = np.array(rows)
    flat = np.argsort(r[:, 1])[: max(len(r) // 10, 1)]
    return float(np.median(r[flat, 0] / np.maximum(r[flat, 1], 1e-9)))


def _haar_sigma(x: np.ndarray) -> float:
    a, b, c, d = x[0::2, 0::2], x[0::2, 1::2], x[1::2, 0::2], x[1::2, 1::2]
    return float(np.median(np.abs(a - b - c + d) / 2)) / 0.6745


def cases(folders: list[str]):
    """(name, noisy, clean or None) of every case, gray 0–255 float (microscope frames, read
    as noise of photon counts, after the Anscombe transform a run applies to them)."""
    for folder in folders:
        for p in sorted(Path(folder).glob("*_real.png")):
            yield p.stem[:-5], io.imread(p).astype(float).mean(2), None
        for p in sorted(Path(folder).glob("*_noisy.tif")):
            frame = torch.from_numpy(io.imread(p).astype(float))
            frame = frame * 255 / frame.max() if float(frame.max()) > 255 else frame
            vst = stabilise(frame[None])
            if vst is None:
                yield p.stem[:-6], frame.numpy(), None
            else:
                yield f"{p.stem[:-6]} (transformed)", vst[0].forward(frame).numpy(), None
    rng = np.random.default_rng(0)
    for name in ("grass", "gravel", "brick", "moon", "coins", "camera"):
        im = getattr(data, name)().astype(float)
        for s in (5, 10, 25):
            yield f"{name} white {s}", im + s * rng.standard_normal(im.shape), im
        for s in (10, 25):  # 3x3 box of white noise of 3s: per-pixel σ s, neighbours 2/3
            noise = uniform_filter(3 * s * rng.standard_normal(im.shape), 3)
            yield f"{name} box3 {s}", im + noise, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", help="real pairs: camera (NAME_real.png), microscopy "
                    "(NAME_noisy.tif)")  # fmt: skip
    ap.add_argument("--bm3d", action="store_true", help="BM3D at the assumed σ on the textures")
    args = ap.parse_args()
    print("| case | whiteness | flattest tenth | σ4/σ2 | class | σ assumed | uncertain |"
          + (" input dB | BM3D at σ assumed |" if args.bm3d else ""))  # fmt: skip
    print("|---" * (9 if args.bm3d else 7) + "|")
    for name, y, clean in cases(args.folders):
        r = read_noise(torch.from_numpy(y))
        ratio = 4 * estimate_sigma(pooled(y, 4)) / (2 * estimate_sigma(pooled(y, 2)))
        row = (f"| {name} | {r.whiteness:.3f} | {flattest_whiteness(y):.3f} | {ratio:.2f} | "
               f"{r.kind} | {r.sigma:.1f} | {'yes' if r.unsure else 'no'} |")  # fmt: skip
        if args.bm3d:
            extra = " – | – |"
            if clean is not None and name.split()[0] in ("grass", "gravel"):
                import bm3d

                out = bm3d.bm3d(y, r.sigma)
                noisy, peer = (peak_signal_noise_ratio(clean, z, data_range=255) for z in (y, out))
                extra = f" {noisy:.2f} | {peer:.2f} |"
            row += extra
        print(row, flush=True)


if __name__ == "__main__":
    main()
