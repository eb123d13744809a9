"""Shared test setup."""

import numpy as np
import pytest
import torch

from evodenoise import restore
from evodenoise.config import Config
from evodenoise.presets import get_preset


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tests run many tiny tensor ops: on a shared 2-core machine a second intra-op thread
    mostly waits at barriers (measured 2-25x slower), so the suite uses one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_cli(epochs: int | None = 1, patch_size: int = 4, **settings) -> list[str]:
    """Command-line options of a tiny model (a real run in a second or so): on the CPU,
    ``epochs`` epochs (None: the preset's), ``--set`` for each setting."""
    sets = dict(n_states=4, n_latents=8, hidden=8, n_parents=2, n_children=2,
                patch_size=patch_size, grad_states=2, **settings)  # fmt: skip
    head = ["--device", "cpu"] + ([] if epochs is None else ["--epochs", str(epochs)])
    return head + [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture
def in_tmp_path(tmp_path, monkeypatch):
    """Run the test inside its own temporary folder (relative paths land there)."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def engine(monkeypatch):
    """A stand-in for the engine (:class:`FakeEngine`): CLI tests run in milliseconds."""
    fake = FakeEngine()
    monkeypatch.setattr(restore, "denoise", fake.denoise)
    monkeypatch.setattr(restore, "inpaint", fake.inpaint)
    return fake


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run only where a CUDA device exists."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


class FakeEngine:
    """Stands in for evodenoise.restore.denoise / inpaint with the same contract."""

    def __init__(self):
        self.calls: list[dict] = []
        self.gain = None  # the last call's gain
        self.raise_on: dict[str, BaseException] = {}

    def _run(self, kind, image, mask, sigma, config, seed, device, callback):
        image = np.asarray(image)
        config = config if isinstance(config, Config) else get_preset(config)
        self.calls.append(
            dict(
                kind=kind,
                image=image,
                mask=mask,
                sigma=sigma,
                config=config,
                seed=seed,
                device=str(device),
            )
        )
        exc = self.raise_on.get(kind) or self.raise_on.get("any")
        if exc is not None:
            raise exc
        p = config.patch_size or 4  # 0: automatic, at least 4x4
        if image.shape[0] < p or image.shape[1] < p:
            raise ValueError(
                f"image of {image.shape[1]}x{image.shape[0]} pixels is smaller "
                f"than the {p}x{p} patch"
            )
        if sigma is not None and not sigma > 0:
            raise ValueError("sigma must be > 0")
        if mask is not None and mask.shape not in (image.shape, image.shape[:2]):
            raise ValueError("mask shape mismatch")
        s = sigma if sigma is not None else 0.1
        log = []
        for e in range(1, config.epochs + 1):
            info = dict(
                epoch=e,
                epochs=config.epochs,
                free_energy=-100.0 + e,
                sigma=s,
                lr=1e-3,
                mean_active=0.5,
            )
            log.append(dict(info))
            if callback is not None:
                callback(info)
        out = np.clip(image, 0, 1).astype(np.float32)
        fields = (
            np.random.default_rng(0).standard_normal((5, p, p) + image.shape[2:]).astype(np.float32)
        )
        return out, restore.Result(
            config=config,
            seed=seed,
            device=str(device),
            sigma=s,
            seconds=0.01,
            free_energy=[x["free_energy"] for x in log],
            log=log,
            fields=fields,
        )

    def denoise(
        self,
        image,
        sigma=None,
        *,
        config="fast",
        seed=0,
        device="cpu",
        mask=None,
        callback=None,
        max_memory=None,
        gain=None,
    ):
        self.gain = gain
        return self._run("denoise", image, mask, sigma, config, seed, device, callback)

    def inpaint(
        self,
        image,
        mask,
        *,
        sigma=None,
        config="inpaint",
        seed=0,
        device="cpu",
        callback=None,
        max_memory=None,
        gain=None,
    ):
        self.gain = gain
        return self._run("inpaint", image, mask, sigma, config, seed, device, callback)
