"""Decompose the pooled loss: the full-trained model, with trained states kept only for the pooled run's pool."""
import sys, time, json, os
import numpy as np, torch
torch.set_num_threads(1)
from evodenoise.memory import keep_freed_memory; keep_freed_memory()
from evodenoise.train import Fit
from evodenoise.stream import estimate_image
from skimage.metrics import peak_signal_noise_ratio as psnr
sets = dict(a.split("=") for a in sys.argv[1:])
full = torch.load("fit_full512.pt", weights_only=False)
pool = torch.load("fit_pool512.pt", weights_only=False)["pool"]
cfg = full["cfg"]
cfg = cfg.replace(**{k: type(getattr(cfg, k))(v) for k, v in sets.items()})
clean = np.load("img/cam512_clean.npy"); noisy = torch.from_numpy(np.load("img/cam512_noisy.npy"))
unit, offset = float(noisy.std()), float(noisy.mean())
fitted = Fit(full["model"], full["states"][pool].clone(), cfg)
gen = torch.Generator().manual_seed(0); gen.set_state(full["gen"])
t = time.process_time()
out = estimate_image(fitted, full["x"], None, pool, cfg, gen)
cpu = time.process_time() - t
img = (out * unit + offset).clamp(0, 255)[0].numpy()
print(json.dumps({"model": "full", "states": "pool only", "sets": sets, "est_cpu": round(cpu, 1), "psnr": round(psnr(clean, img, data_range=255), 3)}), flush=True)
