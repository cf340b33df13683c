"""The two ways to compute ``J`` and the token statistics (SPEC §2, §4), behind one `Backend`
protocol (`base.py`): `naive.py`, one forward per scored prefix (the reference and the baseline),
and `fast.py`, one pass over each chain of thought whose KV cache every answer copy reuses
(`attention.py` plugs the prefix-limited kernel into transformers for its extend step)."""

from __future__ import annotations

from repro_fast.backends.base import Backend, Item
from repro_fast.backends.fast import FastBackend
from repro_fast.backends.naive import NaiveBackend
from repro_fast.model import ModelAdapter

__all__ = ["Backend", "Item", "FastBackend", "NaiveBackend", "BACKENDS", "build_backend"]

BACKENDS = ("auto", "naive", "fast")


def build_backend(name: str, adapter: ModelAdapter, token_budget: int, kernels: str) -> Backend:
    """The backend called ``name`` (``"naive"`` or ``"fast"``) over ``adapter``, its micro-batches
    within ``token_budget`` tokens; ``kernels``: ``"triton"`` or ``"torch"`` (fast backend)."""
    if name == "naive":
        return NaiveBackend(adapter, token_budget)
    return FastBackend(adapter, token_budget, kernels)
