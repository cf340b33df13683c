"""SPEC §1 and §3 on the host: think-end bounds and segment-start candidates.

Both rules are defined on *text* (``tokenizer.decode`` of token ids), so they work for any
tokenizer. Decoding every prefix of every response would cost O(n^2), so we precompute, once
per tokenizer, a table of each token's bytes (byte-level BPE: GPT-2, Llama-3, Qwen, SmolLM2,
...). The text of a sequence is then the UTF-8 decoding of the concatenated bytes, and a text
suffix or marker made of complete characters shows up in the text exactly where its UTF-8
bytes show up in the byte string (a marker starts with a lead or ASCII byte, which no
preceding invalid sequence can swallow). The table is validated against ``tokenizer.decode``
when it is built; a tokenizer that fails validation (SentencePiece with a stripping decoder,
say) takes the exact path that decodes prefixes, which is slow but equals the rule by
definition.

The byte-table path also exists in C++ (``repro_fast._C``, see `repro_fast._planner_cpp`):
`Planner.plan_batch` sends the whole batch there in one call when the scorer chose it
(`repro_fast.dispatch.resolve_planner`); this module's Python code is the fallback and the
reference.

Ids a model can sample but its tokenizer does not name (Qwen pads its embedding past
``len(tokenizer)``) decode to no text: they get empty bytes and count as blank.
"""

from __future__ import annotations

import re
import warnings
import weakref
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from repro_fast import _planner_cpp
from repro_fast.config import RePROConfig
from repro_fast.dispatch import cpp_extension


def decode(tokenizer, ids) -> str:
    """The text of token ids, exactly as SPEC §1 defines it."""
    return tokenizer.decode(
        list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
    )


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's reversible byte <-> printable-unicode map (byte-level BPE pieces use it)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


