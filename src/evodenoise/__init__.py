"""evodenoise: zero-shot image denoising and inpainting with an evolutionary binary-latent VAE.

``from evodenoise import denoise, inpaint`` works as usual; torch is imported only when the
engine is first used, so ``evodenoise --help`` stays fast.
"""

from .config import Config
from .presets import PRESETS, get_preset

__version__ = "0.3.0"
__all__ = ["Config", "PRESETS", "Result", "denoise", "get_preset", "inpaint", "__version__"]


def __getattr__(name: str):
    if name in ("Result", "denoise", "inpaint"):
        from . import restore

        return getattr(restore, name)
    raise AttributeError(f"module 'evodenoise' has no attribute {name!r}")
