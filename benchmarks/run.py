#!/usr/bin/env python
"""Benchmark evodenoise against its peers with the protocol of docs/benchmarks.md.

For every image and task the corrupted input is built once (fixed seed per image and task:
float noise on the 0-255 scale, unclipped; per-value random masks), then every method runs on
that same input in the same run: evodenoise presets (library API), scikit-image non-local
means, scikit-image biharmonic inpainting and BM3D (``bm3d`` package, optional ``bench``
extra; skipped with a note when not installed). Each method runs in a fresh ``spawn``
subprocess so that its wall time and peak memory are its own.

A named ``--suite`` (``SUITES`` below) sets the images, tasks, crop and threads of a
standard run; any option given explicitly overrides the suite's value.

Examples::

    python benchmarks/run.py --quick
    python benchmarks/run.py --suite color
    python benchmarks/run.py --suite gray --images ../shared/benchmark/images --threads 2
    python benchmarks/run.py --images ../shared/benchmark/images --presets fast,quality
    python benchmarks/run.py --images ../shared/benchmark/images --presets paper --device cuda
    python benchmarks/run.py --images ../shared/benchmark/images --ablate --tasks denoise-25

See benchmarks/README.md for the columns and the protocol.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import datetime as _dt
import importlib.util
import json
import math
import multiprocessing as mp
import os
import platform
import re
import subprocess
import sys
import time
import traceback
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("evodenoise") is None:  # a checkout without the package installed
    sys.path.insert(0, str(ROOT / "src"))
# evodenoise (and with it torch) is imported lazily: every method runs in a spawn child that
# re-imports this module, and the peers' children should not pay for (or count) torch.

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm", ".pnm"}
DEFAULT_TASKS = ("denoise-15", "denoise-25", "denoise-50", "inpaint-50")
QUICK_TASKS = ("denoise-25", "inpaint-50")
QUICK_EPOCHS = 10
QUICK_CROP = 256
ALL_METHODS = ("input", "evodenoise", "bm3d", "nlm", "biharmonic")
METHODS_FOR = {
    "denoise": ("input", "evodenoise", "bm3d", "nlm"),
    "inpaint": ("evodenoise", "biharmonic"),
}
# Peer settings (docs/benchmarks.md); written into every JSON row.
NLM_PARAMS = dict(h_factor=0.8, patch_size=7, patch_distance=11, fast_mode=True)
PEER_PRESET = {"input": "-", "bm3d": "np profile", "nlm": "h=0.8σ 7x7 d=11 fast", "biharmonic": "-"}
# One-at-a-time ablation grid. Values are strings parsed like --set values;
# ``sigma`` is a pseudo-key: ``given`` passes the task's σ, ``none`` lets the model learn it.
# ``x0.5``/``x2`` scale the base value (for hidden: every layer).
DEFAULT_ABLATION = {
    "selection": ["fitness", "best", "uniform"],
    "sigma_mode": ["fixed", "init"],
    "sigma": ["given", "none"],
    "merge": ["mean", "gaussian"],
    "epochs": ["x0.5", "x1", "x2"],
    "n_states": ["x0.5", "x1", "x2"],
    "hidden": ["x0.5", "x1", "x2"],
}
# Named suites: option values of this script, applied as its defaults (options given on the
# command line win; --quick drops a suite's tasks and crop). `make bench` runs gray,
# `make bench-color` runs color then inpaint.
COLOR_IMAGES = ["skimage:astronaut", "skimage:coffee", "skimage:chelsea"]
SUITES: dict[str, dict] = {
    # the bundled gray sample; --images ../shared/benchmark/images gives House
    "gray": dict(
        images=[str(ROOT / "sample_images" / "camera.png")],
        tasks=["denoise-15,denoise-25,denoise-50,inpaint-50"],
    ),
    # three colour photos scikit-image ships, noise on centre 256x256 crops
    "color": dict(
        images=COLOR_IMAGES, crop=256, tasks=["denoise-15,denoise-25,denoise-50"], threads=2
    ),
    # the same photos, per-value masks on centre 128x128 crops (inpainting trains 40 epochs)
    "inpaint": dict(images=COLOR_IMAGES, crop=128, tasks=["inpaint-50,inpaint-80"], threads=2),
}


# ----------------------------------------------------------------------------- images / tasks


@dataclasses.dataclass(frozen=True)
class Task:
    kind: str  # "denoise" | "inpaint"
    level: float  # σ in 8-bit units, or the missing fraction in percent

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.level:g}"

    @property
    def level_str(self) -> str:
        return f"σ={self.level:g}" if self.kind == "denoise" else f"{self.level:g}%"


def parse_task(text: str) -> Task:
    m = re.fullmatch(r"\s*(denoise|inpaint)[-:_ ]?(\d+(?:\.\d+)?)\s*%?\s*", text)
    if not m:
        raise ValueError(
            f"bad task {text!r}: expected denoise-SIGMA (8-bit units) or "
            f"inpaint-PERCENT, e.g. denoise-25, inpaint-50"
        )
    kind, level = m.group(1), float(m.group(2))
    if kind == "inpaint" and not 0 <= level < 100:
        raise ValueError(f"bad task {text!r}: missing percentage must be in [0, 100)")
    return Task(kind, level)


SKIMAGE = "skimage:"


def load_image(path) -> np.ndarray:
    """Float64 image on the [0, 1] scale, (H, W) or (H, W, 3); alpha dropped (the library's
    reader: the same formats, bit depths and EXIF handling as the command line).
    ``skimage:NAME`` loads ``skimage.data.NAME()`` (freely licensed images scikit-image ships)."""
    if isinstance(path, str) and path.startswith(SKIMAGE):
        from skimage import data

        arr = np.asarray(getattr(data, path[len(SKIMAGE) :])())
        return np.ascontiguousarray(arr / 255.0, dtype=np.float64)
    from evodenoise.imageio import read_image

    return np.asarray(read_image(path)[0], dtype=np.float64)


def find_images(sources: list[str]) -> list:
    paths: list = []
    for src in sources:
        p = Path(src)
        if src.startswith(SKIMAGE):
            from skimage import data

            if not callable(getattr(data, src[len(SKIMAGE) :], None)):
                raise FileNotFoundError(f"scikit-image has no image {src[len(SKIMAGE) :]!r}")
            paths.append(src)
        elif p.is_dir():
            paths += sorted(
                q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES
            )
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"no such image or directory: {src}")
    return paths


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(size, h), min(size, w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[top : top + ch, left : left + cw])


def corruption_seed(base_seed: int, image_name: str, task: Task) -> int:
    """Fixed seed per (image, task): independent of the methods, presets and run order."""
    key = [int(base_seed), zlib.crc32(image_name.encode()), zlib.crc32(task.name.encode())]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def corrupt(clean01: np.ndarray, task: Task, seed: int):
    """The protocol (docs/benchmarks.md). Returns (input on the [0, 1] scale, mask or None, σ01).

    Denoise: noise is added on the 0-255 scale in float, unclipped and unquantised, then the
    result is divided by 255. Inpaint: each value is missing independently with probability
    level/100; missing values are set to 0 in the input (every method ignores them).
    """
    from evodenoise.corrupt import add_noise, random_mask

    if task.kind == "denoise":
        noisy255 = add_noise(clean01 * 255.0, task.level, seed=seed).astype(np.float64)
        return (noisy255 / 255.0).astype(np.float32), None, task.level / 255.0
    mask = random_mask(clean01.shape, task.level / 100.0, seed=seed)
    x = clean01.astype(np.float32).copy()
    x[mask] = 0.0
    return x, mask, None


# ----------------------------------------------------------------------------- config handling


def parse_value(text: str):
    """``--set`` value: a Python literal when it parses as one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE (got {item!r})")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out


