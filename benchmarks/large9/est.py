"""Re-run the streaming estimate of a saved fit: CPU time, PSNR; optional profile."""
import sys, time, json, cProfile, pstats
import numpy as np, torch
torch.set_num_threads(1)
from evodenoise.train import Fit
from evodenoise.stream import estimate_image
from evodenoise.restore import SCALE
from skimage.metrics import peak_signal_noise_ratio as psnr
path, name, mode = sys.argv[1], sys.argv[2], sys.argv[3]
sets = dict(a.split("=") for a in sys.argv[4:])
import os
if os.environ.get("KEEP"):
    from evodenoise.memory import keep_freed_memory; keep_freed_memory()
d = torch.load(path, weights_only=False)
cfg = d["cfg"]
cfg = cfg.replace(**{k: type(getattr(cfg, k))(v) for k, v in sets.items()})
clean = np.load(f"img/{name}_clean.npy")
noisy = np.load(f"img/{name}_noisy.npy")
x = d["x"]
# recover offset/unit: x = (noisy*... - offset)/unit
xn = torch.from_numpy(noisy if noisy.ndim == 2 else np.moveaxis(noisy, 2, 0)).float()
if xn.ndim == 2: xn = xn[None]
unit = float(xn.std()); offset = float(xn.mean())
fitted = Fit(d["model"], d["states"].clone(), cfg)
gen = torch.Generator().manual_seed(0); gen.set_state(d["gen"])
t = time.process_time()
if mode == "prof":
    pr = cProfile.Profile(); pr.enable()
    out = estimate_image(fitted, x, None, d["pool"], cfg, gen)
    pr.disable()
elif mode == "tprof":
    from torch.profiler import profile, ProfilerActivity
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = estimate_image(fitted, x, None, d["pool"], cfg, gen)
else:
    out = estimate_image(fitted, x, None, d["pool"], cfg, gen)
cpu = time.process_time() - t
img = (out * unit + offset).clamp(0, 255)[0].numpy()
p = psnr(clean, img, data_range=255) if clean.ndim == 2 else None
print(json.dumps({"fit": path, "sets": sets, "est_cpu": round(cpu, 1), "psnr": p}), flush=True)
if mode == "prof":
    pstats.Stats(pr).sort_stats("tottime").print_stats(25)
    pstats.Stats(pr).sort_stats("cumtime").print_stats(30)
if mode == "tprof":
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))
