"""SPEC §1 and §3 on the host: think-end bounds and segment-start candidates, both defined on
decoded text. Byte-level BPE tokenizers use a per-token byte table (O(n) per response), others
decode every prefix (exact, O(n^2)). The C++ twin (``repro_fast._C``, from ``csrc/``) plans
byte-level batches in one call; this module is the fallback and the reference."""

from __future__ import annotations

import re
import warnings
import weakref
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from repro_fast.config import RePROConfig
from repro_fast.dispatch import cpp_extension

_RAW = {"skip_special_tokens": False, "clean_up_tokenization_spaces": False}


def decode(tokenizer, ids) -> str:
    """The text of token ids, exactly as SPEC §1 defines it."""
    return tokenizer.decode(list(ids), **_RAW)


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's reversible byte <-> printable-unicode map (byte-level BPE pieces use it)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    others = [b for b in range(256) if b not in printable]
    return {chr(b): b for b in printable} | {chr(256 + i): b for i, b in enumerate(others)}


class TokenizerTables:
    """Per-tokenizer tables (see `tables_for`). ``blank[id]``: the token's text alone is whitespace
    or empty; ``token_bytes[id]``: the UTF-8 bytes it adds to a decoded sequence (None unless
    byte-level). Ids past ``vocab_size`` (Qwen pads its embedding) have no text: empty, blank."""

    def __init__(self, tokenizer):
        self.vocab_size = len(tokenizer)
        token_text = tokenizer.batch_decode([[i] for i in range(self.vocab_size)], **_RAW)
        self.blank = np.array([t.strip() == "" for t in token_text], dtype=bool)
        self.token_bytes = _byte_table(tokenizer, token_text)
        self.cpp_tables: dict[int, object] = {}  # the C++ table over some number of rows (`Planner`)


def _byte_table(tokenizer, token_text: list[str]) -> list[bytes] | None:
    """Each id's bytes, or None unless the tokenizer is byte-level with a concatenative decode. A
    sequence's text is then the UTF-8 decoding of its joined bytes, and a suffix or marker of whole
    characters shows up in the text exactly where its bytes do (it starts with a lead or ASCII
    byte, which no preceding invalid sequence can swallow)."""
    alphabet = _byte_level_alphabet()
    added = getattr(tokenizer, "added_tokens_decoder", {})
    added = {i: getattr(t, "content", str(t)) for i, t in added.items()}
    try:
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(token_text))))
    except Exception:  # noqa: BLE001 - any failure just means "not byte-level"
        return None
    table: list[bytes] = []
    for i, piece in enumerate(pieces):
        if i in added:
            table.append(added[i].encode("utf-8"))
        elif piece is None or any(ch not in alphabet for ch in piece):
            return None
        else:
            table.append(bytes(alphabet[ch] for ch in piece))
    # Validate against the tokenizer itself: every single token, and a few sequences that mix
    # multi-byte characters split across tokens with special tokens.
    if any(b.decode("utf-8", errors="replace") != text for b, text in zip(table, token_text)):
        return None
    rng = np.random.default_rng(0)
    probes = [tokenizer.encode(s, add_special_tokens=False) for s in _PROBE_TEXTS]
    probes += [rng.integers(0, len(table), size=48).tolist() for _ in range(8)]
    joined = (b"".join(table[t] for t in ids).decode("utf-8", errors="replace") for ids in probes)
    return table if all(text == decode(tokenizer, ids) for text, ids in zip(joined, probes)) else None


_PROBE_TEXTS = (
    "Step 1.\n\nWait, 7 + 8 = 15?\n  \n\nSo x = 3.</think>\\boxed{42}",
    "Ünïcödé ☃ 数学 🙂 done.\n\n",
    " leading space\tand\ttabs\r\n\r\nend",
)

_TABLE_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_TABLE_CACHE_BY_ID: dict[int, TokenizerTables] = {}


def tables_for(tokenizer) -> TokenizerTables:
    """The cached `TokenizerTables` of a tokenizer (rebuilt if its vocabulary grew)."""
    try:
        cache, key = _TABLE_CACHE, tokenizer
        tables = cache.get(key)
    except TypeError:  # not weak-referenceable
        cache, key = _TABLE_CACHE_BY_ID, id(tokenizer)
        tables = cache.get(key)
    if tables is None or tables.vocab_size != len(tokenizer):
        tables = TokenizerTables(tokenizer)
        if tables.token_bytes is None:
            warnings.warn(f"{type(tokenizer).__name__} is not byte-level (or its decode is not "
                          "concatenative): segment planning decodes every prefix, which is exact but "
                          "O(n^2) per response.", stacklevel=3)
        cache[key] = tables
    return tables


