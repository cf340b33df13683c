"""Which implementation runs: kernels (Triton or torch) and planner (C++ or Python), resolved once per
scorer from ``kernels=`` / ``planner=``; ``REPRO_FAST_KERNELS`` / ``REPRO_FAST_PLANNER`` set their
defaults (auto: Triton for CUDA tensors, C++ when ``repro_fast._C`` imports). ``TRITON_INTERPRET=1``
runs Triton kernels on CPU (tests; set it before the first kernel is built)."""

from __future__ import annotations

import importlib
import os
import warnings

from repro_fast.config import check_choice

KERNELS_ENV = "REPRO_FAST_KERNELS"
PLANNER_ENV = "REPRO_FAST_PLANNER"
KERNEL_CHOICES = ("auto", "triton", "torch")
PLANNER_CHOICES = ("auto", "cpp", "python")


def triton_interpret() -> bool:
    """True when Triton runs its kernels in the interpreter (``TRITON_INTERPRET=1``, CPU tests)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def head_programs_per_sm(default: int) -> int:
    """``REPRO_FAST_HEAD_PROGRAMS_PER_SM``, a tuning knob of the head kernel (benchmarks), or ``default``."""
    value = os.environ.get("REPRO_FAST_HEAD_PROGRAMS_PER_SM", "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise ValueError("environment variable REPRO_FAST_HEAD_PROGRAMS_PER_SM: expected an int >= 1, "
                         f"got {value!r}")
    return int(value)


def _choice(value, env: str, choices: tuple[str, ...], name: str) -> str:
    if value is None:
        value, name = os.environ.get(env, "").strip().lower() or "auto", f"environment variable {env}"
    return check_choice(value, name, choices)


def resolve_kernels(value: str | None, device, name: str = "kernels") -> str:
    """``"triton"`` or ``"torch"`` for tensors on ``device``."""
    choice = _choice(value, KERNELS_ENV, KERNEL_CHOICES, name)
    if choice == "auto":
        return "triton" if getattr(device, "type", device) == "cuda" else "torch"
    if choice == "triton" and getattr(device, "type", device) != "cuda" and not triton_interpret():
        raise RuntimeError(f"{name}='triton' on {device} tensors needs TRITON_INTERPRET=1, set before the "
                           "first Triton kernel is built (the interpreter); use 'torch' or 'auto' otherwise")
    return choice


_UNSET = object()
_extension = _UNSET
_extension_error: BaseException | None = None


def cpp_extension():
    """``repro_fast._C`` (the C++ planner), or None when it did not build (tried once)."""
    global _extension, _extension_error
    if _extension is _UNSET:
        try:
            _extension = importlib.import_module("repro_fast._C")
        except ImportError as exc:
            _extension, _extension_error = None, exc
    return _extension


def resolve_planner(value: str | None, name: str = "planner") -> str:
    """``"cpp"`` or ``"python"``; ``auto`` falls back to Python with a warning."""
    choice = _choice(value, PLANNER_ENV, PLANNER_CHOICES, name)
    if choice == "python":
        return choice
    if cpp_extension() is not None:
        return "cpp"
    if choice == "cpp":
        raise ImportError(f"{name}='cpp' but the C++ planner repro_fast._C did not import "
                          f"({_extension_error}); reinstall with `pip install -e .` (needs a C++17 "
                          "compiler), or use 'python'")
    warnings.warn(f"repro_fast._C (the C++ planner) is not available ({_extension_error}); planning runs in "
                  "Python, which is slow for large batches. Reinstall with `pip install -e .` (needs a C++17 "
                  "compiler), or pass planner='python' to silence this.", RuntimeWarning, stacklevel=3)
    return "python"
