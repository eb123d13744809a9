"""Regenerate the bundled sample images from scikit-image's bundled data (all CC0 / public domain).

    .venv/bin/python sample_images/make_samples.py

Writes, next to this script:
  camera.png          256x256 8-bit gray: skimage.data.camera() (512x512) downscaled 2x
  astronaut.png       128x128 8-bit RGB: skimage.data.astronaut() face crop (256x256) downscaled 2x
  camera_noisy25.npy  float32 on the 0-255 scale: camera.png + 25 * N(0, 1), seed 0, unclipped
                      and unquantised (the benchmark protocol), made with evodenoise.corrupt

The output is deterministic: running it again reproduces the files byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data
from skimage.transform import downscale_local_mean

from evodenoise.corrupt import add_noise

HERE = Path(__file__).resolve().parent
NOISE_SIGMA = 25.0  # 0-255 units
NOISE_SEED = 0


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def main() -> None:
    camera = _to_uint8(downscale_local_mean(data.camera().astype(np.float64), (2, 2)))
    Image.fromarray(camera).save(HERE / "camera.png", optimize=True)

    face = data.astronaut()[0:256, 128:384].astype(np.float64)  # (256, 256, 3), the face
    astronaut = _to_uint8(downscale_local_mean(face, (2, 2, 1)))
    Image.fromarray(astronaut).save(HERE / "astronaut.png", optimize=True)

    # Noise on the [0, 1] scale with sigma 25/255, then back to the 0-255 scale.
    noisy = add_noise(camera.astype(np.float32) / 255.0, NOISE_SIGMA / 255.0, seed=NOISE_SEED)
    np.save(HERE / "camera_noisy25.npy", (noisy.astype(np.float64) * 255.0).astype(np.float32))
    for name in ("camera.png", "astronaut.png", "camera_noisy25.npy"):
        print(f"wrote {HERE / name} ({(HERE / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
