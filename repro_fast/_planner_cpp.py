"""The C++ planner (``repro_fast._C``, built from ``csrc/``) and the switch that picks it.

``REPRO_FAST_PLANNER=cpp|python`` chooses the planner path; unset means C++ when the extension
imports, else Python, with one warning. ``cpp`` when the extension is missing is an error (an
explicit request must not silently run the slow path). Only the byte-table path is in C++;
tokenizers without a byte table always use the Python planner (`repro_fast/segments.py`).

The C++ side takes the whole batch packed: int64 ids plus int64 ``cu_seqlens`` (response ``b``
is ``ids[cu[b]:cu[b + 1]]``), returns E, F and the candidates packed the same way, and runs
without the GIL.
"""

from __future__ import annotations

import importlib
import os
import warnings

import numpy as np

ENV_VAR = "REPRO_FAST_PLANNER"
CHOICES = ("cpp", "python")

_UNSET = object()
_extension = _UNSET  # the module, None (import failed), or _UNSET (not tried yet)
_import_error: BaseException | None = None
_warned = False


def extension():
    """``repro_fast._C``, or None if it did not build or import (tried once)."""
    global _extension, _import_error
    if _extension is _UNSET:
        try:
            _extension = importlib.import_module("repro_fast._C")
        except ImportError as exc:
            _extension, _import_error = None, exc
    return _extension


def _reset() -> None:
    """Forget the import result and the warning (tests simulate a missing extension)."""
    global _extension, _import_error, _warned
    _extension, _import_error, _warned = _UNSET, None, False


def requested() -> str | None:
    """The value of ``REPRO_FAST_PLANNER`` (None when unset or empty); invalid values raise."""
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if not value:
        return None
    if value not in CHOICES:
        raise ValueError(
            f"{ENV_VAR}={os.environ[ENV_VAR]!r}: expected one of {CHOICES} (or unset: cpp when built)"
        )
    return value


def use_cpp() -> bool:
    """Whether the byte-table planner runs in C++ now (reads the environment every call)."""
    global _warned
    choice = requested()
    if choice == "python":
        return False
    if extension() is not None:
        return True
    if choice == "cpp":
        raise ImportError(
            f"{ENV_VAR}=cpp but the C++ planner repro_fast._C did not import ({_import_error}); "
            "reinstall with `pip install -e .` (needs a C++17 compiler), or unset the variable"
        )
    if not _warned:
        _warned = True
        warnings.warn(
            f"repro_fast._C (the C++ planner) is not available ({_import_error}); planning runs "
            f"in Python, which is slow for large batches. Reinstall with `pip install -e .` "
            f"(needs a C++17 compiler), or set {ENV_VAR}=python to silence this.",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


def make_table(token_bytes: list[bytes], blank: np.ndarray):
    """A ``_C.TokenTable`` from per-token bytes and the blank table (copied once into C++)."""
    lengths = np.fromiter((len(b) for b in token_bytes), dtype=np.int64, count=len(token_bytes))
    offsets = np.zeros(len(token_bytes) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.frombuffer(b"".join(token_bytes), dtype=np.uint8)
    return extension().TokenTable(data, offsets, np.ascontiguousarray(blank, dtype=bool))


def pack(batch) -> tuple[np.ndarray, np.ndarray]:
    """A list of 1-D token-id sequences -> (packed int64 ids, int64 cu_seqlens)."""
    parts = [np.asarray(ids, dtype=np.int64).reshape(-1) for ids in batch]
    cu = np.zeros(len(parts) + 1, dtype=np.int64)
    if parts:
        np.cumsum([len(p) for p in parts], out=cu[1:])
        ids = np.concatenate(parts)
    else:
        ids = np.zeros(0, dtype=np.int64)
    return ids, cu


def select_points_batch(entropies, candidates, k: int, think_ends) -> list[list[int]]:
    """SPEC §4 for a batch, in C++: ``entropies[b]`` (float32 per response token),
    ``candidates[b]``, ``think_ends[b]`` -> the points ``P`` of every response. Same result as
    `repro_fast.rewards.select_points` on each."""
    ext = extension()
    if ext is None:
        raise ImportError(f"repro_fast._C did not import ({_import_error})")
    ent = [np.asarray(e, dtype=np.float32).reshape(-1) for e in entropies]
    ent_cu = np.zeros(len(ent) + 1, dtype=np.int64)
    np.cumsum([len(e) for e in ent], out=ent_cu[1:])
    flat = np.concatenate(ent) if ent else np.zeros(0, dtype=np.float32)
    cands, cand_cu = pack(candidates)
    points, points_cu = ext.select_points(
        flat, ent_cu, cands, cand_cu, np.asarray(think_ends, dtype=np.int64), int(k)
    )
    return [points[points_cu[b] : points_cu[b + 1]].tolist() for b in range(len(ent))]
