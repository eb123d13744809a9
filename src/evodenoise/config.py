"""All hyperparameters of a run: one frozen dataclass and its named presets.

The paper presets reproduce the settings table of Drefs et al. (ECML PKDD 2022) exactly
(see DESIGN.md §1). ``fast`` is the CPU default for denoising, ``inpaint`` for inpainting;
``quality`` spends more time for more PSNR.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

SELECTIONS = ("fitness", "uniform", "best")
MUTATIONS = ("bitflip", "sparseflip", "crossover")
ACTIVATIONS = ("relu", "leaky_relu", "tanh")
SIGMA_MODES = ("fixed", "init")
MERGES = ("mean", "gaussian", "variance")
COLORS = ("opponent", "rgb")
MAX_EPOCHS = 100_000  # the paper trains for 500; more is a typo, not a run
COMPILES = ("auto", "on", "off")


@dataclass(frozen=True)
class Config:
    """Hyperparameters of one restoration run (units: image values on the 0-255 scale).

    Model: ``patch_size`` (p, patches are p x p x channels; ``0``: chosen per image from its
    signal-to-noise ratio, 4, 6 or 8, see ``restore.choose_patch_size``), ``n_latents`` (H binary latents),
    ``hidden`` (decoder hidden layer widths), ``activation``.
    Truncated posterior: ``n_states`` (S states kept per patch); evolution with ``n_parents``
    parents x ``n_children`` children x ``n_generations``, parent ``selection`` and ``mutation``.
    Optimisation: ``epochs`` (raised, at most 2x, for small images so that training makes at
    least ``min_visits`` patch visits: fewer patches give less training per epoch);
    mini-batches of ``batch_size`` patches, one Adam step each;
    triangular cyclic learning rate between ``lr_min`` and ``lr_max`` with a half cycle of
    ``lr_half_cycle`` epochs (the number of cycles is rounded so that training always ends at
    a minimum of the cycle). ``sigma_floor`` bounds a learned σ from below (0-255 units;
    a σ given and fixed is honoured however small).
    ``sigma_mode`` applies when a σ is given: ``fixed`` keeps σ at the given value,
    ``init`` only starts there and learns it.

    Speed knobs that change the schedule, not the model: ``estep_batch`` patches are evolved in
    one vectorised E-step call before their mini-batches' Adam steps (``0``: equal to
    ``batch_size``, the paper's exact alternation); ``train_patches`` bounds the training pool:
    larger images train on that many patches drawn at random once per run (their states are
    kept, the others' never exist during training), smaller ones on all of theirs;
    ``grad_states`` keeps only that many most probable states per patch in the gradient
    (``0``: all S); ``final_sweeps`` full E-step sweeps under the final parameters before the
    estimate; ``chunk_size`` patches per chunk in those sweeps (bounds memory; ``0``: 256 on
    the CPU, where a chunk's candidates then stay in the caches and reuse the allocator's
    blocks, measured 1.2x faster than 1024, and 16,384 on a GPU, where fewer, larger calls win).

    Streaming estimate (``stream.py``): the image is estimated ``band_rows`` rows of patches at
    a time (``0``: about 65,536 patches per band, fewer when memory is short); a patch outside
    the training pool gets as its set K_n the S best, for it, of the ``dictionary_size`` states
    most frequent in the pool's sets, improved by ``fresh_sweeps`` E-step sweeps (3: within 0.1 dB of training on every patch
    on a 512x512 photo, one sweep 0.58 dB below; ``0``: the
    posterior over those states directly, one matrix product per chunk: cheap, but measured
    1.9 dB worse than one sweep on a 512x512 photo, where 4,096 states cannot cover rare
    textures). Whatever ``fresh_sweeps`` says, a fresh patch that the dictionary explains
    poorly gets ``poor_fit_sweeps`` sweeps from its dictionary seeds (when they are more):
    poorly means that its best entry leaves a larger residual than the ``poor_fit_quantile``
    of the residuals the pool's patches leave under their own best trained state. A rare,
    saturated colour absent from the dictionary is then found by the sweeps instead of being
    replaced by the nearest frequent one (a red pot turned brown: 6 dB below the noisy input
    on a real photo without them). ``0`` turns the rescue off.

    ``standardize`` divides the centred data by its standard deviation before training, so the
    decoder's outputs are O(1) and Adam's steps are relative to the image's contrast; off, the
    model works on the 0–255 scale on which the paper's learning rates are defined (its presets).

    ``compile``: run the training step's E-step and M-step through ``torch.compile``
    (``fullgraph``, static shapes; CUDA graphs on CUDA): ``on``, ``off`` or ``auto`` (on for
    CUDA; on the CPU only for long exact-alternation runs such as the paper presets, where the
    minutes of compiling pay off: benchmarks/RESULTS.md).

    Estimate: ``merge`` ``mean`` averages all patch estimates covering a pixel, ``gaussian``
    weights them by a centred Gaussian window, ``variance`` by the inverse of each value's
    posterior variance under the truncated posterior (floored at σ²/D).

    Colour (3-channel images): ``color`` ``opponent`` turns RGB into an orthonormal
    luminance/chroma basis (white noise keeps its σ, so the likelihood is exact) and trains one
    model on luminance patches and one on the two chroma channels' patches, the latter on
    ``chroma_pool`` times the luminance model's training pool and with ``chroma_sweeps`` as
    its ``fresh_sweeps`` (0: most chroma patches are smooth and need no sweep, the dictionary's
    posterior is within 0.01 dB of three sweeps on two 400-512 px photos for half the chroma
    model's time; the few that the dictionary explains poorly still get ``poor_fit_sweeps``);
    ``rgb`` trains one model on
    RGB patches. Inputs whose mask differs between channels always use ``rgb``.
    """

    patch_size: int = 8
    n_latents: int = 64
    hidden: tuple[int, ...] = (64,)
    activation: str = "relu"
    n_states: int = 64
    n_parents: int = 8
    n_children: int = 7
    n_generations: int = 2
    selection: str = "best"
    mutation: str = "bitflip"
    epochs: int = 16
    min_visits: int = 0
    batch_size: int = 32
    lr_min: float = 1e-4
    lr_max: float = 1e-2
    lr_half_cycle: float = 10.0
    sigma_mode: str = "fixed"
    sigma_floor: float = 0.5
    estep_batch: int = 256
    train_patches: int = 65536
    grad_states: int = 16
    final_sweeps: int = 1
    chunk_size: int = 0
    band_rows: int = 0
    dictionary_size: int = 4096
    fresh_sweeps: int = 3
    poor_fit_sweeps: int = 3
    poor_fit_quantile: float = 0.99
    merge: str = "mean"
    standardize: bool = True
    color: str = "opponent"
    chroma_pool: float = 0.25
    chroma_sweeps: int = 0
    compile: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        _check(self.patch_size >= 0, "patch_size must be >= 1 (0: automatic)")
        _check(self.n_latents >= 1, "n_latents must be >= 1")
        _check(all(h >= 1 for h in self.hidden), "hidden layer widths must be >= 1")
        _check(self.n_states >= 1, "n_states must be >= 1")
        _check(
            self.n_latents >= 63 or self.n_states <= 2**self.n_latents,
            "n_states must not exceed 2**n_latents",
        )
        _check(
            self.n_parents >= 1 and self.n_children >= 1 and self.n_generations >= 0,
            "n_parents and n_children must be >= 1, n_generations >= 0",
        )
        _check(
            self.n_parents <= self.n_states,
            "n_parents must not exceed n_states (parents are drawn without replacement)",
        )
        _check(
            self.mutation != "bitflip" or self.n_children <= self.n_latents,
            "bitflip needs n_children <= n_latents (distinct bits per parent)",
        )
        _check(
            self.mutation != "crossover" or self.n_parents >= 2, "crossover needs n_parents >= 2"
        )
        _check(0 <= self.epochs <= MAX_EPOCHS, f"epochs must be between 0 and {MAX_EPOCHS}")
        _check(self.min_visits >= 0, "min_visits must be >= 0")
        _check(self.batch_size >= 1, "batch_size must be >= 1")
        _check(0 < self.lr_min <= self.lr_max, "need 0 < lr_min <= lr_max")
        _check(self.lr_half_cycle > 0, "lr_half_cycle must be > 0")
        _check(self.sigma_floor > 0, "sigma_floor must be > 0")
        _check(self.estep_batch >= 0, "estep_batch must be >= 0")
        _check(self.train_patches >= 1, "train_patches must be >= 1")
        _check(0 < self.chroma_pool <= 1, "chroma_pool must be in (0, 1]")
        _check(self.band_rows >= 0, "band_rows must be >= 0")
        _check(
            self.fresh_sweeps >= 0 and self.chroma_sweeps >= 0 and self.poor_fit_sweeps >= 0,
            "fresh_sweeps, chroma_sweeps and poor_fit_sweeps must be >= 0",
        )
        _check(0 < self.poor_fit_quantile <= 1, "poor_fit_quantile must be in (0, 1]")
        _check(self.dictionary_size >= self.n_states, "dictionary_size must be >= n_states")
        _check(self.grad_states >= 0, "grad_states must be >= 0")
        _check(self.final_sweeps >= 1, "final_sweeps must be >= 1")
        _check(self.chunk_size >= 0, "chunk_size must be >= 0 (0: automatic)")
        for name, allowed in (
            ("selection", SELECTIONS),
            ("mutation", MUTATIONS),
            ("activation", ACTIVATIONS),
            ("sigma_mode", SIGMA_MODES),
            ("merge", MERGES),
            ("color", COLORS),
            ("compile", COMPILES),
        ):
            _check(
                getattr(self, name) in allowed,
                f"{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})",
            )

    def replace(self, **changes) -> Config:
        """A copy with ``changes`` applied; unknown keys raise ``ValueError``."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        return cls().replace(**d)


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


# Paper rows: exact settings, E-step and M-step alternating per mini-batch of 32 (estep_batch=0);
# parents are the best states, which is what the public reference code's batch-normalised
# fitness selection does in practice (DESIGN.md §1) and what produced the paper's numbers:
# House σ=25 after 20 epochs 31.79 dB (reference 31.6) against 30.94 dB with per-point
# fitness-proportional selection (``--set selection=fitness``, the paper's definition);
# sigma is learned (the paper does not give it to the model; with --sigma it only starts there).
_PAPER = dict(
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

PRESETS: dict[str, Config] = {
    # CPU default: a 256x256 gray image in about a minute or two on 2 cores.
    # The patch size follows the image (patch_size 0: 4, 6 or 8 from the signal-to-noise
    # ratio; benchmarks/RESULTS.md "Session 4: patch size": up to +2.6 dB on colour photos).
    # H = 32 latents, not 64: +0.09 dB on average over seven planes (6 gain, coffee -0.07) and
    # about 15 % less time (RESULTS.md "Session 6: 32 latents").
    "fast": Config(patch_size=0, n_latents=32, min_visits=470_000),
    # Inpainting default: the fast model trained longer (missing values need more epochs), with
    # a hidden layer of 128 (House 50 % missing: 37.29 dB vs 36.52 with 64, 1.4x the time) and
    # 5x5 patches (RESULTS.md "Session 6-7": House 50 % 38.06 dB vs 37.38 with 8x8 in 0.77x
    # the time; astronaut +3.0 / +0.5 dB at 50 / 80 % missing).
    "inpaint": Config(patch_size=5, hidden=(128,), epochs=40, min_visits=2_112_000, lr_max=5e-3),
    # fast with the two axes that gained PSNR on every task of the ablation (benchmarks/
    # RESULTS.md): a hidden layer of 128 and S = 128 states; about 1.8x fast's time. H = 32
    # as in fast: +0.08 dB mean over four planes against H = 64 (RESULTS.md "Session 6").
    "quality": Config(patch_size=0, n_latents=32, hidden=(128,), n_states=128, min_visits=470_000),
    # Exact settings of the paper's table (DESIGN.md §1).
    "paper-house-15": Config(
        patch_size=8,
        n_latents=64,
        hidden=(64,),
        n_states=200,
        n_parents=10,
        n_children=9,
        n_generations=4,
        lr_max=1e-2,
        **_PAPER,
    ),
    "paper-house-25": Config(
        patch_size=8,
        n_latents=64,
        hidden=(64,),
        n_states=200,
        n_parents=10,
        n_children=9,
        n_generations=4,
        lr_max=1e-2,
        **_PAPER,
    ),
    "paper-house-50": Config(
        patch_size=12,
        n_latents=512,
        hidden=(512,),
        n_states=64,
        n_parents=5,
        n_children=4,
        n_generations=1,
        lr_max=5e-2,
        **_PAPER,
    ),
    # The paper's House settings with E-steps over 8 mini-batches at once (estep_batch 256): on
    # a GPU a step then costs its M-step plus an eighth of an E-step, not a whole E-step of
    # launches (benchmarks/RESULTS.md: PSNR against exact alternation).
    "gpu-house-25": Config(
        patch_size=8,
        n_latents=64,
        hidden=(64,),
        n_states=200,
        n_parents=10,
        n_children=9,
        n_generations=4,
        lr_max=1e-2,
        **{**_PAPER, "estep_batch": 256},
    ),
    "paper-barbara-25": Config(
        patch_size=8,
        n_latents=50,
        hidden=(500, 500),
        activation="leaky_relu",
        n_states=100,
        n_parents=5,
        n_children=4,
        n_generations=1,
        lr_max=1e-3,
        **_PAPER,
    ),
    "paper-inpaint-house": Config(
        patch_size=12,
        n_latents=512,
        hidden=(512,),
        n_states=64,
        n_parents=5,
        n_children=4,
        n_generations=1,
        lr_max=1e-2,
        **_PAPER,
    ),
    "paper-inpaint-color-50": Config(
        patch_size=5,
        n_latents=512,
        hidden=(512,),
        n_states=32,
        n_parents=5,
        n_children=4,
        n_generations=1,
        lr_max=1.25e-3,
        **_PAPER,
    ),
    "paper-inpaint-color-80": Config(
        patch_size=12,
        n_latents=512,
        hidden=(512,),
        n_states=64,
        n_parents=5,
        n_children=4,
        n_generations=1,
        lr_max=1e-3,
        **_PAPER,
    ),
}
PRESETS["default"] = PRESETS["fast"]
DEFAULT_PRESETS = {"denoise": "fast", "inpaint": "inpaint"}  # the preset when none is named

# Cost and result of each preset, for --help and the README. CPU: 2 cores of a 2-core AMD EPYC
# VM, House 256x256 (0.066 megapixels), benchmarks/RESULTS.md; time grows linearly with the
# number of pixels. GPU: not measured yet (no GPU lent so far); benchmarks/throughput.py
# projects it from the measured work per epoch.
PRESET_NOTES: dict[str, str] = {
    "fast": "denoise default (House σ=25: 32.3 dB, 93 s on 2 CPU cores); patch size "
    "from the image; training is bounded at 65,536 patches, each further megapixel "
    "costs three E-step sweeps",
    "inpaint": "inpaint default (House 50 % missing: 38.1 dB, 345 s on 2 CPU cores)",
    "quality": "wider decoder, more states (House σ=25: 32.3 dB, 191 s on 2 CPU cores)",
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
        changes[key] = _coerce(key, getattr(cfg, key), value)
    if epochs is not None:
        changes["epochs"] = int(epochs)
    if "epochs" in changes:
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


def _coerce(key: str, default, value):
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
    """The preset called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}") from None
