"""Fixtures for the benchmark files (`pytest benchmarks/`; not part of the unit test suite,
whose testpaths is `tests/`).

Presets are built once per session; the GPU preset only when CUDA is available.
"""

from __future__ import annotations

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (HERE, ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import presets  # noqa: E402

_CACHE: dict = {}


def _preset(name: str):
    if name not in _CACHE:
        _CACHE.clear()  # one model alive at a time
        _CACHE[name] = presets.get_preset(name)
    return _CACHE[name]


@pytest.fixture(scope="session", params=["cpu", "real", "long", "gpu", "gpu_real", "gpu_long"])
def preset(request):
    """The CPU presets (`cpu`, `real`, `long`), and the GPU presets where CUDA is available
    (else skipped)."""
    if request.param.startswith("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("gpu preset: no CUDA device")
    return _preset(request.param)
