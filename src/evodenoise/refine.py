"""Second stage: a collaborative Wiener filter of the input, with the model's estimate as pilot.

The model's estimate (the *pilot*) is good at telling image structure from noise but leaves
residual errors of its own, most of them at scales above its small patches. The second stage
goes back to the noisy input and filters it once more, using the pilot only to decide *how*:

0. **A second opinion** (``mix`` > 0). The input is first filtered on its own: groups of its
   blocks matched on the noisy first plane itself (references on a grid one pixel coarser
   than step 1's), every coefficient of their 3-D transform (a biorthogonal 1.5 wavelet of
   each block, rows scaled to unit norm, and step 2's transform along the group) kept or
   zeroed by a hard threshold at ``THRESHOLD`` σ, blocks aggregated as in step 3 with the
   weight ``1 / (σ² · coefficients kept)``. Its errors differ from the model's, so the pilot becomes ``(1 − mix)
   · model + mix · that``: a better pilot than either alone. Step 4's halved scales take
   ``coarse_mix`` instead: at the scales above the model's patches step 0, which averages
   groups of 8 x 8 blocks, is the better estimate. With ``joint``, steps 1–3 run once with
   each pilot, the (mixed) model's estimate and step 0's, and step 3 aggregates both runs'
   blocks into one result, each group weighted by its own remaining noise: two Wiener
   estimates whose errors differ, averaged where each is surer.
1. **Grouping.** For reference blocks of ``BLOCK`` x ``BLOCK`` pixels on a grid of ``step``,
   the ``GROUP`` blocks (``GROUP_NOISY`` at σ ≥ ``NOISY``) of the pilot's first plane (gray,
   or luminance) closest in squared distance within ``search`` pixels either way (the
   reference itself included) form a group.
2. **Shrinkage.** Each group of noisy blocks and the same group of pilot blocks go through
   one orthonormal 3-D transform (a 2-D DCT of each block, a Haar wavelet along the group; a
   DCT where the group is not a power of two long). Every noisy
   coefficient is multiplied by the empirical Wiener gain ``P² / (P² + σ²)``, P the pilot's
   coefficient and σ the noise of that plane (white noise stays white of σ under the
   transform), and transformed back.
3. **Aggregation.** Every pixel is the average of all its filtered blocks, each weighted by
   ``1 / (σ² Σ gain²)`` (the inverse of the group's remaining noise) times a Kaiser window.
4. **A coarser scale** (``scales`` 2). Small blocks see little of the noise at scales above
   them, so steps 1–3 run once more on the input and the pilot halved in size (the lowest
   half of their DCT spectrum along each side: white noise of σ becomes white noise of σ/2),
   and that result's lowest frequencies, whole up to an eighth of the full band and tapering
   off to nothing at a quarter, replace the fine result's (as multi-scale DCT denoising
   recomposes its scales).

Steps 1–3 are the second step of BM3D (Dabov et al., 2007) with the model's estimate (or its
mean with step 0, which is BM3D's first step, in its transforms) in place of BM3D's own first
estimate; docs/method.md says what they and step 4 gain
(benchmarks/RESULTS.md). It needs every value observed, so it is for denoising, not
inpainting. The noise must be white of a known σ per plane: the opponent colour basis and the
Anscombe transform give that.

Examples
--------
>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> clean = torch.linspace(0, 255, 32).repeat(32, 1)[None]      # (1, 32, 32): a ramp
>>> noisy = clean + 20 * torch.randn(clean.shape, generator=g)
>>> pilot = clean + 5 * torch.randn(clean.shape, generator=g)   # a fair first estimate
>>> out = refine_estimate(noisy, pilot, [20.0])
>>> bool(((out - clean) ** 2).mean() < ((pilot - clean) ** 2).mean())
True
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence

import numpy as np
import pywt
import torch
import torch.nn.functional as F
from scipy import fft

BLOCK = 8  # block side in pixels (a power of two: see _box_sums)
GROUP = 16  # blocks per group (fewer when the image is too small to hold them) ...
GROUP_NOISY = 32  # ... and where the first plane's σ is at least NOISY: more blocks average
NOISY = 40.0  #   out more noise (BM3D also changes its settings above σ = 40)
STEP = 3  # grid step of the reference blocks (the last row and column are always included);
#   step 0 takes one more (4 against 3: 0.61x its time, -0.004 dB mean on the suites). A
#   denser grid averages more estimates per pixel: 1 gains +0.01 to +0.08 dB on every suite and
#   held-out image-level for 4x the stage's time (the quality preset's)
SEARCH = 19  # blocks are searched within this many pixels of the reference, either way
#   (BM3D's ±19; against ±12 -0.01 to +0.12 dB on the suites, camera photos +0.04 mean;
#   after the Anscombe transform the plan asks for less: plan.py)
THRESHOLD = 2.7  # step 0 keeps the coefficients above this many σ (BM3D's first step's λ)
WAVELET0 = "bior1.5"  # step 0's transform of a block (BM3D's first step's): its hard threshold
#   keeps edges in fewer coefficients than a DCT's (with Haar along the group, step 0 alone
#   +0.02 to +0.49 dB on the suites)
KAISER = 2.0  # beta of the Kaiser window that weights each block's pixels when aggregating
CHUNK_BYTES = 64 * 2**20  # working memory per chunk of reference rows
MATCH_ROWS = 8  # reference rows matched at once: their blocks share pixel rows (STEP < BLOCK),
#   whose squared differences are then formed once for all of them
TAPER = (0.25, 0.5)  # coarse-scale frequencies (fractions of its band) taken whole up to the
#   first, tapering (cos²) to nothing at the second; the fine result keeps the rest


def refine_estimate(
    x: torch.Tensor,
    pilot: torch.Tensor,
    sigma: Sequence[float] | torch.Tensor,
    scales: int = 2,
    mix: float = 0.0,
    search: int = SEARCH,
    coarse_mix: float | None = None,
    step: int = STEP,
    joint: bool = False,
) -> torch.Tensor:
    """The noisy planes ``x`` (C, H, W) filtered with ``pilot`` (C, H, W) as the Wiener
    pilot and groups matched on the pilot's first plane; ``sigma`` (C,) is each plane's
    white-noise σ. Values on the 0–255 scale (the group size depends on σ). ``scales``: 1,
    the input's own scale only; each more, the lowest frequencies from the same filter on
    the input and pilot halved in size. ``mix``: the weight of the hard-thresholding estimate
    (step 0) in the pilot; 0 leaves it out; ``coarse_mix``: its weight in the halved scales'
    pilot (None: ``mix``). ``joint``: steps 1–3 run with each of two pilots, the (mixed)
    pilot and step 0's estimate, and aggregate both pilots' groups into one result.
    ``search``: blocks are matched within this many pixels of their reference either way (at
    every scale; step 0 within ``SEARCH``), and references lie on a grid of ``step`` pixels
    (step 0's: one more). Returns (C, H, W). Images smaller than a block,
    and a pilot with values that are not finite, come back as the pilot."""
    C, H, W = x.shape
    if H < BLOCK or W < BLOCK or not bool(torch.isfinite(pilot).all()):  # (diverged: as it is)
        return pilot.clone()
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(C)
    coarse_mix = mix if coarse_mix is None else coarse_mix
    low: tuple[torch.Tensor, ...] | None = None  # the halved scales' pilots, where they
    pilots: tuple[torch.Tensor, ...] = (pilot,)  # differ: each (C, H // 2, W // 2)
    if mix > 0 or coarse_mix > 0 or joint:
        step0 = _filter(x, None, s, SEARCH, step)  # (one image more in memory)
        if coarse_mix != mix:
            low = (_halve(pilot).lerp_(_halve(step0), coarse_mix),)  # (_halve is linear)
        if mix > 0:  # (in place where step 0 is not a pilot of its own)
            pilot = step0.lerp(pilot, 1 - mix) if joint else step0.lerp_(pilot, 1 - mix)
        pilots = (pilot, step0) if joint else (pilot,)
        low = low + (_halve(step0),) if joint and low is not None else low
    return _refine(x, pilots, s, scales, search, low, step)


def _refine(
    x: torch.Tensor,
    pilots: tuple[torch.Tensor, ...],
    s: torch.Tensor,
    scales: int,
    search: int = SEARCH,
    low: tuple[torch.Tensor, ...] | None = None,
    step: int = STEP,
) -> torch.Tensor:
    """Steps 1–4: (C, H, W) filtered at ``scales`` scales with each of ``pilots`` (C, H, W),
    s (C,); ``low``: the halved scales' pilots (C, H // 2, W // 2), None: the pilots halved."""
    C, H, W = x.shape
    out = _filter(x, pilots, s, search, step)
    if scales < 2 or min(H, W) < 2 * BLOCK:
        return out
    p1 = tuple(map(_halve, pilots)) if low is None else low
    x1, f = _halve(x), math.sqrt((H // 2) * (W // 2) / (H * W))
    return _take_low(out, _refine(x1, p1, s * f, scales - 1, search, None, step), f)


def _filter(
    x: torch.Tensor,
    pilots: tuple[torch.Tensor, ...] | None,
    sigma: torch.Tensor,
    search: int = SEARCH,
    step: int = STEP,
) -> torch.Tensor:
    """Steps 1–3 at the planes' own scale: (C, H, W) filtered, sigma (C,), groups from
    within ±``search`` pixels of references every ``step`` pixels, once per pilot, all
    aggregated into one result; with no ``pilots``, step 0: groups matched on x, references
    every ``step + 1``, hard thresholds for Wiener gains."""
    C, H, W = x.shape
    b = BLOCK
    dev = x.device
    s2 = sigma.square().clamp_min(1e-6)
    step = step + 1 if pilots is None else step
    ri, rj = _grid(H - b + 1, step, dev), _grid(W - b + 1, step, dev)
    group = GROUP if float(s2[0]) < NOISY**2 else GROUP_NOISY
    k = min(group, min(H - b + 1, search + 1) * min(W - b + 1, search + 1))
    num = torch.zeros(C, H * W, dtype=x.dtype, device=dev)
    den = torch.zeros_like(num)
    per_chunk = max(1, CHUNK_BYTES // _ref_bytes(C, k))  # references; whole rows where a
    rows_per_chunk = per_chunk // len(rj)  # row fits, else part of one
    per_chunk = rows_per_chunk * len(rj) if rows_per_chunk else per_chunk
    match_rows = max(MATCH_ROWS, rows_per_chunk)
    for pilot in pilots or (None,):
        _accumulate(x, pilot, s2, search, ri, rj, k, per_chunk, match_rows, num, den)
    return (num / den).reshape(C, H, W)


def _accumulate(x, pilot, s2, search, ri, rj, k, per_chunk, match_rows, num, den) -> None:
    """Steps 1–3 with one ``pilot`` (None: step 0), every group's filtered blocks and their
    weights added to ``num`` and ``den`` (C, H·W)."""
    C, H, W = x.shape
    b, dev = BLOCK, x.device
    block = _transform(b, WAVELET0 if pilot is None else None, dev)  # (b, b) each
    t2, i2 = (torch.kron(m, m) for m in block)  # (b², b²): a flattened block's 2-D transform
    tk, ik = _transform(k, "haar", dev)  # (k, k): along a group; forward, inverse
    window = torch.kaiser_window(b, periodic=False, beta=KAISER, device=dev, dtype=x.dtype)
    window = torch.outer(window, window).flatten()  # (b²,)
    guide = x if pilot is None else pilot  # whose first plane the groups are matched on
    far = float(guide[0].abs().max()) * 4 + 1e4  # beyond the border: too far to be matched
    padded = F.pad(guide[:1][None], (search,) * 4, value=far)[0, 0]  # (H + 2s, W + 2s)
    for m0 in range(0, len(ri), match_rows):
        matched = _match(padded, ri[m0 : m0 + match_rows], rj, k, search)  # (rows·len(rj), k)
        for top in matched.split(per_chunk):  # (R, k) pixel index
            pix = (top[:, :, None] + _block_offsets(b, W, dev)).flatten()  # (R·k·b²,)
            gy = _gather(x, pix, k)  # (C, R, k, b²)
            coef_y = tk @ (gy @ t2.T)  # 3-D transform: each block, then along the group
            if pilot is None:  # step 0: coefficients above THRESHOLD·σ kept, the others zeroed
                gain = (coef_y.square() > THRESHOLD**2 * s2[:, None, None, None]).to(x.dtype)
            else:
                coef_p = tk @ (_gather(pilot, pix, k) @ t2.T)
                gain = coef_p.square() / (coef_p.square() + s2[:, None, None, None])
            est = ik @ ((gain * coef_y) @ i2.T)  # and back, (C, R, k, b²)
            kept = gain.square().sum((2, 3))  # (C, R): for step 0 the coefficients kept, ...
            kept = kept.clamp_min(1) if pilot is None else kept  # ... at least one (BM3D's)
            weight = 1 / (s2[:, None] * kept).clamp_min(1e-12)  # (C, R)
            weight = (weight[:, :, None, None] * window).expand_as(est)  # (C, R, k, b²)
            num.index_add_(1, pix, (weight * est).reshape(C, -1))
            den.index_add_(1, pix, weight.reshape(C, -1))


def _halve(a: torch.Tensor) -> torch.Tensor:
    """Planes (C, H, W) at half size (C, H // 2, W // 2): the lowest frequencies of their
    orthonormal DCT, scaled so that values keep their level (white noise of σ becomes white
    noise of σ·f, f = sqrt(h·w / (H·W)), about σ/2)."""
    C, H, W = a.shape
    h, w = H // 2, W // 2
    low = fft.dctn(a.cpu().numpy(), axes=(1, 2), norm="ortho")[:, :h, :w]
    out = fft.idctn(low, axes=(1, 2), norm="ortho") * math.sqrt(h * w / (H * W))
    return torch.from_numpy(np.ascontiguousarray(out)).to(a)


def _take_low(fine: torch.Tensor, coarse: torch.Tensor, f: float) -> torch.Tensor:
    """``fine`` (C, H, W) with the lowest frequencies of its DCT taken from ``coarse`` (C, h,
    w), a result at half size whose values were scaled by f (:func:`_halve`), per TAPER."""
    C, h, w = coarse.shape
    spec = fft.dctn(fine.cpu().numpy(), axes=(1, 2), norm="ortho")
    low = fft.dctn(coarse.cpu().numpy(), axes=(1, 2), norm="ortho") / f
    a, b = TAPER

    def keep(n: int) -> np.ndarray:  # (n,) weight of the coarse result per frequency
        t = np.clip((np.arange(n) / n - a) / (b - a), 0, 1)
        return np.cos(t * math.pi / 2) ** 2

    weight = (keep(h)[:, None] * keep(w)[None]).astype(spec.dtype)  # (h, w)
    spec[:, :h, :w] += weight * (low - spec[:, :h, :w])
    out = fft.idctn(spec, axes=(1, 2), norm="ortho")
    return torch.from_numpy(np.ascontiguousarray(out)).to(fine)


def working_bytes(channels: int, width: int, search: int = SEARCH, step: int = STEP) -> int:
    """Peak bytes of :func:`refine_estimate`'s working set on planes ``width`` pixels wide,
    searched ±``search`` from references every ``step`` pixels (step 0: ±``SEARCH``),
    besides its two image-sized sums: a chunk of references (at least one), or the matching
    of ``MATCH_ROWS`` rows, whichever is larger (they do not overlap)."""
    return max(
        CHUNK_BYTES,
        _ref_bytes(channels, GROUP_NOISY),
        _match_bytes(width, step, search),
        _match_bytes(width, step + 1, SEARCH),
    )


def _ref_bytes(channels: int, k: int) -> int:
    """Bytes of one reference block's group in flight: the peak measured, about eighteen
    (C, k, b²) float32 arrays (gathers, transforms, gains, weights, products)."""
    return 18 * channels * k * BLOCK * BLOCK * 4


def _match_bytes(width: int, step: int, search: int = SEARCH) -> int:
    """Bytes of :func:`_match` on ``MATCH_ROWS`` reference rows ``step`` apart, searched
    ±``search``: about four arrays of squared differences of the 2·search + 1 column shifts
    over their pixel rows, and the distances of every shift, twice (the list and its
    concatenation)."""
    shifts, lines = 2 * search + 1, (MATCH_ROWS - 1) * step + BLOCK
    matched = 2 * shifts**2 * MATCH_ROWS * _refs(width, step)
    return 4 * (4 * shifts * lines * (width + 2 * search) + matched)


def _refs(width: int, step: int) -> int:
    """Reference blocks along a row ``width`` pixels wide, at most (the grid of :func:`_grid`
    and its last position)."""
    return (max(1, width - BLOCK + 1) + step - 1) // step + 1


def _grid(n: int, step: int, dev: torch.device) -> torch.Tensor:
    """Reference positions 0, step, 2·step, … along a side of n positions, and the last."""
    g = torch.arange(0, n, step, device=dev)
    return g if int(g[-1]) == n - 1 else torch.cat([g, torch.tensor([n - 1], device=dev)])


def _match(
    padded: torch.Tensor, ri: torch.Tensor, rj: torch.Tensor, k: int, search: int = SEARCH
) -> torch.Tensor:
    """For the reference blocks at rows ``ri`` × columns ``rj`` of a plane, given ``padded``
    by ``search`` on every side with a value too far to match: the top-left pixel index
    (R, k) in the plane of the k blocks nearest to each within ±search, nearest first. Distances come
    from box sums of squared differences, one shift at a time along rows and all shifts along
    columns at once."""
    b, s = BLOCK, search
    W = padded.shape[1] - 2 * s
    r0, r1 = int(ri[0]), int(ri[-1]) + b  # plane rows the references cover
    span = padded[s + r0 : s + r1, s : s + W]  # (h, W)
    dist = []
    for dy in range(-s, s + 1):
        rows = padded[s + r0 + dy : s + r1 + dy]  # (h, W + 2s)
        shifted = rows.unfold(1, W, 1).permute(1, 0, 2)  # (2s+1, h, W): all column shifts
        box = _box_sums(_box_sums((span - shifted).square(), rj, 2), ri - r0, 1)
        dist.append(box.flatten(1))  # (2s+1, R): squared distances of b x b blocks
    every = torch.cat(dist)  # ((2s+1)², R)
    every[s * (2 * s + 1) + s] = -1  # each reference first in its group, ties or not: then
    #   every pixel is in a group (flat planes tie everywhere)
    nearest = every.topk(k, 0, largest=False).indices  # (k, R) over (2s+1)² shifts
    shift_y, shift_x = nearest // (2 * s + 1) - s, nearest % (2 * s + 1) - s
    top = ri[:, None].expand(-1, len(rj)).flatten() + shift_y  # (k, R)
    left = rj[None, :].expand(len(ri), -1).flatten() + shift_x
    return (top * W + left).T


def _box_sums(t: torch.Tensor, starts: torch.Tensor, dim: int) -> torch.Tensor:
    """Sums of BLOCK consecutive entries of t along ``dim`` from each of ``starts``: sums of
    pairs, then of pairs of pairs, and so on (log2 BLOCK additions per entry; a running sum
    would have to be kept in float64 to stay exact), then the sums asked for."""
    width = 1
    while width < BLOCK:  # t[j] becomes the sum of 2·width entries from j
        n = t.shape[dim] - width
        t = t.narrow(dim, 0, n) + t.narrow(dim, width, n)
        width *= 2
    return t.index_select(dim, starts)


def _block_offsets(b: int, width: int, dev: torch.device) -> torch.Tensor:
    """Pixel index offsets (b²,) of a block's pixels from its top-left pixel, row by row."""
    i = torch.arange(b, device=dev)
    return (i[:, None] * width + i[None]).flatten()


def _gather(x: torch.Tensor, pix: torch.Tensor, k: int) -> torch.Tensor:
    """The blocks at ``pix`` (R·k·b² pixel indices) of every plane of x, as (C, R, k, b²)."""
    return x.flatten(1)[:, pix].reshape(x.shape[0], -1, k, BLOCK * BLOCK)


def _transform(n: int, wavelet: str | None, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A 1-D transform of n points as matrices (n, n), forward (row k: the k-th basis
    function) and inverse: the orthonormal DCT-II for ``wavelet`` None, else that wavelet's
    full decomposition (periodic), its rows scaled to unit norm so that white noise of σ has
    σ in every coefficient (as BM3D does; "haar" is then orthonormal). Wavelets need n a
    power of two; other n get the DCT."""
    if wavelet is None or n & (n - 1):
        m = _dct(n, dev)
        return m, m.T
    forward, inverse = _wavelet_matrices(n, wavelet)
    return (torch.as_tensor(forward, dtype=torch.float32, device=dev),
            torch.as_tensor(inverse, dtype=torch.float32, device=dev))  # fmt: skip


@functools.lru_cache
def _wavelet_matrices(n: int, wavelet: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_transform`'s matrices of a wavelet, from PyWavelets' decomposition of the n
    unit vectors at every level down to one coefficient."""
    levels = int(math.log2(n))
    with warnings.catch_warnings():  # levels beyond pywt's "useful" ones: intended (BM3D's)
        warnings.simplefilter("ignore")
        cols = [pywt.wavedec(e, wavelet, mode="periodization", level=levels) for e in np.eye(n)]
    m = np.stack([np.concatenate(c) for c in cols], axis=1)  # (n, n): column j, unit vector j
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return m, np.linalg.inv(m)


def _dct(n: int, dev: torch.device) -> torch.Tensor:
    """The orthonormal DCT-II matrix (n, n): row k is the k-th cosine."""
    k, i = torch.arange(n, device=dev)[:, None], torch.arange(n, device=dev)[None]
    m = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    m[0] /= math.sqrt(2)
    return m
