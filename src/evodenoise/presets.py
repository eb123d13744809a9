"""Named presets of :class:`~evodenoise.config.Config`, and a user's request resolved to one.

The paper presets reproduce the settings table of Drefs et al. (ECML PKDD 2022) exactly
(``docs/method.md``). ``fast`` is the default for denoising, ``inpaint`` for inpainting;
``quality`` spends more time for more PSNR. Measurements behind each choice:
``benchmarks/RESULTS.md``, decision log.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .config import Config

# Paper rows: exact settings, E-step and M-step alternating per mini-batch of 32 (estep_batch=0);
# parents are the best states, which is what the public reference code's batch-normalised
# fitness selection does in practice (docs/method.md) and what produced the paper's numbers:
# House σ=25 after 20 epochs 31.79 dB (reference 31.6) against 30.94 dB with per-point
# fitness-proportional selection (``--set selection=fitness``, the paper's definition);
# sigma is learned (the paper does not give it to the model; with --sigma it only starts there).
_PAPER: dict[str, Any] = dict(
    batch_size=32,
    lr_min=1e-4,
    epochs=500,
    lr_half_cycle=10.0,
    sigma_mode="init",
    estep_batch=0,
    grad_states=0,
    standardize=False,
    selection="best",
)

# The paper's two model sizes: 8x8 patches with 64 latents (House σ 15 and 25), 12x12 with 512.
_HOUSE: dict[str, Any] = dict(
    patch_size=8, n_latents=64, hidden=(64,), n_states=200, n_parents=10, n_children=9,
    n_generations=4, lr_max=1e-2,
)  # fmt: skip
_LARGE: dict[str, Any] = dict(
    patch_size=12, n_latents=512, hidden=(512,), n_states=64, n_parents=5, n_children=4,
    n_generations=1,
)  # fmt: skip


def _paper(**settings) -> Config:
    """A paper row: ``settings`` over the paper's common ones (:data:`_PAPER`)."""
    return Config(**{**_PAPER, **settings})


