import numpy as np
from skimage import data
from skimage.transform import resize
def make(name, clean, seed=0):
    clean = clean.astype(np.float32)
    rng = np.random.default_rng(seed)
    noisy = (clean + 25 * rng.standard_normal(clean.shape)).astype(np.float32)
    np.save(f"img/{name}_clean.npy", clean); np.save(f"img/{name}_noisy.npy", noisy)
    print(name, clean.shape, clean.min(), clean.max())
cam = data.camera().astype(np.float64)
ast = data.astronaut().astype(np.float64)
make("cam512", cam)
make("cam1k", resize(cam, (1024, 1024), order=3, preserve_range=True, anti_aliasing=False))
make("cam4k", resize(cam, (2048, 2048), order=3, preserve_range=True, anti_aliasing=False))
make("ast1k", resize(ast, (1024, 1024, 3), order=3, preserve_range=True, anti_aliasing=False))
make("ast4k", resize(ast, (2048, 2048, 3), order=3, preserve_range=True, anti_aliasing=False))
make("ast12", resize(ast, (3000, 4000, 3), order=3, preserve_range=True, anti_aliasing=False))
