"""The result checked against its own noise assumption ("method noise").

What a restoration removed, the residual r = input − output, must look like the noise the run
assumed: white, of the assumed σ, with no local mean, no colour bias and no image structure.
Three tests per plane, on blocks of ``BLOCK``² values (observed values only when some are
missing):

- *local mean*: a block's mean residual beyond ``Z`` times what the run's noise and estimation
  error allow (σ/√n for white noise of σ over n values, or the spread of all blocks' means,
  measured robustly, where that is larger) and beyond ``MIN_SHIFT``·σ; the whole plane's mean
  likewise (a colour bias). Blocks are taken on four grids offset by half a block.
  Repaired: flagged blocks are blended back toward the input (noisy but unbiased), feathered
  over half a block, and a bias left over the plane is added back.
- *level*: the residual's spread where the output is flat (the half of the blocks with the least
  output gradient) against σ: below ``LEVEL_LOW``·σ the run assumed far more noise than it found
  (σ too large: it smooths away detail). Reported, not repaired.
- *structure*: the residual's energy in the tenth of the blocks with the most output gradient
  against that in the flat half; above ``STRUCTURE`` the residual holds edges and texture, i.e.
  image content was removed as noise. Reported, not repaired.

Under honest runs these statistics sit near 0, 1 and 1; the thresholds are effect sizes far
from them, so that false alarms are rare. Pure numpy, a few passes over the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BLOCK = 16  # block side (values); 8 on images of fewer than MIN_BLOCKS such blocks
MIN_BLOCKS = 64  # fewer blocks than this: no level or structure test (too few to compare)
Z = 6.0  # robust z-score of a block's (or the plane's) mean residual that flags it
MIN_SHIFT = 0.1  # ... and at least this fraction of σ: a smaller shift is invisible
LEVEL_LOW = 0.5  # residual spread in flat blocks below LEVEL_LOW·σ: σ assumed too large
STRUCTURE = 3.0  # residual energy, most-detailed tenth of the blocks over the flattest half
MIN_SIGMA = 0.5  # σ (the values' units) below which level and structure are not tested


SAY = {  # each failed test in one phrase: before and after the list of planes
    "local": ("local mean on ", ": blended back toward the input"),
    "bias": ("bias of ", ": added back"),
    "level": ("removed only ", " where flat: far less than the assumed noise (σ too large?)"),
    "structure": ("residual ", " stronger on detail than on flat areas: image structure removed"),
}


@dataclass(frozen=True)
class Check:
    """What :func:`check_residual` found. ``passed``: the residual looked like the assumed
    noise; ``repaired``: the output was changed (a fraction ``blended`` of its values blended
    back toward the input, a plane's bias added back); ``findings``: one phrase per failed
    test, naming the planes; ``planes``: per plane its statistics (mean residual in σ, level, structure; None where not tested)."""

    passed: bool
    repaired: bool = False
    findings: tuple[str, ...] = ()
    blended: float = 0.0
    planes: list[dict] = field(default_factory=list)
    tests: tuple[str, ...] = ()  # the failed test of each finding: local, bias, level, structure

    def said(self, sigma_given: bool) -> str:
        """The findings worth a warning line ("" for none): the repairs always; the level and
        structure findings only when σ was given (they test σ: an estimated or learned σ rests
        on the same white-noise assumption as the tests, which real camera noise, correlated
        and brighter where the image is, breaks on nearly every photo)."""
        repairs = ("local", "bias")
        return "; ".join(
            f for t, f in zip(self.tests, self.findings) if sigma_given or t in repairs
        )

    @property
    def message(self) -> str:
        """One line: "passed", or what failed and what was done about it."""
        if self.passed:
            return "passed"
        return "; ".join(self.findings)

    def as_dict(self) -> dict:
        """The check as plain values (the ``--json`` record's ``check``)."""
        return {
            "passed": self.passed,
            "repaired": self.repaired,
            "message": self.message,
            "blended": self.blended,
            "planes": self.planes,
        }


def check_residual(noisy, restored, sigma, observed=None, names=None, white=True):
    """Check ``restored`` against ``noisy`` (both (C, H, W), values of about 0–255 scale) whose
    noise was assumed white with σ ``sigma[c]`` per plane; ``observed`` (C, H, W) bool or None
    restricts the check to observed values; ``names`` names the planes in the findings.
    ``white`` False: the noise is known to be correlated between neighbours (σ estimated from
    it), so the level and structure, which test a white-noise σ, are reported per plane but
    not tested (on real camera photos they fired on every photo, every output above its input).
    Returns (output, :class:`Check`): the output repaired where a local mean or a bias failed
    (``restored`` itself when nothing was repaired).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> clean = np.full((1, 128, 128), 100.0)
    >>> noisy = clean + 10 * rng.standard_normal(clean.shape)
    >>> check_residual(noisy, clean, [10.0])[1].message
    'passed'
    >>> shifted = clean.copy()
    >>> shifted[0, 32:64, 32:64] += 30  # a patch of wrong level
    >>> out, found = check_residual(noisy, shifted, [10.0])
    >>> found.repaired, bool(abs((noisy - out)[0, 32:64, 32:64].mean()) < 1)
    (True, True)
    """
    noisy, restored = np.asarray(noisy), np.asarray(restored)
    c, h, w = noisy.shape
    names = list(names) if names is not None else [str(i) for i in range(c)]
    block = BLOCK if (h // BLOCK) * (w // BLOCK) >= MIN_BLOCKS else BLOCK // 2
    found: dict[str, list[str]] = {"local": [], "bias": [], "level": [], "structure": []}
    planes, out, blended = [], None, 0  # out: a copy, made on the first repair
    for p in range(c):
        s, x = float(sigma[p]), restored[p].astype(np.float64)
        weight = np.ones((h, w)) if observed is None else np.asarray(observed[p], np.float64)
        r = (noisy[p] - x) * weight  # the residual, 0 where a value is missing
        flagged, local = _local_means(r, weight, s, block)
        if flagged.any():  # blended back toward the input, then the rest measured
            x += _feather(flagged, block) * r
            r = (noisy[p] - x) * weight
            blended += int(flagged.sum())
            share = max(100 * flagged.sum() / (h * w), 0.1)
            found["local"].append(f"{share:.1f}% of {names[p]}")
        stats = _plane_stats(r, weight, x, s, block, flagged)
        biased = stats.pop("biased")
        if biased:
            x += stats["bias"] * s
            found["bias"].append(f"{stats['bias']:.2f}σ in {names[p]}")
        if biased or flagged.any():
            out = np.array(restored) if out is None else out
            out[p] = x
        stats = {k: None if v is None else round(float(v), 3) for k, v in stats.items()}
        if white and stats["level"] is not None and stats["level"] < LEVEL_LOW:
            found["level"].append(f"{stats['level']:.2f}σ ({names[p]})")
        if white and stats["structure"] is not None and stats["structure"] > STRUCTURE:
            found["structure"].append(f"{stats['structure']:.1f}x ({names[p]})")
        planes.append({"plane": names[p], "sigma": round(s, 4), "local": round(local, 3), **stats})
    failed = tuple(k for k, v in found.items() if v)
    findings = tuple(f"{SAY[k][0]}{', '.join(found[k])}{SAY[k][1]}" for k in failed)
    share = round(blended / (c * h * w), 4)
    check = Check(not findings, out is not None, findings, share, planes, failed)
    return (restored if out is None else out), check


def plane_names(planes: int, opponent: bool) -> list[str]:
    """Names of a run's planes in the findings: gray, red/green/blue or the opponent basis's."""
    if opponent:
        return ["luminance", "red-blue", "green-magenta"]
    return ["gray"] if planes == 1 else ["red", "green", "blue"][:planes]


def _block_sums(a: np.ndarray, block: int) -> np.ndarray:
    """Sums of (H, W) over blocks of block x block: (ceil(H/block), ceil(W/block)), the last
    row and column of blocks zero-padded."""
    h, w = a.shape
    if h % block or w % block:
        a = np.pad(a, ((0, -h % block), (0, -w % block)))
    hb, wb = a.shape[0] // block, a.shape[1] // block
    return a.reshape(hb, block, wb, block).sum(axis=(1, 3))


def _robust_spread(values: np.ndarray) -> float:
    """1.4826 times the median absolute deviation: σ for Gaussian values, blind to outliers."""
    if values.size == 0:
        return 0.0
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def _local_means(r, weight, sigma: float, block: int) -> tuple[np.ndarray, float]:
    """Values (H, W) inside blocks whose mean residual, from the median block's (a bias of the
    whole plane is tested apart), fails (beyond ``Z`` times the larger of
    σ/√n and the robust spread of the well-filled blocks' means, and beyond ``MIN_SHIFT``·σ),
    blocks taken on four grids offset by half a block (a region of 1.5 blocks holds a whole
    one); and the largest block mean over its limit (above 1: some block fails)."""
    h, w = r.shape
    hard, worst = np.zeros((h, w), dtype=bool), 0.0
    for dy in (0, block // 2):
        for dx in (0, block // 2):
            n = _block_sums(weight[dy:, dx:], block)
            sums = _block_sums(r[dy:, dx:], block)
            mean = np.where(n > 0, sums / np.maximum(n, 1), 0.0)
            full = n >= block * block / 2
            spread = _robust_spread(mean[full])
            noise = sigma / np.sqrt(np.maximum(n, 1))
            limit = np.maximum(Z * np.maximum(noise, spread), MIN_SHIFT * sigma)
            centre = float(np.median(mean[full])) if full.any() else 0.0  # a plane's bias: below
            excess = np.where(full, np.abs(mean - centre) / np.maximum(limit, 1e-12), 0.0)
            worst = max(worst, float(excess.max(initial=0.0)))
            if (excess > 1).any():
                flagged = np.kron(excess > 1, np.ones((block, block), dtype=bool))
                hard[dy:, dx:] |= flagged[: h - dy, : w - dx]
    return hard, worst


def _feather(hard: np.ndarray, block: int) -> np.ndarray:
    """Per-value weights (H, W): 1 on ``hard``, falling to 0 over half a block around."""
    soft = hard.astype(np.float64)
    for axis in (0, 1):
        soft = _moving_mean(soft, block, axis)
    return np.maximum(hard, np.minimum(1.0, 2 * soft))


def _moving_mean(a: np.ndarray, width: int, axis: int) -> np.ndarray:
    """Centred moving mean of ``width`` values along ``axis`` (zeros beyond the edges)."""
    pad = [(0, 0), (0, 0)]
    pad[axis] = (width // 2 + 1, width - width // 2)
    c = np.cumsum(np.pad(a, pad), axis=axis)
    hi = np.take(c, np.arange(width + 1, c.shape[axis]), axis=axis)
    lo = np.take(c, np.arange(1, c.shape[axis] - width), axis=axis)
    return (hi - lo)[: a.shape[0], : a.shape[1]] / width


def _plane_stats(r, weight, x, sigma: float, block: int, flagged) -> dict:
    """A plane's mean residual ``r`` (0 where missing) in σ (``bias``, ``biased`` when it
    fails), ``level`` and ``structure`` of the output ``x`` (None on too few blocks or σ below
    ``MIN_SIGMA``); blocks touching ``flagged`` values (a local mean) left out of the last two."""
    total = float(weight.sum())
    n = _block_sums(weight, block)
    sums = _block_sums(r, block)
    full = n >= block * block / 2
    mean = np.where(full, sums / np.maximum(n, 1), 0.0)
    full_clean = full & ~(_block_sums(flagged.astype(np.float64), block) > 0)
    bias = float(r.sum()) / max(total, 1.0)
    # what white noise allows, or the blocks' own spread shrunk by their number
    allowed = max(
        sigma / np.sqrt(max(total, 1.0)),
        _robust_spread(mean[full]) / np.sqrt(max(int(full.sum()), 1)),
    )
    biased = abs(bias) > Z * allowed and abs(bias) > MIN_SHIFT * sigma
    stats = {"bias": bias / sigma if sigma > 0 else 0.0, "biased": biased, "level": None,
             "structure": None}  # fmt: skip
    full = full_clean
    if int(full.sum()) < MIN_BLOCKS or sigma < MIN_SIGMA:
        return stats
    energy = (_block_sums(r * r, block) - sums * mean) / np.maximum(n - 1, 1)
    gy, gx = np.zeros_like(x), np.zeros_like(x)
    gy[:-1] = np.diff(x, axis=0)
    gx[:, :-1] = np.diff(x, axis=1)
    detail = _block_sums(gy * gy + gx * gx, block)[full]
    energy = energy[full]
    order = np.argsort(detail, kind="stable")
    flat = energy[order[: order.size // 2]]
    busy = energy[order[-max(order.size // 10, 1) :]]
    flat_level = float(np.median(flat))
    stats["level"] = np.sqrt(max(flat_level, 0.0)) / sigma
    stats["structure"] = float(np.median(busy)) / flat_level if flat_level > 0 else None
    return stats
