"""A/B of the streaming estimate of two source trees on one saved fit, alternately, one process each run."""
import sys, time, json, importlib, numpy as np, torch
import os; torch.set_num_threads(int(os.environ.get("THREADS", 1)))
src, path, name = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, src)
from evodenoise.train import Fit
from evodenoise.stream import estimate_image
from evodenoise.memory import keep_freed_memory; keep_freed_memory()
from skimage.metrics import peak_signal_noise_ratio as psnr
d = torch.load(path, weights_only=False)
cfg = d["cfg"]
sets = dict(a.split("=") for a in sys.argv[4:])
cfg = cfg.replace(**{k: type(getattr(cfg, k))(v) for k, v in sets.items()})
clean = np.load(f"img/{name}_clean.npy"); noisy = np.load(f"img/{name}_noisy.npy")
xn = torch.from_numpy(noisy).float()[None]
unit = float(xn.std()); offset = float(xn.mean())
fitted = Fit(d["model"], d["states"].clone(), cfg)
gen = torch.Generator().manual_seed(0); gen.set_state(d["gen"])
t = time.process_time(); w = time.perf_counter()
out = estimate_image(fitted, d["x"], None, d["pool"], cfg, gen)
cpu = time.process_time() - t
img = (out * unit + offset).clamp(0, 255)[0].numpy()
print(json.dumps({"threads": torch.get_num_threads(), "wall": round(time.perf_counter() - w, 1), "src": src, "sets": sets, "est_cpu": round(cpu, 1), "psnr": round(psnr(clean, img, data_range=255), 4)}), flush=True)
