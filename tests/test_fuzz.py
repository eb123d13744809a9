"""Property-based fuzzing of the command line (through Typer's CliRunner) and the loaders.

Invariants on every example: exit code in {0, 1, 2}; no traceback (no exception escapes,
none printed); exactly one ``error:`` line on stderr per failed input; no output file for a
failed input; inputs byte-identical afterwards; loaders raise only ImageError, with one line,
and never warn.

Profiles: the short one runs in ``make test``; the long one (marked slow, ``make test-all``)
runs FUZZ_LONG examples per test (3 tests: at least 10,000 in all) from the fixed seed
FUZZ_SEED (environment: EVODENOISE_FUZZ_SEED, EVODENOISE_FUZZ_LONG). Hypothesis prints the
failing example and ``@reproduce_failure`` blob; the seed is printed with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import tifffile
from conftest import FakeEngine, tiny_cli
from hypothesis import HealthCheck, event, given, note, seed, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from evodenoise import restore
from evodenoise.cli import app
from evodenoise.imageio import ImageError, encode_png16, read_image, read_mask

FUZZ_SEED = int(os.environ.get("EVODENOISE_FUZZ_SEED", "20261125"))
FUZZ_LONG = int(os.environ.get("EVODENOISE_FUZZ_LONG", "3400"))
SHORT = {"cli": 40, "inputs": 25, "loaders": 150, "real": 4}


def profile(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


# ---- files ---------------------------------------------------------------------------------------

NPY_DTYPES = [
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
    "longdouble",
    "complex64",
    "complex128",
    "datetime64[s]",
    "timedelta64[ms]",
    "U3",
    "S2",
    "V4",
    "object",
    "f4,i2",
]
SHAPES = st.sampled_from(
    [(1, 1), (1, 40), (40, 1), (2, 3), (3, 2), (10, 10), (9, 12), (16, 16), (4, 100), (20, 20)]
)


def _values(draw, shape, dtype):
    """Values for ``dtype``: random, with some of its edge values planted."""
    dt = np.dtype(dtype)
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    if dt.kind == "b":
        return rng.random(shape) < 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        arr = rng.integers(int(info.min), int(info.max), size=shape, endpoint=True, dtype=dt)
        edges = [int(info.min), int(info.max), 0, 1] + [v for v in (255, 65535) if v <= info.max]
    elif dt.kind in "fc":
        info = np.finfo(dt)
        arr = (rng.random(shape) * 255).astype(dt)
        edges = [
            0.0,
            1.0,
            255.0,
            -1.0,
            float(info.max),
            -float(info.max),
            float(info.tiny),
            1e6 * 255,
            1e6 * 255 * 1.01,
            float("nan"),
            float("inf"),
            5e-324,
        ]
    else:
        return np.zeros(shape, dtype=dt)
    if draw(st.booleans()):
        flat = arr.reshape(-1)
        for _ in range(draw(st.integers(1, 4))):
            with np.errstate(all="ignore"):
                flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from(edges))
    return arr


@st.composite
def image_bytes(draw):
    """(bytes, natural extension) of a valid, odd or damaged image."""
    kind = draw(
        st.sampled_from(["png8", "png16", "npy", "tif", "multi", "jpeg", "random", "empty", "text"])
    )
    h, w = draw(SHAPES)
    channels = draw(st.sampled_from([0, 1, 2, 3, 4]))
    shape = (h, w) if channels == 0 else (h, w, channels)
    rng = np.random.default_rng(draw(st.integers(0, 999)))
    buf = io.BytesIO()
    if kind == "png8":
        arr = rng.integers(0, 256, shape, dtype=np.uint8)
        mode = {0: "L", 1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
        Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(buf, "PNG")
        data, ext = buf.getvalue(), ".png"
    elif kind == "png16":
        data, ext = encode_png16(rng.integers(0, 65536, shape, dtype=np.uint16)), ".png"
    elif kind == "npy":
        dtype = draw(st.sampled_from(NPY_DTYPES))
        arr = _values(draw, shape, dtype)
        np.save(buf, arr, allow_pickle=dtype == "object")
        data, ext = buf.getvalue(), ".npy"
    elif kind == "tif":
        dtype = draw(st.sampled_from(["uint8", "uint16", "float32", "float64", "int16"]))
        with warnings.catch_warnings():  # tifffile's notes on how it stores odd shapes
            warnings.simplefilter("ignore")
            tifffile.imwrite(buf, _values(draw, shape, dtype))
        data, ext = buf.getvalue(), ".tif"
    elif kind == "multi":
        fmt = draw(st.sampled_from(["GIF", "TIFF", "PNG", "WEBP"]))
        frames = [Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)) for _ in range(3)]
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:])
        data, ext = buf.getvalue(), "." + fmt.lower()
    elif kind == "jpeg":
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
        data, ext = buf.getvalue(), ".jpg"
    elif kind == "random":
        data, ext = draw(st.binary(max_size=300)), ".png"
    elif kind == "empty":
        data, ext = b"", ".png"
    else:
        data, ext = b"ceci n'est pas une image\n", ".png"
    mutation = draw(st.sampled_from(["none", "none", "truncate", "flip", "append"]))
    if data and mutation == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif data and mutation == "flip":
        b = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            b[draw(st.integers(0, len(b) - 1))] ^= 1 << draw(st.integers(0, 7))
        data = bytes(b)
    elif mutation == "append":
        data += draw(st.binary(min_size=1, max_size=20))
    ext = draw(st.sampled_from([ext, ext, ".png", ".npy", ".tif", ".jpg", ".gif", ".bmp"]))
    return data, ext


# ---- running and checking -----------------------------------------------------------------------


@contextlib.contextmanager
def sandbox():
    old = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="evofuzz") as d:
        os.chdir(d)
        try:
            yield Path(d)
        finally:
            os.chdir(old)


def digest(paths) -> dict:
    return {
        str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest()
        for p in paths
        if Path(p).is_file() and not Path(p).is_symlink()
    }


def invoke(argv, real: bool = False):
    fake = FakeEngine()
    patches = contextlib.ExitStack()
    if not real:
        patches.enter_context(mock.patch.object(restore, "denoise", fake.denoise))
        patches.enter_context(mock.patch.object(restore, "inpaint", fake.inpaint))
    with patches, warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning escaping to the user is a failure here
        return CliRunner().invoke(app, [str(a) for a in argv])


def check(result, before: dict, argv) -> list[dict]:
    """The invariants; returns the JSON records (when --json was given)."""
    note(f"seed {FUZZ_SEED}; argv {argv}")
    note(f"exit {result.exit_code}\nstderr:\n{result.stderr}")
    event(f"exit {result.exit_code}")
    assert result.exit_code in (0, 1, 2)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert digest(before) == before, "an input changed"
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    records = []
    if "--json" in argv and result.exit_code != 2 and "-o" not in argv:
        import json

        records = [json.loads(ln) for ln in result.stdout.splitlines() if ln.strip()]
        failed = [r for r in records if r["status"] == "error"]
        assert len(errors) == len(failed), (errors, failed)
        assert (result.exit_code == 1) == bool(failed)
        for r in records:
            event(f"input {r['status']}")
            if r["status"] == "error":  # a side file's failure keeps the output it wrote
                assert r["output"] is None or "was written" in r["error"], r
    if result.exit_code == 2:
        assert len(errors) <= 1
    elif result.exit_code == 1:
        assert errors
    else:
        assert not errors
    return records


# ---- 1. options -----------------------------------------------------------------------------------


def mostly(good: list, bad: list):
    """Valid values six times in seven, edge and invalid ones otherwise."""
    return st.one_of(*[st.sampled_from(good)] * 6, st.sampled_from(bad))


NUMBER_EDGES = [
    "0",
    "-1",
    "1e-60",
    "1e-30",
    "1e39",
    "1e308",
    "nan",
    "inf",
    "-inf",
    "abc",
    "",
    " 5",
    "0x10",
]
OPTIONS = {
    "--sigma": mostly(["25", "0.5", "auto", "2e2", "1"], NUMBER_EDGES + ["0.1"]),
    "--data-range": mostly(["255", "1", "65535"], NUMBER_EDGES),
    "--seed": mostly(
        ["0", "1", "7", str(2**63 - 1)], ["-1", str(2**63), "99999999999999999999", "1.5", "x"]
    ),
    "--epochs": mostly(
        ["1", "2", "0"], ["-1", "1.5", "x", "1000001", "99999999999999999999999999"]
    ),
    "--set": mostly(
        [
            "n_states=4",
            "hidden=8",
            "selection=best",
            "patch_size=4",
            "epochs=2",
            "merge=gaussian",
            "hidden=8,4",
        ],
        [
            "n_states=0",
            "n_states=abc",
            "hidden=",
            "hidden=8,x",
            "lr_max=inf",
            "selection=nope",
            "patch_size=100",
            "nope=1",
            "novalue",
            "=3",
            "standardize=maybe",
            "sigma_floor=0",
        ],
    ),
    "--preset": mostly(["fast", "inpaint", "quality"], ["nope", ""]),
    "--max-memory": mostly(["4G", "1.5GB", "512", "64M"], ["0", "-1", "x", "1e3", ""]),
    "--shard": mostly(["0/1", "0/2", "1/2"], ["2/2", "a", "0/0", "-1/2", ""]),
    "--device": mostly(["cpu"], ["tpu", "cuda:9", "", "auto"]),
    "--format": mostly(["png", "npy", "tif"], ["jpg", ""]),
    "--suffix": mostly(["_x", "_clean"], ["", "a/b", "\n", "_denoised"]),
    "-o": mostly(["out.png", "out.npy", "out.tif", "d/o.png"], ["a.png", "out.jpg", "-", "o"]),
    "--output-dir": mostly(["od", "od/sub"], [".", "a.png"]),
    "--mask": mostly(["m.png"], ["nope.png", "a.png", "junk.png", "small.png"]),
    "--reference": mostly(["a.png"], ["nope.png", "small.png", "junk.png"]),
    "--save-fields": mostly(["f.png", "f_{stem}.png"], ["f.txt", "a.png"]),
    "--save-log": mostly(["l.json", "sub/l.json"], ["a.png", "od"]),
    "--compare": mostly(["k.png", "k_{stem}.tif"], ["a.png", "k.npy", "-", "k.txt"]),
    "--missing": mostly(["0.5", "0.1"], NUMBER_EDGES + ["1", "1.5"]),
    "--mask-out": mostly(["mo.png"], ["a.png", "mo.txt", "-"]),
}
FLAGS = [
    "--force",
    "--skip-existing",
    "-q",
    "-v",
    "--json",
    "--fail-fast",
    "--invert-mask",
    "-r",
    "--per-pixel",
]
OUT_SITUATIONS = st.sampled_from(
    ["none", "none", "file", "dir", "link_to_input", "dangling", "fifo"]
)


@st.composite
def cli_case(draw):
    command = draw(st.sampled_from(["denoise", "inpaint", "corrupt"]))
    argv = [command, "a.png"]
    for name in draw(st.lists(st.sampled_from(sorted(OPTIONS)), max_size=4, unique=True)):
        argv += [name, draw(OPTIONS[name])]
    argv += draw(st.lists(st.sampled_from(FLAGS), max_size=3, unique=True))
    if command == "corrupt" and "-o" not in argv:
        argv += ["-o", "n.npy"]
    if command == "corrupt" and "--sigma" not in argv and "--missing" not in argv:
        argv += ["--sigma", "10"]
    if command == "inpaint" and "--mask" not in argv and draw(st.booleans()):
        argv += ["--mask", "m.png"]
    if command != "corrupt" and "--epochs" not in argv:
        argv += ["--epochs", "2"]
    return argv, draw(OUT_SITUATIONS)


def _setup_cli_files(root: Path, situation: str) -> dict:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(root / "a.png")
    Image.fromarray((rng.random((12, 12)) < 0.3).astype(np.uint8) * 255).save(root / "m.png")
    Image.fromarray(rng.integers(0, 256, (5, 5), dtype=np.uint8)).save(root / "small.png")
    (root / "junk.png").write_bytes(b"junk")
    target = root / "a_denoised.png"
    if situation == "file":
        target.write_bytes(b"old")
    elif situation == "dir":
        target.mkdir()
    elif situation == "link_to_input":
        target.symlink_to(root / "a.png")
    elif situation == "dangling":
        target.symlink_to(root / "gone.png")
    elif situation == "fifo":
        os.mkfifo(target)
    return digest([root / n for n in ("a.png", "m.png", "small.png", "junk.png")])


def _check_cli(case):
    argv, situation = case
    with sandbox() as root:
        before = _setup_cli_files(root, situation)
        result = invoke(argv)
        check(result, before, argv)


@profile(SHORT["cli"])
@seed(FUZZ_SEED)
@given(case=cli_case())
def test_fuzz_cli_options(case):
    _check_cli(case)


@pytest.mark.slow
@profile(FUZZ_LONG)
@seed(FUZZ_SEED)
@given(case=cli_case())
def test_fuzz_cli_options_long(case):
    _check_cli(case)


# ---- 2. inputs ------------------------------------------------------------------------------------


@st.composite
def input_case(draw):
    files = draw(st.lists(image_bytes(), min_size=1, max_size=4))
    extra = draw(
        st.lists(
            st.sampled_from(["--force", "--skip-existing", "-q", "--fail-fast", "-r"]),
            max_size=2,
            unique=True,
        )
    )
    if "--force" in extra and "--skip-existing" in extra:
        extra.remove("--skip-existing")
    sigma = draw(
        st.sampled_from([[], ["--sigma", "25"], ["--sigma", "0.1"], ["--data-range", "1"]])
    )
    return files, extra + sigma, draw(st.booleans())


def _check_inputs(case, real: bool = False):
    files, extra, use_dir = case
    with sandbox() as root:
        (root / "in").mkdir()
        paths = []
        for i, (data, ext) in enumerate(files):
            p = root / "in" / f"f{i}{ext}"
            p.write_bytes(data)
            paths.append(p)
        before = digest(paths)
        tiny = tiny_cli(epochs=None, patch_size=3, chunk_size=64) if real else []
        inputs = ["in"] if use_dir else [str(p.relative_to(root)) for p in paths]
        argv = [
            "denoise",
            *inputs,
            "--output-dir",
            "out",
            "--json",
            "--epochs",
            "1",
            "--device",
            "cpu",
            *tiny,
            *extra,
        ]
        result = invoke(argv, real=real)
        records = check(result, before, argv)
        for r in records:
            out = root / "out" / (Path(r["input"]).stem + "_denoised.png")
            if r["status"] == "error":
                assert not out.exists(), r
            elif r["status"] == "ok":
                read_image(out)  # a complete, readable file
        leftovers = [p for p in root.rglob("*") if p.name.endswith(".part")]
        assert not leftovers


@profile(SHORT["inputs"])
@seed(FUZZ_SEED)
@given(case=input_case())
def test_fuzz_cli_inputs(case):
    _check_inputs(case)


@pytest.mark.slow
@profile(FUZZ_LONG)
@seed(FUZZ_SEED)
@given(case=input_case())
def test_fuzz_cli_inputs_long(case):
    _check_inputs(case)


@profile(SHORT["real"])
@seed(FUZZ_SEED)
@given(case=input_case())
def test_fuzz_cli_inputs_real_engine(case):
    """A few examples through the real library with a tiny configuration."""
    _check_inputs(case, real=True)


@pytest.mark.slow
@profile(max(1, FUZZ_LONG // 5))
@seed(FUZZ_SEED)
@given(case=input_case())
def test_fuzz_cli_inputs_real_engine_long(case):
    _check_inputs(case, real=True)


# ---- 3. loaders -----------------------------------------------------------------------------------


def _check_loader(item, shape):
    data, _ = item
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for load in (
            lambda: read_image(data),
            lambda: read_image(data, data_range=1.0),
            lambda: read_mask(data, shape),
        ):
            try:
                out = load()
            except ImageError as e:
                assert "\n" not in str(e) and str(e)
            else:
                arr = out[0] if isinstance(out, tuple) else out
                assert arr.dtype in (np.float32, np.bool_)
                if arr.dtype == np.float32:
                    assert np.isfinite(arr).all()


@profile(SHORT["loaders"])
@seed(FUZZ_SEED)
@given(item=image_bytes(), shape=SHAPES)
def test_fuzz_loaders(item, shape):
    _check_loader(item, shape)


@pytest.mark.slow
@profile(FUZZ_LONG)
@seed(FUZZ_SEED)
@given(item=image_bytes(), shape=SHAPES)
def test_fuzz_loaders_long(item, shape):
    _check_loader(item, shape)
