"""The Python API fails like a library: a TypeError or ValueError of one line that names the
argument, raised before any work (nothing trained, nothing written)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evodenoise import denoise, get_preset, inpaint
from evodenoise.device import EngineWarning, resolve_device

IMG = np.random.default_rng(0).random((16, 16)).astype(np.float32)
TINY = get_preset("fast").replace(
    epochs=1, min_visits=0, n_states=4, n_latents=8, hidden=(8,), n_parents=2, n_children=2,
    patch_size=4, grad_states=2,
)  # fmt: skip


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(sigma=1e300), ValueError, "sigma"),
        (dict(sigma=-1.0), ValueError, "sigma"),
        (dict(sigma=float("nan")), ValueError, "sigma"),
        (dict(sigma=True), TypeError, "sigma"),
        (dict(sigma="25"), TypeError, "sigma"),
        (dict(device="gpu"), ValueError, "device"),
        (dict(max_memory=-5), ValueError, "max_memory"),
        (dict(max_memory="1G"), TypeError, "max_memory"),
        (dict(config={"epochs": 1}), TypeError, "config"),
        (dict(config="no-such-preset"), ValueError, "preset"),
        (dict(seed=-1), ValueError, "seed"),
        (dict(seed=1.5), TypeError, "seed"),
        (dict(callback=3), TypeError, "callback"),
    ],
)
def test_bad_arguments_raise_one_line_naming_them(kwargs, error, name):
    calls = []
    kwargs = {"config": TINY, "callback": calls.append, **kwargs}
    with pytest.raises(error) as e:
        denoise(IMG, **kwargs)
    message = str(e.value)
    assert name in message and "\n" not in message
    assert calls == []  # before any work: no epoch ran


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_value_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        denoise(IMG, 0.1, config=TINY, device="cuda")


def test_rgba_with_only_alpha_observed_is_refused():
    rgba = np.random.default_rng(1).random((16, 16, 4)).astype(np.float32)
    mask = np.zeros(rgba.shape, bool)
    mask[..., :3] = True
    with pytest.raises(ValueError, match="every colour value"):
        inpaint(rgba, mask, config=TINY)


def test_flat_image_with_sigma_learned_raises_no_warning():
    out, result = denoise(np.zeros((16, 16), np.float32), config=TINY.replace(patch_size=0))
    assert np.isfinite(out).all() and np.isfinite(result.sigma)


def test_unusable_cuda_falls_back_to_the_cpu_with_a_warning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def broken(*args, device=None, **kwargs):
        if device == "cuda":
            raise RuntimeError("CUDA driver version is insufficient\nsecond line")
        return torch.empty(*args, **kwargs)

    monkeypatch.setattr(torch, "zeros", broken)
    with pytest.warns(EngineWarning, match="unusable .*insufficient\\); using the CPU"):
        assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(
    "bad",
    [
        dict(hidden="64"),
        dict(epochs=2.0),
        dict(patch_size=4.0),
        dict(n_states=True),
        dict(batch_size=32.5),
        dict(lr_max=float("inf")),
        dict(standardize="no"),
        dict(color=3),
    ],
)
def test_config_fields_of_the_wrong_kind_are_refused(bad):
    from evodenoise import Config

    with pytest.raises(ValueError, match=next(iter(bad))):
        Config(**bad)


def test_unknown_command_is_refused():
    from evodenoise.presets import resolve_config

    with pytest.raises(ValueError, match="unknown command"):
        resolve_config(command="bogus")


def test_a_mask_leaving_almost_nothing_observed_is_refused():
    mask = np.ones(IMG.shape, bool)
    mask[3, 4] = False  # one observed value
    with pytest.raises(ValueError, match="leaves 1 observed value.*one 4x4 patch"):
        inpaint(IMG, mask, config=TINY)
