import sys, os, time, json, numpy as np, torch
sys.path.insert(0, os.environ.get("EVO_SRC", os.path.join(os.path.dirname(__file__), "..", "..", "src")))
from skimage import data
from skimage.restoration import denoise_nl_means
from PIL import Image
import evodenoise as ed
torch.set_num_threads(1)
name, sigma = sys.argv[1], float(sys.argv[2]); preset = sys.argv[3] if len(sys.argv) > 3 else "fast"
img = (np.asarray(Image.open(name)) if name.endswith(".png") else getattr(data, name)()).astype(np.float32) / 255
h, w = img.shape[:2]; c = 256
img = img[(h-c)//2:(h-c)//2+c, (w-c)//2:(w-c)//2+c]
noisy = img + np.random.default_rng(0).normal(0, sigma/255, img.shape).astype(np.float32)
ps = lambda o: round(float(10*np.log10(1/((np.clip(o,0,1)-img)**2).mean())), 3)
ca = -1 if img.ndim == 3 else None
nlm = denoise_nl_means(noisy, h=0.8*sigma/255, sigma=sigma/255, patch_size=7, patch_distance=11, fast_mode=True, channel_axis=ca)
t = time.time(); tp = time.process_time()
out, res = ed.denoise(noisy, sigma/255, config=preset, seed=0)
print(json.dumps(dict(img=os.path.basename(name), sigma=sigma, preset=preset, evo=ps(out), nlm=ps(nlm), patch=res.config.patch_size, wall=round(time.time()-t,1), cpu=round(time.process_time()-tp,1))), flush=True)
