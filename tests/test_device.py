"""--device resolution: auto/cpu/cuda/cuda:N, with clear one-line errors."""

from __future__ import annotations

import pytest
import torch

from evodenoise.device import resolve_device


def test_cpu_and_case_and_spaces():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_without_gpu_is_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_auto_with_gpu_is_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    empty = torch.empty
    monkeypatch.setattr(torch, "zeros", lambda *a, device=None, **k: empty(*a, **k))  # works
    assert resolve_device("auto") == torch.device("cuda")


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "cuda:-1", "tpu", "", "mps"])
def test_unknown_spec(spec):
    with pytest.raises(ValueError, match="unknown device") as e:
        resolve_device(spec)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_gpu(monkeypatch, spec):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device(spec)


def test_broken_driver_counts_as_no_gpu(monkeypatch):
    def boom():
        raise RuntimeError("driver too old")

    monkeypatch.setattr(torch.cuda, "is_available", boom)
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_index(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        resolve_device("cuda:2")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_gpu():
    dev = resolve_device("cuda:0")
    assert torch.zeros(1, device=dev).device.type == "cuda"
