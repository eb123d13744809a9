"""Train one plane's model (as the library does) and save the fit for estimate experiments.
usage: lab.py IMAGE SIGMA [crop=256] [key=value ...]  -> fits/IMAGE_SIGMA_p{P}[_tag].pt
IMAGE: a scikit-image name or .png path; a colour image gives its luminance plane (opponent)."""
import sys, os, time, json, ast, numpy as np, torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "session4"))
sys.path.insert(0, os.environ.get("EVO_SRC", os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", "src")))
from per_plane import opponent_planes
import evodenoise as ed
from evodenoise import restore
torch.set_num_threads(int(os.environ.get("THREADS", 1)))
name, sigma = sys.argv[1], float(sys.argv[2])
sets = dict(a.split("=", 1) for a in sys.argv[3:])
crop = int(sets.pop("crop", 256)); tag = sets.pop("tag", "")
cfg = ed.get_preset(sets.pop("preset", "fast"))
cfg = cfg.replace(**{k: (ast.literal_eval(v) if v[:1] in "0123456789-([.TF" else v) for k, v in sets.items()})
img, noisy, clean_o, noisy_o = opponent_planes(name, sigma, crop)
x = noisy_o[:1]
if cfg.patch_size == 0:
    cfg = cfg.replace(patch_size=restore.choose_patch_size(x[0], None, sigma, 256))
saved = {}
real = restore.estimate_image
def capture(fitted, xs, observed, pool, c, gen, cb=None):
    saved.update(model=fitted.model, states=fitted.states.clone(), x=xs.clone(), pool=pool, cfg=c,
                 gen=gen.get_state())
    return real(fitted, xs, observed, pool, c, gen, cb)
restore.estimate_image = capture
gen = torch.Generator().manual_seed(0)
t = time.process_time()
out, rec, _ = restore._restore_planes(x, None, sigma / 255, cfg, gen, None, None, (0.0, 1.0), False, None)
mse = float(((out[0].numpy() - clean_o[0]) ** 2).mean())
xs = saved["x"]; unit = float(x.std()); offset = float(x.mean())
os.makedirs("fits", exist_ok=True)
path = f"fits/{os.path.basename(name).removesuffix('.png')}_{int(sigma)}_p{cfg.patch_size}{tag}.pt"
torch.save({**saved, "clean": clean_o[0], "noisy": x[0].numpy(), "unit": unit, "offset": offset,
            "sigma": sigma, "out": out[0].numpy()}, path)
print(json.dumps(dict(path=path, mse=round(mse, 2), psnr=round(10 * np.log10(255**2 / mse), 3), cpu=round(time.process_time() - t, 1))), flush=True)