def paper_preset_for(task: Task, channels: int) -> str:
    if task.kind == "denoise":
        level = min((15, 25, 50), key=lambda s: abs(s - task.level))
        return f"paper-house-{level}"
    if channels == 1:
        return "paper-inpaint-house"
    return "paper-inpaint-color-80" if task.level >= 65 else "paper-inpaint-color-50"


def build_config(preset: str, task: Task, channels: int, epochs: int | None, overrides: dict):
    """(Config, label) for a preset name (``paper`` maps to the task's paper preset,
    ``default`` to the command's default), settled by the library's
    :func:`evodenoise.presets.resolve_config` exactly as the command line settles it."""
    from evodenoise.presets import get_preset, preset_name, resolve_config

    name = (
        paper_preset_for(task, channels)
        if preset == "paper"
        else (None if preset == "default" else preset)
    )
    name = preset_name(name, command=task.kind)
    cfg = resolve_config(name, command=task.kind, epochs=epochs, overrides=overrides)
    base = get_preset(name).to_dict()
    changes = {k: v for k, v in cfg.to_dict().items() if v != base[k]}
    label = name + "".join(
        f" {k}={_fmt(tuple(v) if isinstance(v, list) else v)}" for k, v in changes.items()
    )
    return cfg, label


def _fmt(v) -> str:
    if isinstance(v, tuple):
        return ",".join(str(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def ablation_value(base, key: str, text: str):
    """Value of an ablation grid entry (``x0.5``/``x2`` scale the base value)."""
    m = re.fullmatch(r"x(\d+(?:\.\d+)?)", text)
    if m:
        f = float(m.group(1))
        cur = getattr(base, key)
        if isinstance(cur, tuple):
            return tuple(max(1, round(h * f)) for h in cur)
        if isinstance(cur, int):
            return max(1, round(cur * f))
        return cur * f
    from evodenoise.presets import coerce_value  # the type rule of --set

    return coerce_value(key, getattr(base, key), parse_value(text))


# ----------------------------------------------------------------------------- method runner


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_kb() -> int:
    hwm = _proc_status_kb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def _execute(spec: dict) -> dict:
    """Run one method on one input; returns the estimate, seconds and memory figures."""
    method, x, mask, sigma = spec["method"], spec["input"], spec["mask"], spec["sigma"]
    device = spec.get("device", "cpu")
    threads = spec.get("threads")
    out: dict = {"extra": {}}
    # Import everything the method needs before the memory baseline.
    if method == "evodenoise":
        import torch

        if threads:
            torch.set_num_threads(int(threads))
        from evodenoise import Config, denoise, inpaint

        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
            base_cuda = torch.cuda.memory_allocated(device)
    elif method == "nlm":
        from skimage.restoration import denoise_nl_means
    elif method == "biharmonic":
        from skimage.restoration import inpaint_biharmonic
    elif method == "bm3d":
        import bm3d
    import gc

    gc.collect()
    # Baseline: the current RSS with the peak reset to it, so that the peak after the run is
    # this method's own (imports and the input are already in memory). Without the reset
    # (non-Linux), the delta of ru_maxrss underestimates when the imports peaked higher.
    out["peak_reset"] = _reset_peak_rss()
    rss0 = _proc_status_kb("VmRSS") if out["peak_reset"] else _peak_rss_kb()
    t0 = time.perf_counter()
    if method == "input":
        est = x
    elif method == "nlm":
        s = float(sigma)
        est = denoise_nl_means(
            x,
            h=NLM_PARAMS["h_factor"] * s,
            sigma=s,
            patch_size=NLM_PARAMS["patch_size"],
            patch_distance=NLM_PARAMS["patch_distance"],
            fast_mode=NLM_PARAMS["fast_mode"],
            channel_axis=-1 if x.ndim == 3 else None,
        )
    elif method == "bm3d":
        fn = bm3d.bm3d_rgb if (x.ndim == 3 and x.shape[-1] == 3) else bm3d.bm3d
        est = fn(x.astype(np.float64), sigma_psd=float(sigma))
        out["extra"]["function"] = fn.__name__
    elif method == "biharmonic":
        if x.ndim == 2:
            est = inpaint_biharmonic(x.astype(np.float64), mask)
        else:  # per-value masks: each channel has its own missing values
            est = np.stack(
                [
                    inpaint_biharmonic(
                        np.ascontiguousarray(x[..., c], np.float64),
                        np.ascontiguousarray(mask[..., c]),
                    )
                    for c in range(x.shape[-1])
                ],
                axis=-1,
            )
    elif method == "evodenoise":
        cfg = Config.from_dict(spec["config"])
        if spec["task"] == "denoise":
            est, res = denoise(x, sigma=sigma, config=cfg, seed=spec["seed"], device=device)
        else:
            est, res = inpaint(x, mask, sigma=sigma, config=cfg, seed=spec["seed"], device=device)
        if cuda:
            torch.cuda.synchronize(device)
        out["extra"].update(
            engine_seconds=float(res.seconds),
            model_sigma_255=float(res.sigma) * 255.0,
            epochs_logged=len(res.log or []),
            epoch_seconds=[round(e["seconds"], 3) for e in res.log or []],
        )
        if res.free_energy:
            out["extra"]["final_free_energy"] = float(res.free_energy[-1])
    else:
        raise ValueError(f"unknown method {method!r}")
    out["seconds"] = time.perf_counter() - t0
    rss1 = _peak_rss_kb()
    out["estimate"] = np.asarray(est, dtype=np.float32).reshape(x.shape)
    out["peak_rss_mb"] = rss1 / 1024.0
    out["peak_rss_delta_mb"] = (rss1 - rss0) / 1024.0
    if method == "evodenoise" and cuda:
        out["cuda_peak_mb"] = (torch.cuda.max_memory_allocated(device) - base_cuda) / 2**20
    return out


def _exit_with_parent(interval: float = 2.0) -> None:
    """Daemon thread: end this worker when the benchmark process that started it is gone."""
    import threading

    parent = os.getppid()

    def watch():
        while True:
            time.sleep(interval)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _child(conn, spec: dict) -> None:
    _exit_with_parent()
    try:
        conn.send(("ok", _execute(spec)))
    except BaseException as exc:  # report everything, including NotImplementedError
        conn.send(("error", f"{type(exc).__name__}: {exc}".strip(), traceback.format_exc(limit=4)))
    finally:
        conn.close()


def run_method(spec: dict, isolate: bool = True, timeout: float | None = None) -> dict:
    """Run ``spec`` in a fresh spawn subprocess (or in-process when ``isolate`` is False)."""
    if not isolate:
        try:
            out = _execute(spec)
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}".strip()}
        out["peak_rss_mb"] = out["peak_rss_delta_mb"] = None  # not this method's own
        return out
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, spec), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            proc.terminate()
            proc.join(5)
            return {"error": f"timeout after {timeout:g} s"}
        msg = parent.recv()
    except EOFError:
        proc.join(5)
        return {"error": f"worker died (exit code {proc.exitcode})"}
    finally:
        parent.close()
    proc.join(30)
    if msg[0] == "ok":
        return msg[1]
    return {"error": msg[1], "traceback": msg[2]}


