"""Ensemble ablation on one plane: do averaged estimates of independently trained models help?
Built on benchmarks/session4/per_plane.py (its opponent_planes).
usage: ensemble.py IMAGE SIGMA [part=lum] [crop=256] [threads=1] [out=/tmp/ens]
Models on the same noisy plane (each with torch.Generator().manual_seed(seed)):
  A fast, patch p (the automatic size fast would choose), seed 0
  B fast, patch p, seed 1
  C fast, patch p2 (next larger of 4, 6, 8; 6 if p is 8), seed 0
  D quality, patch p, seed 0
Prints one JSON line per model (MSE, CPU seconds) and one with the MSE/PSNR of single models and
of the averages (A+B)/2, (A+C)/2, (A+B+C)/3, (A+D)/2. Each estimate is saved as OUT/TAG_X.npy
(with its record in TAG_X.json); a model whose .npy exists is skipped, so a rerun resumes."""
import sys, time, json, ast, numpy as np, torch
from skimage import data
import os; sys.path.insert(0, os.environ.get("EVO_SRC", os.path.join(os.path.dirname(__file__), "..", "..", "src")))
import evodenoise as ed
from evodenoise.restore import OPPONENT, _restore_planes, choose_patch_size
name = sys.argv[1]; sigma = float(sys.argv[2]); sets = dict(a.split("=",1) for a in sys.argv[3:])
torch.set_num_threads(int(sets.pop("threads", 1)))
part = sets.pop("part", "lum"); crop = int(sets.pop("crop", 256)); outdir = sets.pop("out", "/tmp/ens")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "session4"))
from per_plane import opponent_planes
img, noisy, clean_o, noisy_o = opponent_planes(name, sigma, crop)
sl = {"lum": slice(0, 1), "chroma": slice(1, 3), "joint": slice(0, 3)}[part]
kw = {k: (ast.literal_eval(v) if v[:1] in "0123456789-([.TF" else v) for k, v in sets.items()}

# 1. the automatic patch size fast would choose (from the luminance, 0-255 units)
p = choose_patch_size(noisy_o[0], None, sigma, 256)
sizes = (4, 6, 8)
p2 = 6 if p == 8 else sizes[sizes.index(p) + 1]
models = {"A": ("fast", p, 0), "B": ("fast", p, 1), "C": ("fast", p2, 0), "D": ("quality", p, 0)}
base = os.path.splitext(os.path.basename(name))[0]
tag = f"{base}_s{sigma:g}_{part}"
os.makedirs(outdir, exist_ok=True)
print(json.dumps(dict(img=name, sigma=sigma, part=part, auto_patch=p, p2=p2, tag=tag)), flush=True)

def mse_of(est):
    return float(((est - clean_o[sl])**2).mean())

def psnr(m):
    return 10 * np.log10(255**2 / m)

est, info = {}, {}
for key, (preset, ps, seed) in models.items():
    f_npy, f_js = os.path.join(outdir, f"{tag}_{key}.npy"), os.path.join(outdir, f"{tag}_{key}.json")
    if os.path.exists(f_npy):
        est[key] = np.load(f_npy)
        info[key] = json.load(open(f_js)) if os.path.exists(f_js) else dict(model=key)
        info[key]["resumed"] = True
    else:
        cfg = ed.get_preset(preset).replace(patch_size=ps, **kw)
        if part in ("chroma", "joint") and "train_patches" not in kw:
            cfg = cfg.replace(train_patches=max(1, round(cfg.train_patches * cfg.chroma_pool)))
        gen = torch.Generator().manual_seed(seed)
        t = time.time(); tp = time.process_time()
        out, rec, _ = _restore_planes(noisy_o[sl], None, sigma/255, cfg, gen, None, None, (0.0, 1.0), False, None)
        cpu, wall = time.process_time() - tp, time.time() - t
        est[key] = out.numpy()
        info[key] = dict(model=key, preset=preset, patch=ps, seed=seed, mse=round(mse_of(est[key]), 3),
                         cpu=round(cpu, 1), wall=round(wall, 1), epochs=rec["config"].epochs)
        np.save(f_npy + ".tmp.npy", est[key]); os.replace(f_npy + ".tmp.npy", f_npy)
        json.dump(info[key], open(f_js, "w"))
    info[key]["mse"] = round(mse_of(est[key]), 3)
    print(json.dumps(dict(tag=tag, **info[key])), flush=True)

combos = {"A": "A", "B": "B", "C": "C", "D": "D", "(A+B)/2": "AB", "(A+C)/2": "AC",
          "(A+B+C)/3": "ABC", "(A+D)/2": "AD"}
res = {}
for label, keys in combos.items():
    m = mse_of(sum(est[k] for k in keys) / len(keys))
    res[label] = dict(mse=round(m, 3), psnr=round(float(psnr(m)), 3))
print(json.dumps(dict(tag=tag, auto_patch=p, p2=p2, cpu={k: info[k].get("cpu") for k in models}, result=res)), flush=True)
