"""EPLL-style passes (half-quadratic splitting) with a saved fit: pass k denoises the current
image x_k with the model at noise σ_k (posterior under σ_k², states swept from the last pass's),
then x_{k+1} = (y/σ² + c·z̄_k/σ_k²) / (1/σ² + c/σ_k²), z̄ the merged patch estimates and c the
number of patches over a pixel (p²).
usage: hqs_lab.py FIT.pt SCHED [SCHED ...]; SCHED: comma-separated σ_k/σ factors, e.g. 1,0.5"""
import sys, os, json, time, numpy as np, torch
sys.path.insert(0, os.environ.get("EVO_SRC", os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "src")))
from evodenoise.train import Fit
from evodenoise.stream import estimate_image
torch.set_num_threads(int(os.environ.get("THREADS", 1)))
d = torch.load(sys.argv[1], weights_only=False)
clean, cfg, model = d["clean"], d["cfg"], d["model"]
def psnr(a): return round(float(10 * np.log10(255**2 / ((a - clean) ** 2).mean())), 3)
s2 = model.sigma2.clone(); y = d["x"].clone(); c = cfg.patch_size ** 2
for sched in sys.argv[2:]:
    gen = torch.Generator().manual_seed(0); gen.set_state(d["gen"])
    states = d["states"].clone(); x = y.clone(); res = []; c0 = time.process_time()
    for f in map(float, sched.split(",")):
        model.sigma2.copy_(s2 * f * f)
        z = estimate_image(Fit(model, states, cfg), x.clone(), None, d["pool"], cfg, gen)
        zi = (z * d["unit"] + d["offset"])[0].numpy()
        x = (y + c * z / (f * f)) / (1 + c / (f * f))
        res.append((f, psnr(zi), psnr((x * d["unit"] + d["offset"])[0].numpy())))
    model.sigma2.copy_(s2)
    print(json.dumps({"fit": sys.argv[1], "sched": sched, "passes(f, z, x)": res, "cpu": round(time.process_time() - c0, 1)}), flush=True)
