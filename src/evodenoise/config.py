"""All hyperparameters of a run: one frozen dataclass (its named presets: ``presets.py``)."""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass

SELECTIONS = ("fitness", "uniform", "best")
MUTATIONS = ("bitflip", "sparseflip", "crossover")
ACTIVATIONS = ("relu", "leaky_relu", "tanh")
SIGMA_MODES = ("fixed", "init")
MERGES = ("mean", "gaussian", "variance")
COLORS = ("opponent", "rgb")
MAX_EPOCHS = 100_000  # the paper trains for 500; more is a typo, not a run
COMPILES = ("auto", "on", "off")
NOISE_LEVELS = ("learned", "estimated")
NOISE_MODELS = ("auto", "gaussian", "poisson-gaussian")
SECOND_STAGES = ("off", "wiener")
SIGNAL_DEPENDENCES = ("transform", "likelihood")


@dataclass(frozen=True)
class Config:
    """Hyperparameters of one restoration run, on the 0–255 scale of image values.

    A value of ``0`` for ``patch_size``, ``chunk_size`` and ``band_rows`` means "chosen per
    image": ``plan.plan_run`` settles them, and ``Result.config`` reports what ran. Presets are
    in ``presets.py``; ``docs/method.md`` explains the model and the estimate.

    Examples
    --------
    >>> from evodenoise import Config, get_preset
    >>> cfg = get_preset("fast").replace(epochs=4)
    >>> cfg.epochs, cfg.n_latents
    (4, 32)
    >>> Config(n_states=0)
    Traceback (most recent call last):
    ...
    ValueError: n_states must be >= 1
    """

    # -- model ------------------------------------------------------------------------------
    patch_size: int = 8  # p: patches are p x p x channels; 0: 4, 6 or 8 from the image's SNR
    n_latents: int = 64  # H binary latents per patch
    hidden: tuple[int, ...] = (64,)  # decoder hidden layer widths
    activation: str = "relu"  # decoder nonlinearity: relu, leaky_relu or tanh
    # -- truncated posterior and its evolutionary E-step -------------------------------------
    n_states: int = 64  # S states kept per patch (the set K_n)
    n_parents: int = 8  # parents per generation
    n_children: int = 7  # children per parent
    n_generations: int = 2  # generations per E-step
    selection: str = "best"  # parents: best (most probable), fitness (proportional), uniform
    mutation: str = "bitflip"  # children: bitflip (one bit), sparseflip, crossover
    # -- optimisation -----------------------------------------------------------------------
    epochs: int = 16  # passes over the training pool
    min_visits: int = 0  # raise epochs (at most 2x) until training visits this many patches
    #   (small images; a denoising run's chroma model keeps the preset's epochs: plan.py)
    mixed_pilot_epochs: int = 0  # epochs instead where the second stage's pilot takes a share
    #   of its hard-thresholding estimate at the image's own scale (white Gaussian noise), which
    #   makes up most of a shorter training; min_visits scales alike (plan.shorten_training)
    #   (replace(epochs=...) sets it to 0: an epoch count given is the one that runs)
    batch_size: int = 32  # patches per Adam step
    lr_min: float = 1e-4  # cyclic learning rate's minimum (where training starts and ends)
    lr_max: float = 1e-2  # cyclic learning rate's maximum
    lr_half_cycle: float = 10.0  # epochs from minimum to maximum (cycles rounded to end low)
    sigma_mode: str = "fixed"  # with a sigma given: fixed keeps it, init only starts there
    sigma_floor: float = 0.5  # lower bound of a learned sigma (a given one is honoured)
    noise_model: str = "gaussian"  # or poisson-gaussian: var = a·mean + c estimated per plane,
    #   made white by the generalised Anscombe transform (exact unbiased inverse); or auto:
    #   poisson-gaussian where no σ is given and the noise measures white and growing with the
    #   signal (plan.choose_noise_model), gaussian otherwise
    signal_dependence: str = "transform"  # poisson-gaussian noise: transform (the Anscombe
    #   transform around the Gaussian model) or likelihood (the model's likelihood made
    #   heteroscedastic: each value's variance a·x̂ + c at a smoothed pilot x̂; no second stage)
    noise_level: str = "learned"  # without a sigma: learned, or estimated from the luminance
    #   (noise.estimate_sigma) and fixed for every model
    estep_batch: int = 256  # patches per vectorised E-step call; 0: batch_size (the paper's)
    train_patches: int = 65536  # training pool: at most this many patches, drawn once
    grad_states: int = 16  # most probable states per patch in the gradient; 0: all S
    compile: str = "auto"  # torch.compile the training step: auto (CUDA, long CPU runs), on, off
    # -- estimate ---------------------------------------------------------------------------
    final_sweeps: int = 1  # E-step sweeps over the pool's patches before their estimate
    chunk_size: int = 0  # patches per chunk of those sweeps; 0: 256 on a CPU, 16,384 on a GPU
    band_rows: int = 0  # patch rows per band of the estimate; 0: ~65,536 patches, memory-bound
    dictionary_size: int = 4096  # most frequent pool states that seed patches outside the pool
    fresh_sweeps: int = 3  # E-step sweeps of a patch outside the pool from its seeds
    fresh_stride: int = 1  # patches outside the pool estimated on every this-many-th row and
    #   column only (and the last): each pixel averages fewer of their estimates for about
    #   1/stride² of their work; 1: every patch (the paper's)
    poor_fit_sweeps: int = 3  # sweeps instead for a patch the dictionary explains poorly
    sweep_tol: float = 1e-4  # a patch stops sweeping once a sweep raised its free-energy
    #   term by less than this (nats); 0: every patch takes every sweep
    poor_fit_quantile: float = 0.99  # "poorly": residual above this quantile of the pool's
    merge: str = "mean"  # overlapping estimates: mean, gaussian window, inverse variance
    second_stage: str = "off"  # denoising: off (the paper's), or wiener: the input filtered
    #   again by a collaborative Wiener filter with the model's estimate as pilot (refine.py)
    refine_scales: int = 2  # scales of that filter: 1, the input's own; 2, also at half size,
    #   whose result gives the lowest frequencies (noise above the blocks' scale); 3, …
    refine_mix: float = 0.0  # weight in that filter's pilot of a hard-thresholding estimate
    #   of the input alone (refine.py, step 0), where the noise is white and Gaussian; 0: the
    #   model's estimate alone; 1: that estimate alone
    refine_coarse_mix: float = 0.0  # that estimate's weight in the pilot of the filter's
    #   halved scales (the lowest frequencies, above the model's patches)
    refine_joint: bool = False  # that filter runs once more with that estimate as a pilot of
    #   its own, both runs' groups aggregated into one result (the plan keeps it after the
    #   Anscombe transform only)
    refine_search: int = 19  # that filter matches blocks within this many pixels either way
    #   (BM3D's ±19; after the Anscombe transform the plan takes TRANSFORMED_SEARCH)
    refine_step: int = 3  # that filter's reference blocks lie on a grid of this many pixels
    #   (step 0's one more): 1 averages more estimates per pixel for 4x the filter's time
    standardize: bool = True  # train on data scaled to unit variance (off: the paper's scale)
    # -- colour -----------------------------------------------------------------------------
    color: str = "opponent"  # RGB: opponent (luminance + chroma models) or rgb (one model)
    chroma_pool: float = 0.25  # chroma model's pool as a fraction of the luminance model's
    chroma_sweeps: int = 0  # chroma model's fresh_sweeps (its poor fits still get swept)
    chroma_poor_fit: float = 0.99  # chroma model's poor_fit_quantile

    def __post_init__(self) -> None:
        self._check_types()
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        _check(self.patch_size >= 0, "patch_size must be >= 1 (0: automatic)")
        _check(self.n_latents >= 1, "n_latents must be >= 1")
        _check(all(h >= 1 for h in self.hidden), "hidden layer widths must be >= 1")
        _check(self.n_states >= 1, "n_states must be >= 1")
        _check(self.refine_scales >= 1, "refine_scales must be >= 1")
        _check(0 <= self.refine_mix <= 1, "refine_mix must be in [0, 1]")
        _check(0 <= self.refine_coarse_mix <= 1, "refine_coarse_mix must be in [0, 1]")
        _check(self.refine_search >= 1, "refine_search must be >= 1")
        _check(self.refine_step >= 1, "refine_step must be >= 1")
        _check(self.fresh_stride >= 1, "fresh_stride must be >= 1")
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
        _check(
            0 <= self.mixed_pilot_epochs <= MAX_EPOCHS,
            f"mixed_pilot_epochs must be between 0 and {MAX_EPOCHS}",
        )
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
        _check(
            0 < self.poor_fit_quantile <= 1 and 0 < self.chroma_poor_fit <= 1,
            "poor_fit_quantile and chroma_poor_fit must be in (0, 1]",
        )
        _check(self.dictionary_size >= self.n_states, "dictionary_size must be >= n_states")
        _check(self.grad_states >= 0, "grad_states must be >= 0")
        _check(self.final_sweeps >= 1, "final_sweeps must be >= 1")
        _check(self.sweep_tol >= 0, "sweep_tol must be >= 0")
        _check(self.chunk_size >= 0, "chunk_size must be >= 0 (0: automatic)")
        for name, allowed in (
            ("selection", SELECTIONS),
            ("mutation", MUTATIONS),
            ("activation", ACTIVATIONS),
            ("sigma_mode", SIGMA_MODES),
            ("merge", MERGES),
            ("color", COLORS),
            ("compile", COMPILES),
            ("noise_level", NOISE_LEVELS),
            ("noise_model", NOISE_MODELS),
            ("second_stage", SECOND_STAGES),
            ("signal_dependence", SIGNAL_DEPENDENCES),
        ):
            _check(
                getattr(self, name) in allowed,
                f"{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})",
            )

    def _check_types(self) -> None:
        """Each field of its declared kind: integers (not bool, not float), finite numbers,
        true booleans, names, and a tuple of integers for ``hidden``; ``ValueError`` naming
        the field otherwise (a float epoch count or ``hidden="64"`` would fail mid-run)."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), f.type
            if kind == "int":
                ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            elif kind == "float":
                ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
                ok = ok and math.isfinite(value)
            elif kind == "bool":
                ok = isinstance(value, bool)
            elif kind == "str":
                ok = isinstance(value, str)
            else:  # hidden: a tuple (or list) of integers
                ok = isinstance(value, (tuple, list)) and all(
                    isinstance(h, numbers.Integral) and not isinstance(h, bool) for h in value
                )
            kind_name = _KIND_NAMES.get(str(kind), "integers")
            _check(ok, f"{f.name} must be {kind_name} (got {value!r})")

    def replace(self, **changes) -> Config:
        """A copy with ``changes`` applied; unknown keys raise ``ValueError``. An ``epochs``
        given without ``mixed_pilot_epochs`` is the count that runs: it sets that to 0.

        >>> from evodenoise import get_preset
        >>> get_preset("fast").replace(epochs=20).mixed_pilot_epochs
        0
        """
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        if "epochs" in changes:
            changes.setdefault("mixed_pilot_epochs", 0)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Config:
        return cls().replace(**d)


_KIND_NAMES = {
    "int": "an integer",
    "float": "a finite number",
    "bool": "true or false",
    "str": "a name",
}


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)
