"""Fixtures for the op tests.

Triton under the CPU interpreter: `triton.jit` decides between compiled and interpreted kernels
when a kernel is decorated, i.e. when `repro_fast.ops.triton_logprob_entropy` is first imported.
That import is lazy (first Triton call), so setting the variable here, when pytest imports this
conftest, is early enough. It is only set when there is no CUDA device: on a GPU machine the
CUDA kernels must stay compiled (the interpreter tests then skip).
"""

import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def nan_filled_empty(monkeypatch):
    """Fresh float buffers start as NaN, so a kernel that leaves part of its output unwritten
    fails the comparison instead of passing on leftover zeros (flash-linear-attention habit)."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def fill(t):
        if t.is_floating_point():
            t.fill_(math.nan)
        return t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(real_empty_like(*a, **k)))
    yield


@pytest.fixture
def backend_env(monkeypatch):
    """Set REPRO_FAST_KERNELS for one test (the ops read it when backend=None)."""

    def set_backend(value):
        if value is None:
            monkeypatch.delenv("REPRO_FAST_KERNELS", raising=False)
        else:
            monkeypatch.setenv("REPRO_FAST_KERNELS", value)

    return set_backend
