"""What the machine computes with: the device, the numeric precision, and glibc's allocator.

The engine, training, the model loader, the widgets and the CLI all ask here, so "cuda asked for
on a laptop" or "bf16 on a CPU without it" is answered one way everywhere. Inference and training
choose their ``auto`` precision differently on purpose (:func:`resolve_precision`,
:func:`resolve_training_precision`), from the same machine facts.
"""

from __future__ import annotations

import ctypes
import logging
import sys

import torch

from napari_medseg.core.errors import InferenceError, ModelError

log = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_MALLOC_TUNED = False


def resolve_device(device: str | torch.device, error: type[Exception] = InferenceError) -> torch.device:
    """The device asked for if present, else the CPU with a logged warning. A name that is no
    device raises ``error`` (the model loader raises its :class:`ModelError`)."""
    name = str(device).lower()
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise error(f"device {device!r} is not a device name: expected one of {', '.join(DEVICES)} (cuda:1 ...)")
    if kind == "cuda" and not torch.cuda.is_available():
        log.warning("device 'cuda' asked for, but no CUDA device is available; running on the CPU")
        return torch.device("cpu")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        log.warning("device 'mps' asked for, but Apple MPS is not available; running on the CPU")
        return torch.device("cpu")
    return torch.device(name)


def cpu_has_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is slower.

    Read from ``/proc/cpuinfo``; where that is missing (macOS, Windows) the answer is False: Apple
    silicon has bf16 in its NEON units, but torch's CPU path for it is slow.
    """
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def tune_malloc() -> bool:
    """Raise glibc's mmap and trim thresholds once, so big tensors reuse heap memory.

    Each large activation otherwise is a fresh ``mmap`` whose pages fault in one by one and are
    returned on free; PERFORMANCE.md measured 1.5-7x slower runs from that alone. Only on Linux
    with glibc; elsewhere nothing happens.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = libc.mallopt(m_mmap_threshold, 1 << 30) == 1
        ok = libc.mallopt(m_trim_threshold, 2 << 30) == 1 and ok
    except (OSError, AttributeError):
        return False
    _MALLOC_TUNED = ok
    if ok:
        log.debug("glibc mallopt: mmap threshold 1 GiB, trim threshold 2 GiB")
    return ok


def _check_precision(precision: str, error: type[Exception]) -> None:
    if precision not in PRECISIONS:
        raise error(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for inference on ``device`` (``auto``: fastest safe choice:
    bf16 on a CPU that has it natively, fp16 on CUDA, else fp32)."""
    _check_precision(precision, InferenceError)
    if device.type == "cpu":
        if precision == "auto":
            return "bf16" if cpu_has_bf16() else "fp32"
        if precision == "fp16":
            log.warning("precision fp16 is for GPUs; the CPU runs fp32")
            return "fp32"
        if precision == "bf16" and not cpu_has_bf16():
            log.warning("this CPU has no native bfloat16 (AVX512-BF16/AMX): bf16 will be slower than fp32")
        return precision
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    return precision


def resolve_training_precision(precision: str, device: torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for training (``auto``: bf16 where it is native, else fp32;
    on CUDA fp16 only where bf16 is missing, as fp16 gradients need loss scaling)."""
    _check_precision(precision, ModelError)
    if device.type == "cpu":
        if precision == "fp16":
            log.warning("precision fp16 is for GPUs; training on the CPU in fp32")
            return "fp32"
        if precision == "auto":
            return "bf16" if cpu_has_bf16() else "fp32"
        return precision
    if device.type == "cuda" and precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type != "cuda" and precision == "auto":
        return "fp32"
    return precision
