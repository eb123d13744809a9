"""Estimate variants on a fit saved by lab.py (one training, several estimates).
usage: est_lab.py FIT.pt VARIANT [VARIANT ...]; VARIANT: key=value[,key=value] of Config, or
'T=t' (posterior temperature: σ² × t in the estimate), e.g. merge=variance  T=1.2
prints PSNR of each on the 0-255 plane, and the oracle blend with the noisy plane."""
import sys, os, json, time, numpy as np, torch
sys.path.insert(0, os.environ.get("EVO_SRC", os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "src")))
from evodenoise.train import Fit
from evodenoise.stream import estimate_image
torch.set_num_threads(int(os.environ.get("THREADS", 1)))
d = torch.load(sys.argv[1], weights_only=False)
clean, noisy = d["clean"], d["noisy"]
def psnr(a): return round(float(10 * np.log10(255**2 / ((a - clean) ** 2).mean())), 3)
def blend(out):  # least-squares k for (1-k) out + k noisy, against the clean plane (an oracle)
    e, r = out - clean, noisy - out
    k = -float((e * r).sum() / (r * r).sum())
    return round(k, 3), psnr(out + k * r)
print(json.dumps({"fit": sys.argv[1], "variant": "saved", "psnr": psnr(d["out"]), "blend": blend(d["out"])}), flush=True)
for v in sys.argv[2:]:
    sets = dict(kv.split("=") for kv in v.split(",")) if v != "default" else {}
    t = float(sets.pop("T", 1))
    cfg = d["cfg"].replace(**{k: type(getattr(d["cfg"], k))(x) for k, x in sets.items()})
    model = d["model"]; s2 = model.sigma2.clone(); model.sigma2.mul_(t)
    gen = torch.Generator().manual_seed(0); gen.set_state(d["gen"])
    c0 = time.process_time()
    out = estimate_image(Fit(model, d["states"].clone(), cfg), d["x"].clone(), None, d["pool"], cfg, gen)
    model.sigma2.copy_(s2)
    out = (out * d["unit"] + d["offset"])[0].numpy()
    print(json.dumps({"variant": v, "psnr": psnr(out), "blend": blend(out), "cpu": round(time.process_time() - c0, 1)}), flush=True)
    np.save(sys.argv[1].replace(".pt", f"_{v.replace('=', '').replace(',', '_')}.npy"), out)
