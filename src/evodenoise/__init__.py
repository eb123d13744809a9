"""evodenoise: zero-shot image denoising and inpainting with an evolutionary binary-latent VAE."""

from .config import PRESETS, Config, get_preset
from .restore import Result, denoise, inpaint

__version__ = "0.1.0"
__all__ = ["Config", "PRESETS", "Result", "denoise", "get_preset", "inpaint", "__version__"]
