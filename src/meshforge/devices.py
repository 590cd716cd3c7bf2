"""Compute devices: one syntax and one ``auto`` rule for the CLI, the Python API and the service.

A device is ``auto``, ``cpu``, ``cuda`` (the first CUDA device) or ``cuda:N``. ``auto`` is the first CUDA
device when PyTorch is installed and sees one, else the CPU; the service's ``--devices auto`` is every
CUDA device PyTorch sees (one worker each), else the CPU. PyTorch is imported only when a CUDA device or
``auto`` has to be resolved.
"""

from __future__ import annotations

import gc
import importlib.util
import re
import sys

from .errors import BackendError, InputError

#: the device spellings every entry point accepts, for help texts and errors
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"
_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def check_device(spec: str) -> str:
    """The device spelling, checked without importing anything: ``"cuda"`` becomes ``"cuda:0"``.

    Raises:
        InputError: not one of ``auto``, ``cpu``, ``cuda``, ``cuda:N``.
    """
    value = str(spec).strip().lower()
    if not _PATTERN.match(value):
        raise InputError(f"unknown device {spec!r} (choices: {DEVICE_CHOICES})")
    return "cuda:0" if value == "cuda" else value


def cuda_count() -> int:
    """How many CUDA devices PyTorch sees (0 without PyTorch or with a broken CUDA set-up)."""
    if importlib.util.find_spec("torch") is None:
        return 0
    try:
        import torch

        return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install: run on the CPU rather than not at all
        return 0


def resolve_device(spec: str) -> str:
    """One concrete device for ``spec``: ``"cpu"`` or ``"cuda:N"``.

    Raises:
        InputError: an unknown spelling.
        BackendError: a CUDA device was asked for that PyTorch does not see.
    """
    value = check_device(spec)
    if value == "cpu":
        return value
    count = cuda_count()
    if value == "auto":
        return "cuda:0" if count else "cpu"
    index = int(value.split(":")[1])
    if index >= count:
        seen = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise BackendError(f"device {value!r} was requested but PyTorch sees {seen}")
    return value


def resolve_devices(specs: tuple[str, ...]) -> tuple[str, ...]:
    """The service's worker devices: ``("auto",)`` is every CUDA device PyTorch sees (else ``("cpu",)``);
    other specs are checked and kept in order (``cuda`` → ``cuda:0``).

    Raises:
        InputError: an unknown spelling, or ``auto`` combined with other devices.
    """
    values = tuple(check_device(s) for s in specs)
    if "auto" in values:
        if len(values) > 1:
            raise InputError("auto cannot be combined with other devices")
        return tuple(f"cuda:{i}" for i in range(cuda_count())) or ("cpu",)
    return values


def free_memory() -> None:
    """Collect garbage and hand PyTorch's cached CUDA blocks back to the driver (after an out-of-memory
    error, or before a model is loaded); nothing when torch was never imported. Best effort: never raises."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except Exception:  # pragma: no cover - best effort
            pass