PRESETS: dict[str, Config] = {
    # CPU default: a 256x256 gray image with white noise in about 25 s on 2 cores.
    # The patch size follows the image (patch_size 0: 4, 6 or 8 from the signal-to-noise
    # ratio; benchmarks/RESULTS.md, automatic patch size: up to +2.6 dB on colour photos).
    # H = 32 latents, not 64: +0.09 dB on average over seven planes (6 gain, coffee -0.07) and
    # about 15 % less time (RESULTS.md, 32 latents).
    # Without a σ, σ is estimated from the image and fixed (noise_level "estimated"): on 16 real
    # camera photos +0.15 to +0.8 dB over learning it (RESULTS.md, real camera photos).
    # A second stage filters the input again with the model's estimate as pilot (refine.py):
    # +0.61 dB mean (-0.13 to +1.53) over the gray and colour suites for about 1 s
    # on 256x256 (RESULTS.md, second stage). Its half scale's pilot takes 0.75 of the
    # hard-thresholding estimate (the image's own scale 0.5): +0.06 dB mean over 36 white-noise
    # image-levels, camera photos +0.15 (RESULTS.md, table 8).
    # Noise that measures white and grows with the signal (photon counts: microscope frames)
    # goes through the Anscombe transform (noise_model "auto"): +3.9 dB mean on five frames
    # (RESULTS.md, table 4c).
    # After it, the second stage's Wiener step runs with two pilots, the model's estimate and
    # the hard-thresholding estimate, and aggregates both (refine_joint): +0.04 to +0.42 dB on
    # 12 of 14 synthetic photon counts, brick -0.14 / -0.49; the plan keeps it there only
    # (white noise and camera photos lost with it; RESULTS.md, table 8, step 0 as a second pilot).
    # On white Gaussian noise, where the second stage's pilot is half its hard-thresholding
    # estimate, 4 epochs instead of 16 (mixed_pilot_epochs): that estimate makes up most of the
    # shorter training (suites -0.02 to -0.17 dB, seven images held out mean -0.03) in 0.3x
    # the time; photon counts and camera noise keep 16 (RESULTS.md, table 7, the training the
    # pilot needs).
    # Patches outside the training pool (images above about 256x256) take the posterior over
    # the whole dictionary, and only the tenth the dictionary explains worst (above the 0.9
    # quantile of the pool's residuals) are swept: -0.006 to +0.005 dB against three sweeps
    # for each on six image-levels, 0.70x the time of a 1.4 MP run (RESULTS.md, table 7).
    "fast": Config(
        patch_size=0,
        n_latents=32,
        min_visits=470_000,
        mixed_pilot_epochs=4,
        noise_model="auto",
        noise_level="estimated",
        second_stage="wiener",
        refine_mix=0.5,
        refine_coarse_mix=0.75,
        refine_joint=True,
        fresh_sweeps=0,
        poor_fit_quantile=0.9,
    ),
    # Inpainting default: the fast model trained longer (missing values need more epochs), with
    # a hidden layer of 128 (House 50 % missing: 37.29 dB vs 36.52 with 64, 1.4x the time) and
    # 5x5 patches (RESULTS.md, inpainting patch size: House 50 % 38.06 dB vs 37.38 with 8x8 in 0.77x
    # the time; astronaut +3.0 / +0.5 dB at 50 / 80 % missing).
    "inpaint": Config(
        patch_size=5,
        hidden=(128,),
        epochs=40,
        min_visits=2_112_000,
        lr_max=5e-3,
        noise_level="estimated",
    ),
    # fast with the two axes that gained PSNR on every task of the ablation (benchmarks/
    # RESULTS.md): a hidden layer of 128 and S = 128 states; about 1.8x fast's time. H = 32
    # as in fast: +0.08 dB mean over four planes against H = 64 (RESULTS.md, 32 latents).
    # The second stage's references every pixel, not every third: +0.00 to +0.03 dB on the
    # suites, +0.01 to +0.08 held out, for about 5 s more on 256x256 (RESULTS.md, table 8).
    "quality": Config(
        patch_size=0,
        n_latents=32,
        hidden=(128,),
        n_states=128,
        min_visits=470_000,
        noise_model="auto",
        noise_level="estimated",
        second_stage="wiener",
        refine_mix=0.5,
        refine_coarse_mix=0.75,
        refine_joint=True,
        refine_step=1,
    ),
    # Exact settings of the paper's table (docs/method.md).
    "paper-house-15": _paper(**_HOUSE),
    "paper-house-25": _paper(**_HOUSE),
    "paper-house-50": _paper(**_LARGE, lr_max=5e-2),
    # The paper's House settings with E-steps over 8 mini-batches at once (estep_batch 256): on
    # a GPU a step then costs its M-step plus an eighth of an E-step, not a whole E-step of
    # launches (benchmarks/RESULTS.md: PSNR against exact alternation).
    "gpu-house-25": _paper(**_HOUSE, estep_batch=256),
    "paper-barbara-25": _paper(
        patch_size=8,
        n_latents=50,
        hidden=(500, 500),
        activation="leaky_relu",
        n_states=100,
        n_parents=5,
        n_children=4,
        n_generations=1,
        lr_max=1e-3,
    ),  # fmt: skip
    "paper-inpaint-house": _paper(**_LARGE, lr_max=1e-2),
    "paper-inpaint-color-50": _paper(**{**_LARGE, "patch_size": 5, "n_states": 32}, lr_max=1.25e-3),
    "paper-inpaint-color-80": _paper(**_LARGE, lr_max=1e-3),
}
# fast with 4 epochs on camera noise and photon counts too (fast's own on white noise; small
# images still get up to 2x): 15 camera photos -0.07 to +0.07 dB against fast (mean -0.01),
# five microscope frames -0.01 to -0.16 and one frame's flat areas left noisy (RESULTS.md,
# table 7, the training the pilot needs).
PRESETS["quick"] = PRESETS["fast"].replace(epochs=4, min_visits=PRESETS["fast"].min_visits // 4)
PRESETS["default"] = PRESETS["fast"]
DEFAULT_PRESETS = {"denoise": "fast", "inpaint": "inpaint"}  # the preset when none is named

# Cost and result of each preset, for --help and the README. CPU: 2 cores of a 2-core AMD EPYC
# VM, House 256x256 (0.066 megapixels), benchmarks/RESULTS.md; time grows linearly with the
# number of pixels. GPU: not measured yet (no GPU lent so far); benchmarks/throughput.py
# projects it from the measured work per epoch.
PRESET_NOTES: dict[str, str] = {
    "fast": "denoise default (House σ=25: 32.9 dB, 25 s on 2 CPU cores); patch size "
    "from the image; 4 epochs on white noise, 16 on camera noise and photon counts; "
    "training is bounded at 65,536 patches",
    "quick": "fast with 4 epochs on camera noise and photon counts too (camera photos: mean "
    "-0.01 dB against fast; microscope frames: -0.01 to -0.16 dB)",
    "inpaint": "inpaint default (House 50 % missing: 38.1 dB, 345 s on 2 CPU cores)",
    "quality": "wider decoder, more states, a denser second stage (House σ=25: 33.1 dB, about "
    "190 s on 2 CPU cores)",
    "paper-house-15": "the paper's settings; 26 s per epoch on House on 2 CPU cores "
    "(500 epochs: 55 h/megapixel): a GPU preset",
    "paper-house-25": "as paper-house-15",
    "paper-house-50": "the paper's settings (12x12, H=512): a GPU preset",
    "gpu-house-25": "paper-house-25 with E-steps over 8 mini-batches (estep_batch 256): "
    "fewer launches per step on a GPU",
    "paper-barbara-25": "the paper's settings: a GPU preset",
    "paper-inpaint-house": "the paper's settings: a GPU preset",
    "paper-inpaint-color-50": "the paper's settings: a GPU preset",
    "paper-inpaint-color-80": "the paper's settings: a GPU preset",
}


def preset_name(preset: str | None = None, *, command: str = "denoise") -> str:
    """The preset a run uses: ``preset`` itself, or the command's default when it is None
    (:data:`DEFAULT_PRESETS`: ``fast`` for denoising, ``inpaint`` for inpainting)."""
    if command not in DEFAULT_PRESETS:
        raise ValueError(f"unknown command {command!r}; known: {', '.join(DEFAULT_PRESETS)}")
    return DEFAULT_PRESETS[command] if preset is None else preset


def resolve_config(
    preset: str | None = None, *, command: str = "denoise", epochs: int | None = None, overrides=()
) -> Config:
    """The configuration a user asked for, before it meets an image (see ``plan.py``).

    ``preset`` (None: the command's default, see :func:`preset_name`), then ``overrides``
    (``"KEY=VALUE"`` strings as on the command line, or a mapping of keys to values; strings
    are parsed by the field's type, other values coerced to it), then ``epochs``. An explicit
    epoch count (from ``epochs`` or an override) is taken as it is: ``min_visits`` becomes 0
    unless overridden too. Raises ``ValueError`` with one line on an unknown preset or key,
    a malformed value or an invalid combination.
    """
    cfg = get_preset(preset_name(preset, command=command))
    items = overrides.items() if hasattr(overrides, "items") else map(_split_override, overrides)
    changes = {}
    for key, value in items:
        key = str(key).strip().replace("-", "_")
        if not hasattr(cfg, key):
            known = ", ".join(f.name for f in dataclasses.fields(Config))
            raise ValueError(f"unknown config key {key!r}; known: {known}")
        changes[key] = coerce_value(key, getattr(cfg, key), value)
    if epochs is not None:
        changes["epochs"] = int(epochs)
    if "epochs" in changes:  # (and no shorter training: Config.replace)
        changes.setdefault("min_visits", 0)
    try:
        return cfg.replace(**changes)
    except TypeError as e:
        raise ValueError(str(e)) from None


def _split_override(item: str) -> tuple[str, str]:
    key, sep, value = str(item).partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{item!r}: expected KEY=VALUE, e.g. n_states=32")
    return key, value


_KINDS = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    tuple: "comma-separated integers",
}