def bm3d_available() -> tuple[bool, str]:
    try:
        import bm3d  # noqa: F401
    except Exception as exc:  # ImportError or a broken binary
        return False, f"bm3d not importable ({type(exc).__name__}); `pip install -e .[bench]`"
    from importlib.metadata import PackageNotFoundError, version

    try:
        return True, version("bm3d")
    except PackageNotFoundError:  # pragma: no cover
        return True, "unknown"


# ----------------------------------------------------------------------------- tables

COLUMNS = (
    "image",
    "task",
    "level",
    "method",
    "PSNR",
    "SSIM",
    "seconds",
    "peak memory",
    "device",
    "preset",
    "seed",
)


def _num(v, fmt: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def memory_str(row: dict) -> str:
    if row.get("cuda_peak_mb") is not None:
        return f"{row['cuda_peak_mb']:.0f} MB (cuda)"
    if row.get("peak_rss_delta_mb") is not None:
        return f"{row['peak_rss_delta_mb']:.0f} MB"
    return "–"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        if r.get("error"):
            note = r["error"].replace("|", "/").splitlines()[0][:120]
            cells = [
                r["image"],
                r["task"],
                r["level"],
                r["method"],
                "–",
                "–",
                "–",
                "–",
                r.get("device", "–"),
                r.get("preset", "–"),
                str(r.get("seed", "–")),
            ]
            cells[4] = f"skipped: {note}" if r.get("skipped") else f"error: {note}"
        else:
            cells = [
                r["image"],
                r["task"],
                r["level"],
                r["method"],
                _num(r["psnr"], ".2f"),
                _num(r["ssim"], ".4f"),
                _num(r["seconds"], ".2f"),
                memory_str(r),
                r["device"],
                r["preset"],
                str(r["seed"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


ABLATION_COLUMNS = (
    "image",
    "task",
    "level",
    "variant",
    "PSNR",
    "ΔPSNR",
    "SSIM",
    "seconds",
    "peak memory",
    "device",
    "preset",
    "seed",
)


def ablation_table(rows: list[dict]) -> str:
    base = {
        (r["image"], r["task"]): r["psnr"]
        for r in rows
        if r.get("variant") == "baseline" and not r.get("error")
    }
    lines = ["| " + " | ".join(ABLATION_COLUMNS) + " |", "|" + "---|" * len(ABLATION_COLUMNS)]
    for r in rows:
        if r.get("error"):
            cells = [
                r["image"],
                r["task"],
                r["level"],
                r["variant"],
                "error: " + r["error"].replace("|", "/").splitlines()[0][:100],
                "–",
                "–",
                "–",
                "–",
                r["device"],
                r["preset"],
                str(r["seed"]),
            ]
        else:
            b = base.get((r["image"], r["task"]))
            delta = None if b is None else r["psnr"] - b
            cells = [
                r["image"],
                r["task"],
                r["level"],
                r["variant"],
                _num(r["psnr"], ".2f"),
                _num(delta, "+.2f"),
                _num(r["ssim"], ".4f"),
                _num(r["seconds"], ".1f"),
                memory_str(r),
                r["device"],
                r["preset"],
                str(r["seed"]),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main loop


def score(row: dict, clean01: np.ndarray, out: dict, mask, clip: bool = False) -> None:
    from evodenoise.metrics import psnr, ssim

    est = out["estimate"].astype(np.float64)
    if clip:
        est = np.clip(est, 0.0, 1.0)
    # 8-bit scale: data_range 255 on clean*255 vs estimate*255 (same as data_range 1 on [0, 1]).
    row["psnr"] = psnr(clean01 * 255.0, est * 255.0, data_range=255.0)
    row["ssim"] = ssim(clean01 * 255.0, est * 255.0, data_range=255.0)
    if mask is not None:  # also the PSNR on the missing values only
        err = (clean01 - est)[mask]
        row["psnr_missing"] = (
            float("inf")
            if not err.size or not np.any(err)
            else float(10 * np.log10(1.0 / np.mean(err**2)))
        )


def resolve_device(device: str) -> str:
    from evodenoise.device import resolve_device as resolve

    return str(resolve(device))


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "-uno"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else None
    except Exception:  # pragma: no cover
        return None


def metadata(args, device: str, bm3d_info: str) -> dict:
    import skimage

    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
        "bm3d": bm3d_info,
        "cpu_count": os.cpu_count(),
        "device": device,
        "git": git_commit(),
        "argv": sys.argv[1:],
        "suite": args.suite,
        "isolated": args.isolate,
        "protocol": "noise clean255 + σ·N(0,1) float unclipped, "
        "per-value masks, seed per (image, task); PSNR/SSIM whole image, "
        "8-bit scale (data_range 255)",
        "estimates_clipped": bool(args.clip),
    }
    try:
        import torch

        meta["torch"] = torch.__version__
        meta["torch_threads"] = torch.get_num_threads()
        if device.startswith("cuda"):
            meta["gpu"] = torch.cuda.get_device_name(device)
    except Exception:  # pragma: no cover
        pass
    return meta


def plan_methods(task: Task, methods: list[str]) -> list[str]:
    return [m for m in methods if m in METHODS_FOR[task.kind]]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(args) -> dict:
    device = resolve_device(args.device)
    tasks = args.tasks
    images = find_images(args.images)
    if not images:
        raise SystemExit(f"no images found in {', '.join(args.images)}")
    loaded = []
    for p in images:
        try:
            img = load_image(p)
        except Exception as exc:
            log(f"skipping {p}: {exc}")
            continue
        crop = args.crop or (QUICK_CROP if args.quick else None)
        if crop:
            img = centre_crop(img, crop)
        loaded.append((p[len(SKIMAGE) :] if isinstance(p, str) else p.stem, img))
    if args.quick and len(loaded) > 1:  # the smallest image only (ties: first by name)
        loaded = [min(loaded, key=lambda t: t[1].size)]
    epochs = args.epochs if args.epochs is not None else (QUICK_EPOCHS if args.quick else None)
    overrides = parse_overrides(args.set)
    has_bm3d, bm3d_info = bm3d_available()
    meta = metadata(args, device, bm3d_info)
    rows: list[dict] = []
    ablation_rows: list[dict] = []
    out_dir = Path(args.out)
    for name, clean in loaded:
        channels = clean.shape[2] if clean.ndim == 3 else 1
        for task in tasks:
            seed = corruption_seed(args.seed, name, task)
            x, mask, sigma01 = corrupt(clean, task, seed)
            common = dict(
                image=name,
                shape=list(clean.shape),
                task=task.kind,
                level=task.level_str,
                level_value=task.level,
                seed=args.seed,
                corruption_seed=seed,
            )
            jobs = []  # (method, preset label, config or None, variant, sigma passed)
            for method in plan_methods(task, args.methods):
                if method != "evodenoise":
                    jobs.append((method, PEER_PRESET[method], None, None, sigma01))
                    continue
                for preset in args.presets:
                    try:
                        cfg, label = build_config(preset, task, channels, epochs, overrides)
                    except Exception as exc:
                        rows.append(
                            dict(
                                common,
                                method="evodenoise",
                                preset=preset,
                                device=device,
                                error=f"config: {exc}",
                            )
                        )
                        continue
                    if args.ablate:
                        for variant, vcfg, vsigma in ablation_variants(
                            cfg, task, sigma01, args.vary, args.only_vary
                        ):
                            jobs.append(("evodenoise", label, vcfg, variant, vsigma))
                    else:
                        jobs.append(("evodenoise", label, cfg, None, sigma01))
            for method, label, cfg, variant, sig in jobs:
                row = dict(
                    common,
                    method=method,
                    preset=label,
                    device=device if method == "evodenoise" else "cpu",
                )
                if variant is not None:
                    row["variant"] = variant
                if method == "bm3d" and not has_bm3d:
                    row.update(error=bm3d_info, skipped=True)
                    rows.append(row)
                    log(f"{name} {task.name} bm3d: skipped ({bm3d_info})")
                    continue
                if cfg is not None:
                    row["config"] = cfg.to_dict()
                    row["sigma_given_255"] = None if sig is None else sig * 255.0
                spec = dict(
                    method=method,
                    task=task.kind,
                    input=x,
                    mask=mask,
                    sigma=sig,
                    config=row.get("config"),
                    seed=args.seed,
                    device=device,
                    threads=args.threads,
                )
                log(
                    f"{name} {task.name} {method}"
                    + (f" [{label}]" if cfg is not None else "")
                    + (f" {{{variant}}}" if variant else "")
                    + " ..."
                )
                out = run_method(spec, isolate=args.isolate, timeout=args.timeout)
                if "error" in out:
                    row["error"] = out["error"]
                    log(f"  error: {out['error']}")
                else:
                    score(row, clean, out, mask, clip=args.clip and method != "input")
                    row["clipped"] = args.clip and method != "input"
                    row.update(
                        seconds=out["seconds"],
                        peak_rss_mb=out.get("peak_rss_mb"),
                        peak_rss_delta_mb=out.get("peak_rss_delta_mb"),
                        cuda_peak_mb=out.get("cuda_peak_mb"),
                        peak_reset=out.get("peak_reset"),
                        **out["extra"],
                    )
                    log(
                        f"  PSNR {row['psnr']:.2f} dB  SSIM {row['ssim']:.4f}  "
                        f"{row['seconds']:.2f} s  {memory_str(row)}"
                    )
                    if args.save_images:
                        save_estimate(
                            out_dir / args.name / "images",
                            f"{name}_{task.name}_{method}"
                            + (f"_{label}" if cfg is not None else "")
                            + (f"_{variant}" if variant else ""),
                            out["estimate"],
                        )
                (ablation_rows if variant is not None else rows).append(row)
    return {"meta": meta, "rows": rows, "ablation": ablation_rows}


def ablation_variants(base, task: Task, sigma01, vary: list[str], only_vary: bool = False):
    """Yield (variant label, config, sigma) for the baseline and one-at-a-time changes
    (the default axes plus ``vary``, or only ``vary`` with ``only_vary``)."""
    grid = {} if only_vary else dict(DEFAULT_ABLATION)
    for item in vary:
        key, _, values = item.partition("=")
        if not values:
            raise ValueError(f"--vary expects KEY=V1|V2|... (got {item!r})")
        grid[key.strip()] = [v.strip() for v in values.split("|")]
    yield "baseline", base, sigma01
    for key, values in grid.items():
        if key == "sigma":
            if task.kind != "denoise":
                continue
            for v in values:
                if v == "none":
                    yield "sigma=learned (not given)", base, None
                elif v != "given":
                    raise ValueError(f"sigma ablation values are 'given' or 'none' (got {v!r})")
            continue
        if key == "sigma_mode" and (task.kind != "denoise" or sigma01 is None):
            continue  # σ is not given: sigma_mode has no effect
        if not hasattr(base, key):
            raise ValueError(f"unknown config key in ablation: {key}")
        for v in values:
            value = ablation_value(base, key, v)
            if value == getattr(base, key):
                continue  # that is the baseline
            try:
                cfg = base.replace(**{key: value})
            except ValueError as exc:
                log(f"ablation {key}={_fmt(value)} skipped: {exc}")
                continue
            yield f"{key}={_fmt(value)}", cfg, sigma01


def save_estimate(folder: Path, stem: str, est: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", stem)
    arr = np.clip(np.rint(est * 255.0), 0, 255).astype(np.uint8)
    Image.fromarray(arr).save(folder / f"{stem}.png")


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(type(o).__name__)


def _clean_json(o):
    if isinstance(o, float) and not math.isfinite(o):
        return None if math.isnan(o) else ("inf" if o > 0 else "-inf")
    if isinstance(o, dict):
        return {k: _clean_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean_json(v) for v in o]
    return o


def write_outputs(report: dict, out_dir: Path, name: str) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / f"{name}.json"}
    with open(paths["json"], "w") as f:
        json.dump(_clean_json(report), f, indent=1, default=_json_default)
        f.write("\n")
    meta = report["meta"]
    header = (
        f"<!-- {meta['date']} · {meta['host']} · {meta['cpu_count']} CPUs · "
        f"device {meta['device']}{' (' + meta['gpu'] + ')' if meta.get('gpu') else ''} · "
        f"git {meta['git']} · torch {meta.get('torch')} · bm3d {meta['bm3d']} · "
        f"args: {' '.join(meta['argv'])} -->\n"
    )
    text = header
    if report["rows"]:
        text += "\n" + markdown_table(report["rows"]) + "\n"
    if report["ablation"]:
        text += "\n" + ablation_table(report["ablation"]) + "\n"
    paths["md"] = out_dir / f"{name}.md"
    paths["md"].write_text(text)
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Benchmark evodenoise and its peers (BM3D, NL-means, biharmonic) with the "
        "protocol of docs/benchmarks.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--suite",
        choices=sorted(SUITES),
        default=None,
        help="a named set of images, tasks, crop and threads (SUITES in this file); "
        "options given explicitly override it",
    )
    p.add_argument(
        "--images",
        nargs="+",
        default=[str(ROOT / "sample_images")],
        help="image files or folders (non-image files are skipped), or skimage:NAME "
        "for an image scikit-image ships (e.g. skimage:astronaut)",
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        help="tasks, comma or space separated: denoise-SIGMA (8-bit units), "
        f"inpaint-PERCENT; default {','.join(DEFAULT_TASKS)}",
    )
    p.add_argument(
        "--presets",
        default="default",
        help="evodenoise presets, comma separated; 'default' = each command's "
        "default (fast / inpaint), 'paper' = the paper preset of each task",
    )
    p.add_argument(
        "--methods",
        default=",".join(ALL_METHODS),
        help="methods to run, comma separated, from " + ",".join(ALL_METHODS),
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"short run: tasks {','.join(QUICK_TASKS)} on the smallest image, "
        f"centre-cropped to {QUICK_CROP}x{QUICK_CROP}, {QUICK_EPOCHS} epochs "
        f"(explicit --tasks/--epochs/--crop win)",
    )
    p.add_argument("--epochs", type=int, default=None, help="override the presets' epochs")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every evodenoise run (repeatable), "
        "e.g. --set selection=best --set hidden=128",
    )
    p.add_argument(
        "--ablate",
        action="store_true",
        help="ablation: evodenoise baseline plus one-at-a-time variants of each "
        "preset (selection, sigma_mode, σ given/learned, merge, epochs, "
        "n_states, hidden); peers still run once per input",
    )
    p.add_argument(
        "--only-vary",
        action="store_true",
        help="with --ablate: vary only the --vary axes, not the default ones",
    )
    p.add_argument(
        "--vary",
        action="append",
        default=[],
        metavar="KEY=V1|V2",
        help="replace or add an ablation axis, e.g. --vary n_latents=x0.5|x2 "
        "(x-prefixed values scale the preset's value)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="base seed: corruption seeds derive from (seed, image, task); "
        "evodenoise runs with this seed",
    )
    p.add_argument("--device", default="cpu", help="evodenoise device: cpu, cuda, cuda:N, auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each worker")
    p.add_argument(
        "--crop",
        type=int,
        default=None,
        help="centre-crop every image to at most CROP x CROP first",
    )
    p.add_argument(
        "--no-clip",
        dest="clip",
        action="store_false",
        help="score estimates as returned; by default every method's estimate is "
        "clipped to [0, 1] before scoring (evodenoise clips its own output), "
        "the 'input' row never is",
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds per method run")
    p.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="run methods in this process (no per-method peak memory on CPU)",
    )
    p.add_argument(
        "--out",
        default=str(ROOT / "benchmarks" / "results"),
        help="output folder for NAME.json and NAME.md",
    )
    p.add_argument("--name", default=None, help="output file stem (default: timestamp)")
    p.add_argument(
        "--save-images",
        action="store_true",
        help="also save every estimate as an 8-bit PNG under OUT/NAME/images",
    )
    return p


def parse_args(argv=None):
    p = build_parser()
    first, _ = p.parse_known_args(argv)
    if first.suite:
        suite = dict(SUITES[first.suite])
        if first.quick:  # --quick sets its own tasks and crop
            suite.pop("tasks", None)
            suite.pop("crop", None)
        p.set_defaults(**suite)
    args = p.parse_args(argv)

    def split(values):
        return [v for item in values for v in item.split(",") if v.strip()]

    try:
        task_texts = (
            split(args.tasks) if args.tasks else list(QUICK_TASKS if args.quick else DEFAULT_TASKS)
        )
        args.tasks = [parse_task(t) for t in task_texts]
    except ValueError as exc:
        p.error(str(exc))
    args.presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    args.methods = [s.strip() for s in args.methods.split(",") if s.strip()]
    bad = set(args.methods) - set(ALL_METHODS)
    if bad:
        p.error(f"unknown method(s) {', '.join(sorted(bad))}; known: {', '.join(ALL_METHODS)}")
    if args.ablate and "evodenoise" not in args.methods:
        p.error("--ablate needs the evodenoise method")
    try:
        parse_overrides(args.set)
    except ValueError as exc:
        p.error(str(exc))
    if args.name is None:
        prefix = "ablation" if args.ablate else (args.suite or "bench")
        args.name = f"{prefix}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    report = run(args)
    paths = write_outputs(report, Path(args.out), args.name)
    if report["rows"]:
        print(markdown_table(report["rows"]))
    if report["ablation"]:
        print()
        print(ablation_table(report["ablation"]))
    print(f"\nwrote {paths['json']} and {paths['md']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