@dataclass
class Plan:
    """Host-side plan of one response (SPEC §1, §3): think bounds and candidate starts."""

    think_begin: int  # E: candidates live in [1, E)
    think_end: int  # F: the last scored prefix length
    candidates: np.ndarray  # int64, ascending

    def num_points(self, k: int) -> int:
        """``|P| = m + 1``, known before any forward pass: 0, the ``min(k, #candidates)``
        selected starts and ``F`` when the response is not empty never coincide, since every
        candidate lies in ``[1, E)`` and ``E < F`` (or ``E = F = n``)."""
        return 1 + min(k, len(self.candidates)) + (self.think_end > 0)


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _first_prefix_holding(tokenizer, ids: np.ndarray, marker: str, pos: int) -> int:
    """SPEC §1 ``F``: the smallest j whose prefix text holds the whole occurrence of ``marker`` at
    text offset ``pos`` (its first in the response); a bisection, the test being monotone in j."""
    def holds(j: int) -> bool:
        return decode(tokenizer, ids[:j]).find(marker) == pos

    return 1 + bisect_left(range(1, len(ids)), True, key=holds)


def _token_at_text_offset(tokenizer, ids: np.ndarray, pos: int, finish: int) -> int:
    """SPEC §1 ``E``: the token in which text offset ``pos`` lies, i.e. the last i < ``finish``
    whose prefix text ends at or before ``pos``; a bisection over the prefix text lengths."""
    return bisect_right(range(finish), pos, key=lambda i: len(decode(tokenizer, ids[:i]))) - 1


