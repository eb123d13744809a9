"""Geometric self-ensemble at estimate time on a saved fit: the 8 flips/rotations of the plane,
each estimated (the identity with its trained states, the others as fresh patches: dictionary
seeds and fresh_sweeps sweeps), mapped back and averaged.
usage: geo_lab.py FIT.pt [key=value ...]"""
import sys, os, json, time, numpy as np, torch
sys.path.insert(0, os.environ.get("EVO_SRC", os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "src")))
from evodenoise.train import Fit
from evodenoise.stream import estimate_image
torch.set_num_threads(int(os.environ.get("THREADS", 1)))
d = torch.load(sys.argv[1], weights_only=False)
clean, model = d["clean"], d["model"]
cfg = d["cfg"].replace(**{k: type(getattr(d["cfg"], k))(v) for k, v in (a.split("=") for a in sys.argv[2:])})
def psnr(a): return round(float(10 * np.log10(255**2 / ((a - clean) ** 2).mean())), 3)
outs, res = [], []
for k in range(8):
    rot, flip = k % 4, k >= 4
    x = d["x"].clone()
    x = torch.rot90(x.flip(-1) if flip else x, rot, (-2, -1)).contiguous()
    gen = torch.Generator().manual_seed(0); gen.set_state(d["gen"])
    pool = d["pool"] if k == 0 else d["pool"][:0]
    c0 = time.process_time()
    z = estimate_image(Fit(model, d["states"].clone(), cfg), x, None, pool, cfg, gen)
    z = torch.rot90(z, -rot, (-2, -1)); z = z.flip(-1) if flip else z
    outs.append((z * d["unit"] + d["offset"])[0].numpy())
    res.append((k, psnr(outs[-1]), psnr(np.mean(outs, 0)), round(time.process_time() - c0, 1)))
    print(json.dumps({"fit": sys.argv[1], "copy(k, alone, mean so far, cpu)": res[-1]}), flush=True)
