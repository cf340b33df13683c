"""Python side of the C++ planner (``repro_fast._C``, built from ``csrc/``).

The C++ side takes a list of int64 responses (read in place), returns E, F and the candidates
packed with int64 ``cu_seqlens`` (response ``b``'s are ``cands[cu[b]:cu[b + 1]]``), and runs
without the GIL. Whether it runs is decided once per scorer by `repro_fast.dispatch`.
"""

from __future__ import annotations

import numpy as np

from repro_fast.dispatch import cpp_extension


def make_table(token_bytes: list[bytes], blank: np.ndarray):
    """A ``_C.TokenTable`` from per-token bytes and the blank table (copied once into C++)."""
    lengths = np.fromiter((len(b) for b in token_bytes), dtype=np.int64, count=len(token_bytes))
    offsets = np.zeros(len(token_bytes) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    data = np.frombuffer(b"".join(token_bytes), dtype=np.uint8)
    return cpp_extension().TokenTable(data, offsets, np.ascontiguousarray(blank, dtype=bool))


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
