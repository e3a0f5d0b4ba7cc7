import random

import numpy as np
import pytest
import torch

from mlcourse import runtime


def test_device_override(monkeypatch):
    monkeypatch.setenv("MLCOURSE_DEVICE", "cpu")
    assert runtime.device() == torch.device("cpu")


def test_device_rejects_unknown(monkeypatch):
    monkeypatch.setenv("MLCOURSE_DEVICE", "tpu")
    with pytest.raises(ValueError, match="'tpu' is not a device"):
        runtime.device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_device_cuda_requested_without_gpu(monkeypatch):
    monkeypatch.setenv("MLCOURSE_DEVICE", "cuda")
    with pytest.raises(RuntimeError, match="sees no CUDA GPU"):
        runtime.device()


def test_device_default_prefers_cuda(monkeypatch):
    monkeypatch.delenv("MLCOURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert runtime.device().type == expected


def test_seed_makes_every_library_repeat():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    runtime.seed(3)
    first = draw()
    runtime.seed(3)
    assert draw() == first
    runtime.seed(4)
    assert draw() != first


def test_seed_rejects_negative():
    with pytest.raises(ValueError, match="non-negative int"):
        runtime.seed(-1)


@pytest.mark.parametrize("value,expected", [("1", True), ("0", False), ("", False), ("true", True)])
def test_quick_and_scale(monkeypatch, value, expected):
    monkeypatch.setenv("MLCOURSE_QUICK", value)
    assert runtime.quick() is expected
    assert runtime.scale(quick="q", full="f") == ("q" if expected else "f")


def test_quick_rejects_garbage(monkeypatch):
    monkeypatch.setenv("MLCOURSE_QUICK", "maybe")
    with pytest.raises(ValueError, match="MLCOURSE_QUICK='maybe'"):
        runtime.quick()


def test_data_and_cache_dirs(monkeypatch, tmp_path):
    monkeypatch.setenv("MLCOURSE_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("MLCOURSE_CACHE", str(tmp_path / "c"))
    assert runtime.data_dir() == tmp_path / "d"
    assert runtime.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MLCOURSE_DATA")
    assert runtime.data_dir() == tmp_path / "c" / "data"
