"""The device and precision rules every caller shares (core/machine.py)."""

import logging

import pytest
import torch

from napari_medseg.core.errors import InferenceError, ModelError
from napari_medseg.core.machine import (
    cpu_has_bf16,
    resolve_device,
    resolve_precision,
    resolve_training_precision,
    tune_malloc,
)

CPU = torch.device("cpu")


def test_missing_devices_fall_back_to_the_cpu_with_a_message(caplog, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING):
        assert resolve_device("cuda").type == "cpu"
        assert resolve_device("CUDA:1").type == "cpu"
    assert "no CUDA device" in caplog.text
    assert resolve_device("cpu") == CPU


def test_a_name_that_is_no_device_raises_the_callers_error():
    with pytest.raises(InferenceError, match="'gpu' is not a device name"):
        resolve_device("gpu")
    with pytest.raises(ModelError, match="expected one of cpu, cuda, mps"):
        resolve_device("tpu", ModelError)


def test_precision_on_the_cpu_for_inference_and_training(caplog):
    native = "bf16" if cpu_has_bf16() else "fp32"
    assert resolve_precision("auto", CPU) == native
    assert resolve_training_precision("auto", CPU) == native
    with caplog.at_level(logging.WARNING):
        assert resolve_precision("fp16", CPU) == "fp32"
        assert resolve_training_precision("fp16", CPU) == "fp32"
    assert "fp16 is for GPUs" in caplog.text
    assert resolve_precision("fp32", CPU) == resolve_training_precision("fp32", CPU) == "fp32"


def test_auto_precision_on_cuda_differs_on_purpose(monkeypatch):
    cuda = torch.device("cuda")
    assert resolve_precision("auto", cuda) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_training_precision("auto", cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_training_precision("auto", cuda) == "fp16"


def test_an_unknown_precision_names_the_choices():
    with pytest.raises(InferenceError, match="'half'.*auto, fp32, bf16, fp16"):
        resolve_precision("half", CPU)
    with pytest.raises(ModelError, match="'fp8'"):
        resolve_training_precision("fp8", CPU)


def test_tune_malloc_is_idempotent():
    assert tune_malloc() == tune_malloc()
