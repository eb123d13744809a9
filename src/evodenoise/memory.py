"""Memory: what a run needs, what the machine has, and the refusal before the work.

The run's size is estimated from the config and the image shape (bytes of the arrays the
library keeps plus the largest working set of one E-step chunk); a run that would not fit the
budget is refused with :class:`MemoryBudgetError` before any work, naming what would fit.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

from . import refine
from .config import Config
from .states import n_words

RUNTIME_BYTES = 400 * 2**20  # the torch runtime itself (CPU resident set), counted on the CPU
FLOAT = 4


class MemoryBudgetError(ValueError):
    """The run would need more memory than the budget allows: ``need`` and ``budget`` bytes,
    ``fits`` megapixels; the message says the budget is what is free (``limit=False``) or
    the limit given (``limit=True``, see :meth:`as_limit`)."""

    def __init__(self, shape, need: int, budget: int, fits: float, device: str, limit=False):
        self.shape, self.need, self.budget, self.fits = shape, need, budget, fits
        self.device, self.limit = device, limit
        c, h, w = shape
        have, spare = size_text(need, budget)
        where = f"max_memory allows {spare}" if limit else f"{spare} is free on {device}"
        fix = "raise max_memory" if limit else "free memory, or raise max_memory"
        super().__init__(
            f"this {w}x{h} image needs about {have} of memory but {where}; at most about "
            f"{fits:.2g} megapixels fit ({fix})"
        )

    def as_limit(self) -> MemoryBudgetError:
        """The same refusal, the budget being the limit given (max_memory)."""
        return MemoryBudgetError(self.shape, self.need, self.budget, self.fits, self.device, True)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for this run: free GPU memory on CUDA, else the OS's available memory
    (``MemAvailable``); None when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


_KEPT: list[bool] = []


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse (once per process; True if applied).

    An E-step chunk allocates tens of MB of temporaries. By default glibc hands such blocks
    back to the OS when they are freed (mmap'ed blocks, or a trimmed heap top), so every chunk
    faults its pages in again: measured 15-40 % of the streaming estimate's CPU time spent in
    the kernel. Blocks up to 32 MB now come from the heap and a free heap top of up to 1 GB is
    kept: the peak memory is unchanged, the kernel time of the estimate about 0. Results are
    unchanged (allocation policy only). Elsewhere (macOS, Windows, musl) it does nothing.
    """
    if _KEPT:
        return _KEPT[0]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameters
            ok = bool(libc.mallopt(m_mmap_threshold, 32 * 2**20)) and bool(
                libc.mallopt(m_trim_threshold, 2**30)
            )
        except (OSError, AttributeError):
            ok = False
    _KEPT.append(ok)
    return ok


def _per_patch(cfg: Config, d: int, masked: bool) -> int:
    """Bytes per patch held by a pool or a band: its values (and mask), its packed states."""
    return d * FLOAT * (2 if masked else 1) + cfg.n_states * n_words(cfg.n_latents) * 8


def _working_set(cfg: Config, d: int) -> int:
    """Largest transient of one E-step chunk or batch: its candidates' pre-activations,
    hidden activations and residuals, the unpacked states, the dictionary scores."""
    cand = cfg.n_states + cfg.n_generations * cfg.n_parents * cfg.n_children
    width = sum(cfg.hidden) + d + cfg.n_latents
    rows = max(cfg.chunk_size, cfg.estep_batch, cfg.batch_size)
    return rows * (3 * cand * width + cfg.dictionary_size) * FLOAT


def check_fits(
    cfg: Config,
    shape: tuple[int, int, int],
    masked: bool,
    n_pool: int,
    band_patches: int,
    device: torch.device,
    budget: int | None,
) -> int:
    """The estimated peak bytes of a run on an image of ``shape`` (C, H, W) with a pool of
    ``n_pool`` patches and bands of ``band_patches``; :class:`MemoryBudgetError` if they
    exceed ``budget``."""
    c, h, w = shape
    d = c * cfg.patch_size**2
    copies = 6.0  # input, its copy on the device, sums, weights, output ×2
    if cfg.second_stage == "wiener" and (
        max(cfg.refine_mix, cfg.refine_coarse_mix) > 0 or cfg.refine_joint
    ):
        copies += 1  # the stage's step 0 or mixed pilot, and its halved scales' (two at a
        copies += 0.5 * (cfg.refine_coarse_mix != cfg.refine_mix)  # quarter):
        copies += 1 * (cfg.refine_joint and cfg.refine_mix > 0)  # both a pilot of its own
    image = int(c * h * w * FLOAT * copies)
    runtime = RUNTIME_BYTES if device.type == "cpu" else 0
    per_patch = _per_patch(cfg, d, masked)
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    work = _working_set(cfg, d) * threads  # each thread estimates a chunk (estimate.py)
    if cfg.second_stage == "wiener":  # after the estimate, in place of its working set (its
        #   coarse scale's DCTs, about three image-sized arrays, reuse the sums and weights)
        work = max(work, refine.working_bytes(c, w, cfg.refine_search, cfg.refine_step))
    need = runtime + image + (n_pool + band_patches) * per_patch + work
    if budget is not None and need > budget:
        fixed = need - image
        fits = int(max(0, budget - fixed) // (c * FLOAT * copies))
        raise MemoryBudgetError(shape, need, budget, fits / 1e6, device.type)
    return need


def size_text(*sizes: int) -> tuple[str, ...]:
    """Byte counts for a message, each in its binary unit (bytes, KiB, MiB, GiB, TiB) with
    four significant digits; counts that would print alike are printed in bytes.

    >>> size_text(429496730, 1024)
    ('409.6 MiB', '1 KiB')
    >>> size_text(483183820, 483183821)
    ('483183820 bytes', '483183821 bytes')
    """
    texts = []
    for n in sizes:
        k = min(4, max(0, (max(n, 1).bit_length() - 1) // 10))
        unit = ("bytes", "KiB", "MiB", "GiB", "TiB")[k]
        texts.append(f"{n / 1024**k:.4g} {unit}" if k else f"{n} bytes")
    if len(set(texts)) < len(set(sizes)):
        return tuple(f"{n} bytes" for n in sizes)
    return tuple(texts)


def cap_sizes(cfg: Config, height: int, width: int) -> Config:
    """``cfg`` with batch sizes and the dictionary no larger than an image of ``height`` x
    ``width`` pixels can use (an absurd ``batch_size`` would pad every mini-batch to its
    size): ``batch_size`` and ``estep_batch`` at most its training pool (its patches, at most
    ``train_patches``; one per pixel while the patch size is automatic), ``chunk_size`` at
    most its patches, ``dictionary_size`` at most the pool's distinct states. A size capped
    runs as the pool's size would; sizes within the bounds are kept."""
    p = cfg.patch_size
    n = (height - p + 1) * (width - p + 1) if 0 < p <= min(height, width) else height * width
    pool = max(1, min(cfg.train_patches, n))
    bounds = {"batch_size": pool, "estep_batch": pool, "chunk_size": max(1, n)}
    capped = {key: bound for key, bound in bounds.items() if getattr(cfg, key) > bound}
    states = max(cfg.n_states, pool * cfg.n_states)
    if cfg.dictionary_size > states:
        capped["dictionary_size"] = states
    return cfg.replace(**capped) if capped else cfg
