"""denoise() via the library, fitted model saved before the estimate; CPU times split."""
import sys, time, json, resource
import numpy as np, torch
import os; torch.set_num_threads(int(os.environ.get("THREADS", 1)))
import evodenoise
from evodenoise import restore, get_preset
from skimage.metrics import peak_signal_noise_ratio as psnr
name, save = sys.argv[1], sys.argv[2]
sets = dict(a.split("=") for a in sys.argv[3:])
cfg = get_preset("fast")
cfg = cfg.replace(**{k: type(getattr(cfg, k))(v) for k, v in sets.items()})
noisy = np.load(f"img/{name}_noisy.npy") / 255.0
clean = np.load(f"img/{name}_clean.npy")
T = {"t0": time.process_time()}
orig = restore.estimate_image
def wrapped(fitted, x, observed, pool, c, gen, cb=None):
    T["train_cpu"] = time.process_time() - T["t0"]
    if save != "-":
        torch.save({"model": fitted.model, "states": fitted.states.clone(), "cfg": c, "x": x,
                    "pool": pool, "gen": gen.get_state(), "log": fitted.log}, save)
    t = time.process_time()
    out = orig(fitted, x, observed, pool, c, gen, cb)
    T["est_cpu"] = time.process_time() - t
    return out
restore.estimate_image = wrapped
w0 = time.perf_counter()
out, res = evodenoise.denoise(noisy, 25 / 255, config=cfg, seed=0)
wall = time.perf_counter() - w0
p = psnr(clean, out * 255, data_range=255)
print(json.dumps({"image": name, "sets": sets, "psnr": round(p, 3), "wall": round(wall, 1),
                  "train_cpu": round(T["train_cpu"], 1), "est_cpu": round(T["est_cpu"], 1),
                  "epochs": res.config.epochs, "pool": res.config.train_patches,
                  "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}), flush=True)
