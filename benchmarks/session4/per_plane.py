"""Luminance / chroma sub-problems of opponent colour denoising, separately.
usage: split.py IMAGE SIGMA part=lum|chroma [preset=fast] [key=value ...]"""
import sys, time, json, ast, numpy as np, torch
from skimage import data
import os; sys.path.insert(0, os.environ.get("EVO_SRC", os.path.join(os.path.dirname(__file__), "..", "..", "src")))
import evodenoise as ed
from evodenoise.restore import OPPONENT, _restore_planes
def opponent_planes(name, sigma, crop):
    """Centre crop (crop x crop) of IMAGE (a .png path or a scikit-image name) on [0, 1], noise
    σ/255 from default_rng(0) (float, unclipped), and its clean and noisy opponent planes
    (3, crop, crop) on the 0-255 scale; a gray image is its own luminance."""
    from PIL import Image
    img = (np.asarray(Image.open(name)) if name.endswith(".png") else getattr(data, name)()).astype(np.float32) / 255
    if img.ndim == 2: img = np.repeat(img[..., None], 3, 2) / np.sqrt(3)  # gray: its luminance channel is the image
    h, w = img.shape[:2]; c = crop
    img = img[(h-c)//2:(h-c)//2+c, (w-c)//2:(w-c)//2+c]
    noisy = img + np.random.default_rng(0).normal(0, sigma/255, img.shape).astype(np.float32)
    M = OPPONENT.numpy()
    clean_o = np.einsum("kc,hwc->khw", M, img) * 255
    noisy_o = torch.from_numpy(np.einsum("kc,hwc->khw", M, noisy) * 255).float()
    return img, noisy, clean_o, noisy_o


if __name__ == "__main__":
    name = sys.argv[1]; sigma = float(sys.argv[2]); sets = dict(a.split("=",1) for a in sys.argv[3:])
    torch.set_num_threads(int(sets.pop("threads", 1)))
    part = sets.pop("part", "lum"); crop = int(sets.pop("crop", 256))
    img, noisy, clean_o, noisy_o = opponent_planes(name, sigma, crop)
    cfg = ed.get_preset(sets.pop("preset", "fast"))
    kw = {k: (ast.literal_eval(v) if v[:1] in "0123456789-([.TF" else v) for k, v in sets.items()}
    cfg = cfg.replace(**kw)
    sl = {"lum": slice(0, 1), "chroma": slice(1, 3), "joint": slice(0, 3)}[part]
    if part in ("chroma", "joint") and "train_patches" not in kw:
        cfg = cfg.replace(train_patches=max(1, round(cfg.train_patches * cfg.chroma_pool)))
    gen = torch.Generator().manual_seed(0)
    t = time.time(); tp = time.process_time()
    out, rec, _ = _restore_planes(noisy_o[sl], None, sigma/255, cfg, gen, None, None, (0.0, 1.0), False, None)
    mse = ((out.numpy() - clean_o[sl])**2).mean((1, 2))
    print(json.dumps(dict(img=name, sigma=sigma, part=part, sets=" ".join(sys.argv[3:]), mse=[round(float(v),2) for v in mse], wall=round(time.time()-t,1), cpu=round(time.process_time()-tp,1), epochs=rec["config"].epochs)), flush=True)
