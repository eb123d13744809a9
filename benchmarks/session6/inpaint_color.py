"""Colour inpainting: evodenoise (default `inpaint` preset) vs biharmonic per channel, one line each.
usage: inpaint_color.py CROP PERCENT NAME [NAME ...] [key=value ...]   (scikit-image names;
config overrides on the `inpaint` preset, as --set takes them; masks drop each value
independently, benchmarks/run.py's protocol: evodenoise.corrupt.random_mask, seed 0;
mask=pixel drops whole pixels instead, as a gray mask file on the command line does)"""
import sys, os, time, json, numpy as np, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "src"))
from skimage import data
from skimage.restoration import inpaint_biharmonic
from skimage.metrics import peak_signal_noise_ratio as psnr
import evodenoise as ed
from evodenoise.corrupt import random_mask
from evodenoise.config import resolve_config
torch.set_num_threads(int(os.environ.get("THREADS", 1)))
crop, pct = int(sys.argv[1]), float(sys.argv[2])
sets = [a for a in sys.argv[3:] if "=" in a and not a.startswith("mask=")]
pixel = "mask=pixel" in sys.argv[3:]
cfg = resolve_config("inpaint", command="inpaint", overrides=sets)
for name in [a for a in sys.argv[3:] if "=" not in a]:
    img = getattr(data, name)().astype(np.float32) / 255
    h, w = img.shape[:2]; img = img[(h - crop) // 2:(h - crop) // 2 + crop, (w - crop) // 2:(w - crop) // 2 + crop]
    mask = random_mask(img.shape[:2] if pixel else img.shape, pct / 100, seed=0)
    mask = np.repeat(mask[..., None], 3, -1) if pixel else mask; x = img.copy(); x[mask] = 0
    bh = np.stack([inpaint_biharmonic(np.ascontiguousarray(x[..., c], np.float64),
                                      np.ascontiguousarray(mask[..., c])) for c in range(3)], -1)
    t = time.perf_counter(); c0 = time.process_time()
    out, res = ed.inpaint(x, mask, config=cfg, seed=0)
    wall, cpu = time.perf_counter() - t, time.process_time() - c0
    print(json.dumps(dict(img=name, sets=sets, mask="pixel" if pixel else "value", crop=crop, missing=pct, evodenoise=round(psnr(img, np.clip(out, 0, 1), data_range=1), 3),
                          biharmonic=round(psnr(img, np.clip(bh, 0, 1), data_range=1), 3), wall=round(wall, 1), cpu=round(cpu, 1),
                          epochs=res.config.epochs if hasattr(res, "config") else None)), flush=True)