class Planner:
    """Computes `Plan`s for one tokenizer and config; reuse it across calls. ``rows``: ids in
    ``[0, rows)`` may occur (the model's embedding rows); ``use_cpp``: plan byte-level batches in C++."""

    def __init__(self, tokenizer, config: RePROConfig, rows: int | None = None, use_cpp: bool = False):
        self.tokenizer = tokenizer
        self.config = config
        self.tables = tables_for(tokenizer)
        self.rows = max(rows or 0, self.tables.vocab_size)
        self.use_cpp = use_cpp
        extra = self.rows - self.tables.vocab_size
        self.blank = np.concatenate([self.tables.blank, np.ones(extra, dtype=bool)])
        self._bytes = None if self.tables.token_bytes is None else self.tables.token_bytes + [b""] * extra
        self.marker = config.think_end
        self.marker_id = None
        if self.marker is not None and config.think_end_mode == "token_id":
            # The authors' code: the first id of the encoded marker, a fragment ("</") when the
            # marker is several tokens (SPEC §8).
            ids = _encode(tokenizer, self.marker)
            if not ids:
                raise ValueError(f"RePROConfig.think_end: {self.marker!r} encodes to no tokens")
            self.marker_id = ids[0]
        text_marker = self.marker is not None and self.marker_id is None
        self._marker_bytes = self.marker.encode("utf-8") if text_marker else None
        self.boundary_ids = None
        if config.boundary_mode == "token_id":
            firsts = [_encode(tokenizer, s)[:1] for s in config.boundary_suffixes]
            self.boundary_ids = np.array(sorted({f[0] for f in firsts if f}), dtype=np.int64)
        self._suffix_bytes = [s.encode("utf-8") for s in config.boundary_suffixes]
        # A lookahead regex per suffix finds its overlapping occurrences ("\n\n\n" holds two
        # "\n\n"). One regex per suffix, not one alternation: an alternation reports only the
        # first alternative that matches at a position, and would miss "ab" after "a" matched.
        self._suffix_res = [re.compile(b"(?=" + re.escape(s) + b")") for s in self._suffix_bytes]
        self._cpp = None  # the C++ planner, built on first use

    def think_bounds(self, ids: np.ndarray, offsets: np.ndarray | None) -> tuple[int, int]:
        """SPEC §1: (E, F) of one response; ``offsets[i]`` = bytes of ``y[0..i)`` (byte-level only)."""
        n = len(ids)
        if self.marker is None or n == 0:
            return n, n
        if self.marker_id is not None:
            hits = np.flatnonzero(ids == self.marker_id)
            return (int(hits[0]), int(hits[0]) + 1) if len(hits) else (n, n)
        if offsets is None:
            return self._think_bounds_exact(ids)
        pos = self._joined(ids).find(self._marker_bytes)
        if pos < 0:
            return n, n
        # E: the token whose bytes contain byte `pos`; F: first j with offsets[j] >= marker end.
        begin = int(np.searchsorted(offsets, pos, side="right")) - 1
        return begin, int(np.searchsorted(offsets, pos + len(self._marker_bytes), side="left"))

    def _think_bounds_exact(self, ids: np.ndarray) -> tuple[int, int]:
        """SPEC §1 (E, F) by decoding prefixes (tokenizers without a byte table)."""
        tok, marker, n = self.tokenizer, self.marker, len(ids)
        pos = decode(tok, ids).find(marker)
        if pos < 0:
            return n, n
        finish = _first_prefix_holding(tok, ids, marker, pos)
        return _token_at_text_offset(tok, ids, pos, finish), finish

    def candidates(self, ids: np.ndarray, think_begin: int, offsets: np.ndarray | None) -> np.ndarray:
        """SPEC §3: the candidate segment starts in ``[1, E)``, ascending."""
        idx = np.arange(1, max(think_begin, 1), dtype=np.int64)
        if self.boundary_ids is not None:
            return idx[np.isin(ids[idx - 1], self.boundary_ids)]
        if offsets is not None:
            data = self._joined(ids[:think_begin])
            ends = [m.start() + len(s) for s, pattern in zip(self._suffix_bytes, self._suffix_res)
                    for m in pattern.finditer(data)]
            return idx[np.isin(offsets[idx], np.array(ends, dtype=np.int64)) & ~self.blank[ids[idx]]]
        suffixes = tuple(self.config.boundary_suffixes)
        keep = [decode(self.tokenizer, ids[:i]).endswith(suffixes) and not self.blank[ids[i]] for i in idx]
        return idx[np.array(keep, dtype=bool)]

    def plan(self, ids) -> Plan:
        """The `Plan` of one response (token ids: a list, array or 1-D tensor)."""
        return self.plan_batch([ids])[0]

    def plan_batch(self, batch) -> list[Plan]:
        """The `Plan` of every response in ``batch`` (a list of token-id sequences): one C++
        call for a byte-level tokenizer when ``use_cpp``, else the Python planner. Same plans."""
        if self.tables.token_bytes is not None and self.use_cpp:
            return self._plan_batch_cpp(batch)
        return [self._plan_python(ids) for ids in batch]

    def _plan_batch_cpp(self, batch) -> list[Plan]:
        if self._cpp is None:
            tables = self.tables.cpp_tables
            if self.rows not in tables:
                offsets = np.cumsum([0, *(len(b) for b in self._bytes)], dtype=np.int64)
                data = np.frombuffer(b"".join(self._bytes), dtype=np.uint8)
                tables[self.rows] = cpp_extension().TokenTable(data, offsets, self.blank)
            suffixes = None if self.boundary_ids is not None else self._suffix_bytes
            self._cpp = cpp_extension().Planner(
                tables[self.rows], marker=self._marker_bytes, marker_id=self.marker_id,
                suffixes=suffixes, boundary_ids=self.boundary_ids,
            )
        # A list of int64 arrays is read in place by C++ (no packed copy of the batch).
        responses = [np.asarray(ids, dtype=np.int64).reshape(-1) for ids in batch]
        begin, finish, cands, cands_cu = self._cpp.plan_list(responses)
        begin, finish, cands_cu = begin.tolist(), finish.tolist(), cands_cu.tolist()
        return [Plan(begin[b], finish[b], cands[cands_cu[b] : cands_cu[b + 1]]) for b in range(len(begin))]

    def _plan_python(self, ids) -> Plan:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        offsets = None
        if self._bytes is not None:  # offsets[i]: bytes of ids[0..i)
            lengths = np.fromiter((len(self._bytes[t]) for t in ids.tolist()), dtype=np.int64, count=len(ids))
            offsets = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths)])
        begin, finish = self.think_bounds(ids, offsets)
        return Plan(begin, finish, self.candidates(ids, begin, offsets))

    def _joined(self, ids: np.ndarray) -> bytes:
        return b"".join([self._bytes[t] for t in ids.tolist()])