class TokenizerTables:
    """Per-tokenizer tables, built once (see `tables_for`).

    Attributes:
        vocab_size: ``len(tokenizer)``: valid ids are ``[0, vocab_size)``.
        token_text: ``decode([id])`` of every id.
        blank: bool ``[vocab_size]``: the text of the token alone is whitespace-only
            (``text.strip() == ""``, so a token with empty text counts as blank).
        token_bytes: the UTF-8 bytes each id contributes to a decoded sequence, or ``None``
            when the tokenizer is not byte-level (then the exact prefix-decoding path is used).
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        ids = [[i] for i in range(self.vocab_size)]
        self.token_text: list[str] = tokenizer.batch_decode(
            ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        self.blank = np.array([t.strip() == "" for t in self.token_text], dtype=bool)
        self.token_bytes = self._byte_table()
        self._cpp_tables: dict[int, object] = {}

    def blank_upto(self, rows: int) -> np.ndarray:
        """`blank` over ``rows >= vocab_size`` ids (the extra ids are blank)."""
        return np.concatenate([self.blank, np.ones(max(0, rows - self.vocab_size), dtype=bool)])

    def bytes_upto(self, rows: int) -> list[bytes]:
        return self.token_bytes + [b""] * max(0, rows - self.vocab_size)

    def cpp_table(self, rows: int):
        """The byte table over ``rows`` ids as a ``_C.TokenTable`` (built once per size)."""
        if rows not in self._cpp_tables:
            self._cpp_tables[rows] = _planner_cpp.make_table(self.bytes_upto(rows), self.blank_upto(rows))
        return self._cpp_tables[rows]

    def _byte_table(self) -> list[bytes] | None:
        tok = self.tokenizer
        alphabet = _byte_level_alphabet()
        added = {
            i: getattr(t, "content", str(t))
            for i, t in getattr(tok, "added_tokens_decoder", {}).items()
        }
        try:
            pieces = tok.convert_ids_to_tokens(list(range(self.vocab_size)))
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
        # Validate against the tokenizer itself: every single token, and a few sequences that
        # mix multi-byte characters split across tokens with special tokens.
        for i, text in enumerate(self.token_text):
            if table[i].decode("utf-8", errors="replace") != text:
                return None
        rng = np.random.default_rng(0)
        probes = [tok.encode(s, add_special_tokens=False) for s in _PROBE_TEXTS]
        probes += [rng.integers(0, self.vocab_size, size=48).tolist() for _ in range(8)]
        for ids in probes:
            joined = b"".join(table[t] for t in ids).decode("utf-8", errors="replace")
            if joined != decode(tok, ids):
                return None
        return table


_PROBE_TEXTS = (
    "Step 1.\n\nWait, 7 + 8 = 15?\n  \n\nSo x = 3.</think>\\boxed{42}",
    "Ünïcödé ☃ 数学 🙂 done.\n\n",
    " leading space\tand\ttabs\r\n\r\nend",
)

_TABLE_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_TABLE_CACHE_BY_ID: dict[int, TokenizerTables] = {}


def tables_for(tokenizer) -> TokenizerTables:
    """The cached `TokenizerTables` of a tokenizer (rebuilt if its vocabulary grew)."""
    try:
        tables = _TABLE_CACHE.get(tokenizer)
    except TypeError:  # not weak-referenceable
        tables = _TABLE_CACHE_BY_ID.get(id(tokenizer))
    if tables is None or tables.vocab_size != len(tokenizer):
        tables = TokenizerTables(tokenizer)
        if tables.token_bytes is None:
            warnings.warn(
                f"{type(tokenizer).__name__} is not byte-level (or its decode is not "
                "concatenative): segment planning decodes every prefix, which is exact but "
                "O(n^2) per response.",
                stacklevel=3,
            )
        try:
            _TABLE_CACHE[tokenizer] = tables
        except TypeError:
            _TABLE_CACHE_BY_ID[id(tokenizer)] = tables
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


class Planner:
    """Computes `Plan`s for one tokenizer and config. Reuse it across calls.

    ``rows``: ids in ``[0, rows)`` may occur (the model's embedding rows, at least
    ``len(tokenizer)``); ``use_cpp``: plan byte-level batches in C++.
    """

    def __init__(self, tokenizer, config: RePROConfig, rows: int | None = None, use_cpp: bool = False):
        self.tokenizer = tokenizer
        self.config = config
        self.tables = tables_for(tokenizer)
        self.rows = max(rows or 0, self.tables.vocab_size)
        self.use_cpp = use_cpp
        self.blank = self.tables.blank_upto(self.rows)
        self.marker = config.think_end
        self.marker_id = None
        if self.marker is not None and config.think_end_mode == "token_id":
            # The authors' code: the first id of the encoded marker, a fragment ("</") when the
            # marker is several tokens (SPEC §8).
            ids = _encode(tokenizer, self.marker)
            if not ids:
                raise ValueError(f"RePROConfig.think_end: {self.marker!r} encodes to no tokens")
            self.marker_id = ids[0]
        self.boundary_ids = None
        if config.boundary_mode == "token_id":
            firsts = [_encode(tokenizer, s)[:1] for s in config.boundary_suffixes]
            self.boundary_ids = np.array(sorted({f[0] for f in firsts if f}), dtype=np.int64)
        self._suffix_bytes = [s.encode("utf-8") for s in config.boundary_suffixes]
        # A lookahead regex per suffix finds its overlapping occurrences ("\n\n\n" holds two
        # "\n\n"). One regex per suffix, not one alternation: an alternation reports only the
        # first alternative that matches at a position, and would miss "ab" after "a" matched.
        self._suffix_res = [re.compile(b"(?=" + re.escape(s) + b")") for s in self._suffix_bytes]
        self._suffix_texts = tuple(config.boundary_suffixes)
        self._cpp = None  # the C++ planner, built on first use
        self._bytes = self.tables.bytes_upto(self.rows) if self.tables.token_bytes is not None else None

    # ---- SPEC §1: think end ------------------------------------------------------------
    def think_bounds(self, ids: np.ndarray, offsets: np.ndarray | None) -> tuple[int, int]:
        """(E, F) of one response; ``offsets[i]`` = bytes of ``y[0..i)`` (byte-level only)."""
        n = len(ids)
        if self.marker is None or n == 0:
            return n, n
        if self.marker_id is not None:
            hits = np.flatnonzero(ids == self.marker_id)
            return (int(hits[0]), int(hits[0]) + 1) if len(hits) else (n, n)
        if offsets is not None:
            data = self._joined(ids)
            pos = data.find(self.marker.encode("utf-8"))
            if pos < 0:
                return n, n
            end = pos + len(self.marker.encode("utf-8"))
            # E: the token whose bytes contain byte `pos`; F: first j with offsets[j] >= end.
            begin = int(np.searchsorted(offsets, pos, side="right")) - 1
            finish = int(np.searchsorted(offsets, end, side="left"))
            return begin, finish
        return self._think_bounds_exact(ids)

    def _think_bounds_exact(self, ids: np.ndarray) -> tuple[int, int]:
        tok, marker, n = self.tokenizer, self.marker, len(ids)
        full = decode(tok, ids)
        pos = full.find(marker)
        if pos < 0:
            return n, n
        # Smallest j whose prefix text holds the whole first occurrence (monotone in j).
        lo, hi = 1, n
        while lo < hi:
            mid = (lo + hi) // 2
            text = decode(tok, ids[:mid])
            if marker in text and text.find(marker) == pos:
                hi = mid
            else:
                lo = mid + 1
        finish = lo
        # The token in which the occurrence begins: last i whose prefix text ends at or before pos.
        lo, hi = 0, finish - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if len(decode(tok, ids[:mid])) <= pos:
                lo = mid
            else:
                hi = mid - 1
        return lo, finish

    # ---- SPEC §3: segment starts ---------------------------------------------------------
    def candidates(self, ids: np.ndarray, think_begin: int, offsets: np.ndarray | None) -> np.ndarray:
        if think_begin <= 1:
            return np.zeros(0, dtype=np.int64)
        idx = np.arange(1, think_begin, dtype=np.int64)
        if self.boundary_ids is not None:
            keep = np.isin(ids[idx - 1], self.boundary_ids)
            return idx[keep]
        if offsets is not None:
            data = self._joined(ids[:think_begin])
            ends = np.array(
                sorted({
                    m.start() + len(s)
                    for s, pattern in zip(self._suffix_bytes, self._suffix_res)
                    for m in pattern.finditer(data)
                }),
                dtype=np.int64,
            )
            keep = np.isin(offsets[idx], ends) & ~self.blank[ids[idx]]
            return idx[keep]
        tok = self.tokenizer
        keep = [
            decode(tok, ids[:i]).endswith(self._suffix_texts) and not self.blank[ids[i]]
            for i in idx
        ]
        return idx[np.array(keep, dtype=bool)]

    def plan(self, ids) -> Plan:
        """The `Plan` of one response (token ids: a list, array or 1-D tensor)."""
        return self.plan_batch([ids])[0]

    def plan_batch(self, batch) -> list[Plan]:
        """The `Plan` of every response in ``batch`` (a list of token-id sequences).

        Byte-level tokenizers: one C++ call for the whole batch when ``use_cpp``; otherwise, and
        for tokenizers without a byte table, the Python planner, one response at a time. Same
        plans either way.
        """
        if self.tables.token_bytes is not None and self.use_cpp:
            return self._plan_batch_cpp(batch)
        return [self._plan_python(ids) for ids in batch]

    def _plan_batch_cpp(self, batch) -> list[Plan]:
        if self._cpp is None:
            self._cpp = cpp_extension().Planner(
                self.tables.cpp_table(self.rows),
                marker=None if self.marker is None or self.marker_id is not None
                else self.marker.encode("utf-8"),
                marker_id=self.marker_id,
                suffixes=None if self.boundary_ids is not None else self._suffix_bytes,
                boundary_ids=self.boundary_ids,
            )
        # A list of int64 arrays is read in place by C++ (no packed copy of the batch).
        responses = [np.asarray(ids, dtype=np.int64).reshape(-1) for ids in batch]
        begin, finish, cands, cands_cu = self._cpp.plan_list(responses)
        begin, finish, cands_cu = begin.tolist(), finish.tolist(), cands_cu.tolist()
        return [
            Plan(begin[b], finish[b], cands[cands_cu[b] : cands_cu[b + 1]])
            for b in range(len(begin))
        ]

    def _plan_python(self, ids) -> Plan:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        offsets = self._offsets(ids)
        begin, finish = self.think_bounds(ids, offsets)
        return Plan(begin, finish, self.candidates(ids, begin, offsets))

    def _joined(self, ids: np.ndarray) -> bytes:
        table = self._bytes
        return b"".join([table[t] for t in ids.tolist()])

    def _offsets(self, ids: np.ndarray) -> np.ndarray | None:
        if self.tables.token_bytes is None:
            return None
        table = self._bytes
        lengths = np.fromiter((len(table[t]) for t in ids.tolist()), dtype=np.int64, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return offsets
