import sys, json, numpy as np, time
from skimage import data
from skimage.restoration import denoise_nl_means
sys.path.insert(0, __import__("os").path.join(__import__("os").path.dirname(__file__), "..", "..", "src"))
from evodenoise.restore import OPPONENT
import bm3d
M = OPPONENT.numpy()
for name in sys.argv[1].split(","):
  for sigma in [float(s) for s in sys.argv[2].split(",")]:
    img = getattr(data, name)().astype(np.float32) / 255
    h, w = img.shape[:2]; c = 256
    img = img[(h-c)//2:(h-c)//2+c, (w-c)//2:(w-c)//2+c]
    rng = np.random.default_rng(0)
    noisy = img + rng.normal(0, sigma/255, img.shape).astype(np.float32)
    o = np.clip(bm3d.bm3d_rgb(noisy, sigma/255), 0, 1)
    e = np.einsum("kc,hwc->khw", M, o - img) * 255
    per = (e**2).mean((1, 2))
    # BM3D on the luminance channel alone (gray BM3D at the same sigma)
    yn = np.einsum("kc,hwc->khw", M, noisy)[0]
    yl = bm3d.bm3d(yn, sigma/255)
    lum_gray = float(((yl - np.einsum("kc,hwc->khw", M, img)[0])**2).mean() * 255**2)
    mse = ((o - img)**2).mean() * 255**2
    print(json.dumps(dict(img=name, sigma=sigma, cbm3d_psnr=round(float(10*np.log10(255**2/mse)),3), cbm3d_mse=[round(float(v),2) for v in per], bm3d_on_lum=round(lum_gray,2))), flush=True)
