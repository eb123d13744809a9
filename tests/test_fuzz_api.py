"""Property-based fuzzing of the Python API's arguments, of every ``--set`` field with absurd
values, of the ``--max-memory`` / ``--shard`` / ``--data-range`` edges and of environment
oddities (see test_fuzz.py for the shared invariants and profiles).

The engine is not the point here: the library runs its real checks, its noise handling and
its real plan (the memory estimate, the bands) and stops at the start of the work
(``restore.plan_run`` wrapped to stop there). Invariants: the API returns or raises only
``ValueError`` / ``TypeError`` with one line, never warns; the command line exits 0, 1 or
2 with one ``error:`` line per failure and no traceback, and leaves its inputs unchanged.

Long runs: ``make test-all`` (FUZZ_LONG examples per test, seed FUZZ_SEED; environment
EVODENOISE_FUZZ_LONG, EVODENOISE_FUZZ_SEED).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from unittest import mock

import numpy as np
import pytest
from conftest import tiny_cli
from hypothesis import event, given, note, seed
from hypothesis import strategies as st
from PIL import Image
from test_fuzz import FUZZ_LONG, FUZZ_SEED, check, digest, profile, sandbox
from typer.testing import CliRunner

from evodenoise import restore
from evodenoise.cli import app
from evodenoise.config import Config

SHORT = {"api": 60, "set": 30, "edges": 30}


def mostly(good, bad):
    """A valid value (from ``good``) nine times in ten."""
    return st.integers(0, 9).flatmap(lambda k: bad if k == 9 else good)


_REAL_PLAN = restore.plan_run


class Planned(Exception):
    """Every check passed and the run was planned: the work would start here."""


def _plan_then_stop(*args, **kwargs):
    _REAL_PLAN(*args, **kwargs)
    raise Planned


@contextlib.contextmanager
def planning_only():
    with mock.patch.object(restore, "plan_run", _plan_then_stop):
        yield


# ---- 1. the Python API ------------------------------------------------------------------------

ANY = st.sampled_from(
    [None, True, False, 0, -1, 1, 2**70, -(2**70), 1.5, float("nan"), float("inf"), "1", "",
     "cpu", [], {}, (1,), object(), np.int64(3), np.float32(0.5), b"x"]
)  # fmt: skip
SIGMAS = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-300, 5e-324, 1e300, 1e38, 3e38, 0.1, 25.0, 1, np.float64(0.1)]),
    ANY,
)
TINY_CONFIGS = st.builds(
    lambda **kw: Config(
        n_states=4, n_latents=8, hidden=(8,), patch_size=4, epochs=1, n_parents=2
    ).replace(**{k: v for k, v in kw.items() if v is not None}),
    batch_size=st.none() | st.sampled_from([1, 10**6, 10**12]),
    estep_batch=st.none() | st.sampled_from([0, 10**9]),
    dictionary_size=st.none() | st.sampled_from([4, 10**9]),
    chunk_size=st.none() | st.sampled_from([1, 10**9]),
    train_patches=st.none() | st.sampled_from([1, 10**9]),
    noise_level=st.none() | st.sampled_from(["learned", "estimated"]),
    noise_model=st.none() | st.sampled_from(["auto", "gaussian", "poisson-gaussian"]),
)
CONFIGS = st.one_of(
    st.sampled_from(["fast", "inpaint", "quality", "nope", "", None]),
    st.sampled_from([{"epochs": 1}, Config, 3, ["fast"]]),
    TINY_CONFIGS,
)
SEEDS = st.one_of(st.integers(-(2**65), 2**65), ANY)
DEVICES = st.sampled_from(["cpu", "auto", "gpu", "cuda", "cuda:7", "tpu", "", None, 3, "CPU"])
MEMORY = st.one_of(
    st.none(), st.integers(-(2**40), 2**63), st.sampled_from(["1G", 1.5, -5, 0, 2**80]), ANY
)
SHAPES = st.sampled_from([(8, 8), (8, 9, 1), (8, 8, 3), (9, 8, 4), (3, 3), (8, 8, 2), (0, 8)])


@st.composite
def api_case(draw):
    shape = draw(mostly(st.sampled_from([(8, 8), (8, 9, 1), (8, 8, 3), (9, 8, 4)]), SHAPES))
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    fill = draw(
        mostly(
            st.sampled_from(["random", "zeros", "ones"]),
            st.sampled_from(["nan", "huge", "negative"]),
        )
    )
    image = {
        "random": lambda: rng.random(shape),
        "zeros": lambda: np.zeros(shape),
        "ones": lambda: np.ones(shape),
        "nan": lambda: np.where(rng.random(shape) < 0.1, np.nan, 0.5),
        "huge": lambda: np.full(shape, 1e30),
        "negative": lambda: -rng.random(shape),
    }[fill]()
    mask = draw(
        mostly(
            st.sampled_from([None, "some", "2d"]),
            st.sampled_from(["all", "none", "alpha", "wrong"]),
        )
    )
    if mask == "some":
        mask = rng.random(shape) < 0.3
    elif mask in ("all", "none"):
        mask = np.full(shape, mask == "all")
    elif mask == "alpha" and len(shape) == 3:
        mask = np.ones(shape, bool)
        mask[..., -1] = False
    elif mask == "2d":
        mask = rng.random(shape[:2]) < 0.3
    elif mask is not None:
        mask = np.zeros((2, 2), bool)
    kwargs = dict(
        sigma=draw(mostly(st.sampled_from([None, 0.1, 1e-3]), SIGMAS)),
        config=draw(mostly(TINY_CONFIGS, CONFIGS)),
        seed=draw(mostly(st.integers(0, 2**63 - 1), SEEDS)),
        device=draw(mostly(st.just("cpu"), DEVICES)),
        max_memory=draw(mostly(st.sampled_from([None, 2**30, 2**40]), MEMORY)),
        callback=draw(mostly(st.just(None), st.sampled_from([None, print, 3, "f"]))),
    )
    return draw(st.sampled_from(["denoise", "inpaint"])), image, mask, kwargs


def _check_api(case):
    command, image, mask, kwargs = case
    note(f"seed {FUZZ_SEED}; {command} image {image.shape} mask {mask!r:.60}; {kwargs!r:.400}")
    before = image.copy(), None if mask is None else np.array(mask, copy=True)
    with warnings.catch_warnings(), planning_only():
        warnings.simplefilter("error")  # a warning reaching the caller is a failure
        try:
            if command == "inpaint":
                restore.inpaint(image, mask, **kwargs)
            else:
                restore.denoise(image, mask=mask, **kwargs)
        except Planned:
            event("planned")
        except (ValueError, TypeError) as e:
            event(f"{type(e).__name__}")
            text = str(e)
            assert text and "\n" not in text.strip(), repr(text)
    assert np.array_equal(image, before[0], equal_nan=True), "the image changed"
    if mask is not None and before[1] is not None:
        assert np.array_equal(np.asarray(mask), before[1]), "the mask changed"


@profile(SHORT["api"])
@seed(FUZZ_SEED)
@given(case=api_case())
def test_fuzz_api_arguments(case):
    _check_api(case)


@pytest.mark.slow
@profile(FUZZ_LONG)
@seed(FUZZ_SEED)
@given(case=api_case())
def test_fuzz_api_arguments_long(case):
    _check_api(case)


# ---- 2. --set fields with absurd values ----------------------------------------------------------

FIELDS = [f.name for f in dataclasses.fields(Config)]
ABSURD = st.sampled_from(
    ["0", "-1", "1", "2", "10**9", "1000000000", "99999999999999999999999", "1e300", "-1e300",
     "inf", "-inf", "nan", "0.5", "1.5", "1e-300", "", " ", "x", "true", "no", "8,8", "8,,8",
     "0,0", "-8", "relu", "best", "auto", "on", "mean", "opponent", "estimated",
     "poisson-gaussian", "\x00", "é", "1_000"]
)  # fmt: skip


@st.composite
def set_case(draw):
    sets = draw(st.lists(st.tuples(st.sampled_from(FIELDS), ABSURD), min_size=1, max_size=2))
    argv = ["denoise", "a.png", "--json", *tiny_cli(epochs=1)]
    for key, value in sets:
        argv += ["--set", f"{key}={value}"]
    if draw(st.booleans()):
        argv += ["--sigma", draw(st.sampled_from(["25", "1e-3", "auto"]))]
    return argv


def _invoke(argv, env=None):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping to the user is a failure here
        return CliRunner().invoke(app, [str(a) for a in argv], env=env)


def _cli(argv, env=None):
    with sandbox() as root:
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(root / "a.png")
        Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(root / "b.png")
        before = digest([root / "a.png", root / "b.png"])
        with planning_only():
            result = _invoke(argv, env)
        records = check(result, before, argv)
        for r in records:
            if r["status"] == "error" and "Planned" in (r["error"] or ""):
                event("planned")
        leftovers = [p for p in root.rglob("*") if p.name.endswith(".part")]
        assert not leftovers


@profile(SHORT["set"])
@seed(FUZZ_SEED)
@given(argv=set_case())
def test_fuzz_set_fields(argv):
    _cli(argv)


@pytest.mark.slow
@profile(FUZZ_LONG)
@seed(FUZZ_SEED)
@given(argv=set_case())
def test_fuzz_set_fields_long(argv):
    _cli(argv)


# ---- 3. --max-memory, --shard, --data-range, the environment ----------------------------------

_NUM = st.one_of(
    st.integers(-5, 10**20).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1e3", ".5", "5.", "0x10", "1_0", " 7 ", "", "1/0", "٣"]),
)
SIZES = st.one_of(
    st.tuples(
        _NUM, st.sampled_from(["", "K", "M", "G", "T", "P", "k", "GB", "GiB", "ib", " G"])
    ).map("".join),
    st.text(max_size=6),
)
SHARDS = st.one_of(
    st.tuples(st.integers(-3, 2**64), st.integers(-3, 2**64)).map(lambda t: f"{t[0]}/{t[1]}"),
    st.sampled_from(["0/1", "1/1", " 0 / 2 ", "0//2", "0/2/3", "/", "0/", "1e1/2", "½/2"]),
    st.text(max_size=5),
)
RANGES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["1", "255", "65535", "1e-300", "3.5e38", "1e39", "-1", "0", "x", ""]),
)
ENVS = st.sampled_from(
    [None, {"COLUMNS": "1"}, {"COLUMNS": "x"}, {"TERM": "dumb"}, {"NO_COLOR": "1"},
     {"LC_ALL": "C"}, {"TMPDIR": "/nonexistent"}, {"OMP_NUM_THREADS": "x"}]
)  # fmt: skip


@st.composite
def edge_case(draw):
    argv = ["denoise", *draw(st.sampled_from([["a.png"], ["a.png", "b.png"]]))]
    argv += ["--json", "--sigma", "25", "--output-dir", "od", *tiny_cli(epochs=1)]
    good = {
        "--max-memory": st.sampled_from(["1G", "100M", "1T", "5000000000"]),
        "--shard": st.sampled_from(["0/1", "0/2", "1/2", "0/3"]),
        "--data-range": st.sampled_from(["255", "1", "1000", "1e-3"]),
    }
    for flag, values in (("--max-memory", SIZES), ("--shard", SHARDS), ("--data-range", RANGES)):
        if draw(st.booleans()):
            argv += [flag, draw(st.one_of(good[flag], values))]
    if draw(st.booleans()):
        argv.append("--skip-existing")
    return argv, draw(ENVS)


@profile(SHORT["edges"])
@seed(FUZZ_SEED)
@given(case=edge_case())
def test_fuzz_limits_and_environment(case):
    _cli(*case)


@pytest.mark.slow
@profile(FUZZ_LONG)
@seed(FUZZ_SEED)
@given(case=edge_case())
def test_fuzz_limits_and_environment_long(case):
    _cli(*case)


def test_planning_only_stops_before_the_work():
    with planning_only(), pytest.raises(Planned):
        restore.denoise(np.full((8, 8), 0.5), 0.1, config=Config(patch_size=4, epochs=1))
