#!/usr/bin/env python
"""CPU seconds per training epoch of two source trees of evodenoise, side by side in one process.

On a shared machine wall times swing with the other jobs' load; process CPU time swings less,
and loading both versions into one process and running them alternately exposes both to the
same conditions. Per round and version: ``EPOCHS`` epochs of ``PRESET`` (eager,
``compile=off``) on the House centre crop 128×128, σ = 25, seed 0, one thread; the first epoch
(set-up) is left out. Example::

    git archive b4aeae6 src | tar -x -C /tmp/before
    OMP_NUM_THREADS=1 python benchmarks/cpu_pair.py /tmp/before/src src fast 2 4
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGE = Path(__file__).resolve().parent.parent.parent / "shared/benchmark/images/house.png"


def load(name: str, src: str):
    """The package under ``src``/evodenoise imported as ``name``."""
    spec = importlib.util.spec_from_file_location(
        name, f"{src}/evodenoise/__init__.py", submodule_search_locations=[f"{src}/evodenoise"]
    )
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    importlib.import_module(name + ".corrupt")
    return mod


def main(before: str, after: str, preset: str, rounds: int, epochs: int) -> None:
    torch.set_num_threads(1)
    versions = {"before": load("evo_before", before), "after": load("evo_after", after)}
    img = np.asarray(Image.open(IMAGE).convert("L"), dtype=np.float32) / 255
    c0 = (img.shape[0] - 128) // 2
    times = {k: [] for k in versions}
    for r in range(rounds):
        for name, evo in versions.items():
            crop = img[c0 : c0 + 128, c0 : c0 + 128]
            noisy = sys.modules[evo.__name__ + ".corrupt"].add_noise(crop, 25 / 255, seed=0)
            cfg = evo.get_preset(preset).replace(
                epochs=epochs, min_visits=0, final_sweeps=1, compile="off"
            )
            marks = [time.process_time()]

            def mark(entry, marks=marks):
                if entry["phase"] == "train":
                    marks.append(time.process_time())

            evo.denoise(noisy, 25 / 255, config=cfg, seed=0, callback=mark)
            d = np.diff(marks)[1:]
            times[name] += list(d)
            print(
                f"round {r} {name:6s} {preset} CPU s/epoch: {' '.join(f'{x:.2f}' for x in d)}",
                flush=True,
            )
    for name, t in times.items():
        print(f"{name:6s} {preset}: min {min(t):.2f}, median {np.median(t):.2f} ({len(t)} epochs)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