def coerce_value(key: str, default, value):
    """``value`` as the type of the field's ``default``; ValueError naming what was expected."""
    try:
        if isinstance(value, str):
            return _parse(default, value.strip())
        if isinstance(default, tuple):
            return (
                (int(value),) if isinstance(value, (int, float)) else tuple(int(v) for v in value)
            )
        if isinstance(default, bool):
            return bool(value)
        if isinstance(default, int) and isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(default, float) and isinstance(value, int):
            return float(value)
        return value
    except (TypeError, ValueError):
        raise ValueError(
            f"{key}={value}: expected {_KINDS.get(type(default), 'a value')}"
        ) from None


def _parse(default, text: str):
    if isinstance(default, bool):
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if isinstance(default, int):
        return int(text)
    if isinstance(default, float):
        value = float(text)
        if not math.isfinite(value):
            raise ValueError(text)
        return value
    if isinstance(default, tuple):
        inner = text.strip("()[] ")
        return tuple(int(p) for p in inner.replace(" ", ",").split(",") if p.strip())
    return text


def get_preset(name: str) -> Config:
    """The preset called ``name``; ``ValueError`` naming the known ones otherwise.

    Examples
    --------
    >>> get_preset("fast").n_latents, get_preset("fast").noise_level
    (32, 'estimated')
    >>> get_preset("paper-house-25").epochs
    500
    >>> get_preset("slow")
    Traceback (most recent call last):
    ...
    ValueError: unknown preset 'slow'; known: fast, inpaint, quality, ...
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
