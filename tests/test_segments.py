"""`repro_fast.segments`: the planner's think bounds (SPEC §1) and segment starts (§3) equal the
literal text rule of the float64 reference (`reference.plan`, which decodes every prefix: the
definition itself; the planner uses per-token byte tables) on real text, random token streams
(hypothesis) and the edge cases (markers split across tokens, runs of newlines, think end at token
0, tokenizers that are not byte-level); the authors' token-id modes; and the C++ planner
(`repro_fast._C`, the same `Planner` with ``use_cpp``) giving the Python planner's plans bit for bit
on GPT-2 BPE, SmolLM2 and a synthetic byte-level vocabulary with zero-length tokens and split
multi-byte characters, plus the extension's own input checks.

A missing extension is a failure, not a skip: the README's install builds it, and a test run
that silently lost the C++ comparison would prove nothing."""

from __future__ import annotations

import numpy as np
import pytest
import reference as R
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro_fast import RePROConfig
from repro_fast.segments import Planner, _byte_level_alphabet, decode, tables_for

HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


TEXTS = [
    "Step one.\n\nStep two.\nStep three?\nYes.\n\n\n\nDone.</think>\\boxed{4}",
    "</think> starts the response.\n\nThen more.\n\n",
    "No boundary at all, and no marker",
    "Split marker: 42.</think>\n\nanswer",
    "Runs\n\n\n\n\n\nof newlines.\n \n\n  \nthen text.\n\n",
    "Ünïcödé ☃ 数学.\n\n🙂 emoji?\nend",
    "?\n?\n.\n\n\n",
    "tail boundary only.\n\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_planner_equals_text_rule_gpt2(gpt2_tokenizer, text):
    config = RePROConfig()
    planner = Planner(gpt2_tokenizer, config)
    assert planner.tables.token_bytes is not None, "GPT-2 BPE must take the byte-table path"
    ids = gpt2_tokenizer.encode(text, add_special_tokens=False)
    plan = planner.plan(ids)
    E, F, cands = R.plan(gpt2_tokenizer, ids, config)
    assert (plan.think_begin, plan.think_end) == (E, F)
    assert plan.candidates.tolist() == cands


def test_marker_split_across_tokens(gpt2_tokenizer):
    # With GPT-2 BPE, "42.</think>" does not contain the token ids of encode("</think>").
    ids = gpt2_tokenizer.encode("x = 42.</think>done", add_special_tokens=False)
    marker_ids = gpt2_tokenizer.encode("</think>", add_special_tokens=False)
    assert len(marker_ids) > 1
    plan = Planner(gpt2_tokenizer, RePROConfig()).plan(ids)
    E, F, _ = R.plan(gpt2_tokenizer, ids, RePROConfig())
    assert (plan.think_begin, plan.think_end) == (E, F)
    assert plan.think_begin < plan.think_end <= len(ids)


def test_think_end_disabled_and_custom_suffixes(gpt2_tokenizer):
    config = RePROConfig(think_end=None, boundary_suffixes=(";", "\n"))
    ids = gpt2_tokenizer.encode("a; b\nc</think>d;e", add_special_tokens=False)
    plan = Planner(gpt2_tokenizer, config).plan(ids)
    E, F, cands = R.plan(gpt2_tokenizer, ids, config)
    assert (plan.think_begin, plan.think_end, plan.candidates.tolist()) == (E, F, cands)
    assert plan.think_end == len(ids)


def test_blank_table_matches_decode(gpt2_tokenizer):
    tables = tables_for(gpt2_tokenizer)
    rng = np.random.default_rng(1)
    for i in rng.integers(0, len(gpt2_tokenizer), size=400).tolist() + [198, 628, 220, 50256]:
        assert tables.blank[i] == (decode(gpt2_tokenizer, [i]).strip() == "")
    assert tables_for(gpt2_tokenizer) is tables, "tables must be cached per tokenizer"


# Token streams drawn from a pool rich in newlines, punctuation, marker pieces and multi-byte
# fragments, so that boundaries straddle tokens and partial UTF-8 sequences occur.
def _pool(tok):
    pieces = ["\n", "\n\n", ".", "?", ".\n", " ", "  ", "</", "think", ">", "</think>", "a", "42",
              "数", "🙂", "Wait", " check", "\t", "\r\n"]
    ids = sorted({i for p in pieces for i in tok.encode(p, add_special_tokens=False)})
    return ids + [0, 1, 50256, 30208, 11015]


@HYPO
@given(data=st.data())
def test_planner_equals_text_rule_random_streams(gpt2_tokenizer, data):
    pool = _pool(gpt2_tokenizer)
    ids = data.draw(st.lists(st.sampled_from(pool), min_size=0, max_size=40))
    config = RePROConfig()
    plan = Planner(gpt2_tokenizer, config).plan(ids)
    E, F, cands = R.plan(gpt2_tokenizer, ids, config)
    assert (plan.think_begin, plan.think_end) == (E, F)
    assert plan.candidates.tolist() == cands


def test_token_id_modes_follow_authors_code(gpt2_tokenizer):
    config = RePROConfig.authors_code(think_end="<|endoftext|>")
    planner = Planner(gpt2_tokenizer, config)
    ids = gpt2_tokenizer.encode("a.\n\nb?\nc", add_special_tokens=False) + [50256, 64]
    plan = planner.plan(ids)
    # 'a' '.' '\n' '\n' 'b' '?' '\n' 'c' <|endoftext|> 'a': a start after each first id of a suffix
    # ('.' of ".\n", '?' of "?\n"; the "\n\n" split in two '\n' is missed, as in the authors' code);
    # thinking ends at the marker's id, F = E + 1
    assert (plan.think_begin, plan.think_end, plan.candidates.tolist()) == (8, 9, [2, 6])
    assert (plan.think_begin, plan.think_end, plan.candidates.tolist()) == R.plan(gpt2_tokenizer, ids, config)


def test_token_id_think_end_takes_the_first_id_of_the_marker(gpt2_tokenizer):
    first = gpt2_tokenizer.encode("</think>", add_special_tokens=False)[0]
    ids = [64, 65, first, 66, first]
    plan = Planner(gpt2_tokenizer, RePROConfig(think_end_mode="token_id")).plan(ids)
    assert (plan.think_begin, plan.think_end) == (2, 3)


def test_smollm2_tokenizer_takes_byte_path(smollm2):
    _, tok = smollm2
    config = RePROConfig()
    planner = Planner(tok, config)
    assert planner.tables.token_bytes is not None
    for text in TEXTS[:4]:
        ids = tok.encode(text, add_special_tokens=False)
        plan = planner.plan(ids)
        E, F, cands = R.plan(tok, ids, config)
        assert (plan.think_begin, plan.think_end, plan.candidates.tolist()) == (E, F, cands)


class _NotByteLevel:
    """GPT-2's tokenizer with its byte-level pieces hidden: the planner must fall back to decoding
    every prefix (the path of SentencePiece-style tokenizers) and still give the text rule."""

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __len__(self):
        return len(self._tok)

    def convert_ids_to_tokens(self, ids):
        raise NotImplementedError


def test_prefix_decoding_path_equals_text_rule(gpt2_tokenizer):
    tok = _NotByteLevel(gpt2_tokenizer)
    config = RePROConfig()
    with pytest.warns(UserWarning, match="not byte-level"):
        planner = Planner(tok, config)
    assert planner.tables.token_bytes is None
    rng = np.random.default_rng(3)
    pool = _pool(gpt2_tokenizer)
    streams = [gpt2_tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
    streams += [rng.choice(pool, size=int(rng.integers(0, 40))).tolist() for _ in range(30)]
    for ids in streams:
        plan = planner.plan(ids)
        E, F, cands = R.plan(gpt2_tokenizer, ids, config)
        assert (plan.think_begin, plan.think_end, plan.candidates.tolist()) == (E, F, cands), ids

# ==========================================================================================
# The C++ planner: the Python planner's plans, bit for bit
# ==========================================================================================


def both(planner: Planner, batch):
    """Plans of `batch` from the C++ and from the Python path."""
    planner.use_cpp = True
    cpp_plans = planner.plan_batch(batch)
    planner.use_cpp = False
    py_plans = planner.plan_batch(batch)
    return cpp_plans, py_plans


def as_tuples(plans):
    return [(p.think_begin, p.think_end, p.candidates.tolist()) for p in plans]


def check(planner: Planner, batch, oracle: bool = True):
    """C++ == Python on the batch (and == the literal text rule when `oracle`)."""
    cpp_plans, py_plans = both(planner, batch)
    assert len(cpp_plans) == len(py_plans) == len(batch)
    for p in cpp_plans:
        assert p.candidates.dtype == np.int64
    assert as_tuples(cpp_plans) == as_tuples(py_plans)
    if oracle:
        for ids, plan in zip(batch, cpp_plans):
            E, F, cands = R.plan(planner.tokenizer, ids, planner.config)
            assert (plan.think_begin, plan.think_end, plan.candidates.tolist()) == (E, F, cands)
    return cpp_plans


# ------------------------------------------------------------------------------------------
# Real tokenizers
# ------------------------------------------------------------------------------------------

EDGE_TEXTS = TEXTS + [
    "",  # empty response
    "</think>",  # think end is the whole response
    "<",  # a partial marker at the end
    "a</thin",  # the response ends inside a partial marker
    "One.\n\nTwo.</think>\n\nafter the end.\n\nmore",  # boundaries after F are not candidates
    "x\n\n\n\n\n\n\n\ny",  # a run of newlines: one start
    "</think></think>",  # only the first occurrence counts
    "a.\n\n</think>",  # a boundary right before the marker
    "\n\n\n",  # all blank
    "no boundary?no newline.still none",
    "<<</</think>",  # marker prefixes right before the marker
]

CONFIGS = {
    "default": RePROConfig(),
    "no_think_end": RePROConfig(think_end=None),
    "custom_suffixes": RePROConfig(boundary_suffixes=(";", "\n", "ab", "a")),  # "a" is a prefix of "ab"
    "long_suffix": RePROConfig(boundary_suffixes=("Therefore,", "\n\n", ". Wait")),  # > 8 bytes
    "unicode": RePROConfig(think_end="数学", boundary_suffixes=("🙂", "。\n", "\n\n")),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_gpt2_texts(cpp, gpt2_tokenizer, name):
    planner = Planner(gpt2_tokenizer, CONFIGS[name])
    batch = [gpt2_tokenizer.encode(t, add_special_tokens=False) for t in EDGE_TEXTS]
    check(planner, batch)
    # Also one response at a time, and the batch as numpy arrays and as int32 arrays.
    for ids in batch:
        check(planner, [ids])
    check(planner, [np.asarray(ids, dtype=np.int64) for ids in batch], oracle=False)
    check(planner, [np.asarray(ids, dtype=np.int32) for ids in batch], oracle=False)


def test_gpt2_marker_split_across_tokens(cpp, gpt2_tokenizer):
    ids = gpt2_tokenizer.encode("x = 42.</think>done", add_special_tokens=False)
    assert len(gpt2_tokenizer.encode("</think>", add_special_tokens=False)) > 1
    (plan,) = check(Planner(gpt2_tokenizer, RePROConfig()), [ids])
    assert 0 < plan.think_begin < plan.think_end - 1  # the marker spans several tokens


def test_gpt2_think_end_in_first_token(cpp, gpt2_tokenizer):
    ids = gpt2_tokenizer.encode("</think> then.\n\nmore", add_special_tokens=False)
    (plan,) = check(Planner(gpt2_tokenizer, RePROConfig()), [ids])
    assert plan.think_begin == 0 and len(plan.candidates) == 0


def test_gpt2_runs_of_newlines_straddle_tokens(cpp, gpt2_tokenizer):
    nl = gpt2_tokenizer.encode("\n", add_special_tokens=False)
    a = gpt2_tokenizer.encode("a", add_special_tokens=False)
    ids = a + nl + nl + nl + a + nl + a + nl + nl + a  # "\n" then "\n" counts; "\n\n\n" once
    (plan,) = check(Planner(gpt2_tokenizer, RePROConfig()), [ids])
    assert plan.candidates.tolist() == [4, 9]


@pytest.mark.parametrize("think_end", ["<|endoftext|>", None])
def test_gpt2_token_id_modes(cpp, gpt2_tokenizer, think_end):
    config = RePROConfig.authors_code(think_end=think_end)
    planner = Planner(gpt2_tokenizer, config)
    texts = ["a.\n\nb?\nc", "x.\n\n\n\ny", "", "?\n", "no boundary"]
    batch = [gpt2_tokenizer.encode(t, add_special_tokens=False) + [50256, 64, 198, 64] for t in texts]
    batch += [[50256], [], [198, 64, 50256]]
    check(planner, batch)  # the reference implements the token-id rules too (SPEC §8)


def test_gpt2_mixed_modes(cpp, gpt2_tokenizer):
    """Text think end with token-id boundaries, and the other way round."""
    batch = [gpt2_tokenizer.encode(t, add_special_tokens=False) + [50256, 13] for t in EDGE_TEXTS]
    for config in (RePROConfig(boundary_mode="token_id"),
                   RePROConfig(think_end="<|endoftext|>", think_end_mode="token_id")):
        check(Planner(gpt2_tokenizer, config), batch)


@HYPO
@given(data=st.data())
def test_gpt2_random_batches(cpp, gpt2_tokenizer, data):
    pool = _pool(gpt2_tokenizer) + gpt2_tokenizer.encode(" \n \n\n?\n.\n\n数学🙂", add_special_tokens=False)
    responses = st.lists(st.sampled_from(pool), min_size=0, max_size=40)
    batch = data.draw(st.lists(responses, min_size=1, max_size=4))
    name = data.draw(st.sampled_from(sorted(CONFIGS)))
    check(Planner(gpt2_tokenizer, CONFIGS[name]), batch)


@HYPO
@given(data=st.data())
def test_gpt2_random_batches_token_id_modes(cpp, gpt2_tokenizer, data):
    pool = _pool(gpt2_tokenizer)
    batch = data.draw(st.lists(st.lists(st.sampled_from(pool), max_size=40), min_size=1, max_size=4))
    config = RePROConfig.authors_code(think_end="<|endoftext|>")
    check(Planner(gpt2_tokenizer, config), batch)


@pytest.mark.slow
def test_smollm2(cpp, smollm2):
    _, tok = smollm2
    for config in (
        RePROConfig(),
        CONFIGS["custom_suffixes"],
        RePROConfig.authors_code(think_end="<|im_end|>"),
    ):
        planner = Planner(tok, config)
        assert planner.tables.token_bytes is not None
        batch = [tok.encode(t, add_special_tokens=False) for t in EDGE_TEXTS]
        check(planner, batch, oracle=config.boundary_mode == "text")
        # A long random stream from a newline- and marker-rich pool (plans only: the oracle is O(n^2)).
        pieces = [
            "\n",
            "\n\n",
            ".",
            "?",
            ".\n",
            " ",
            "</",
            "think",
            ">",
            "</think>",
            "a",
            "数",
            "🙂",
            "<|im_end|>",
        ]
        pool = sorted({i for p in pieces for i in tok.encode(p, add_special_tokens=False)})
        rng = np.random.default_rng(0)
        check(planner, [rng.choice(pool, size=n).tolist() for n in (0, 1, 500, 3000)], oracle=False)


# ------------------------------------------------------------------------------------------
# A synthetic byte-level vocabulary: zero-length tokens, split UTF-8, markers in pieces
# ------------------------------------------------------------------------------------------

class ByteTokenizer:
    """The least of a Hugging Face tokenizer that `Planner` needs, over a fixed list of token
    byte strings (zero-length ones allowed). Its text is the UTF-8 decoding of the joined
    bytes (invalid bytes replaced), as for a byte-level BPE."""

    def __init__(self, token_bytes: list[bytes]):
        self.table = token_bytes
        inverse = {b: ch for ch, b in _byte_level_alphabet().items()}
        self.pieces = ["".join(inverse[x] for x in t) for t in token_bytes]
        self.added_tokens_decoder = {}

    def __len__(self):
        return len(self.table)

    def convert_ids_to_tokens(self, ids):
        return [self.pieces[i] for i in ids]

    def decode(self, ids, skip_special_tokens=False, clean_up_tokenization_spaces=False):
        return b"".join(self.table[i] for i in ids).decode("utf-8", errors="replace")

    def batch_decode(self, batch, **kw):
        return [self.decode(ids, **kw) for ids in batch]

    def encode(self, text, add_special_tokens=False):
        # Greedy longest match; bytes outside the vocabulary are dropped (the table's
        # validation probes only need ids whose decode is the join of their bytes).
        data, out, i = text.encode("utf-8"), [], 0
        by_bytes = {t: k for k, t in enumerate(self.table) if t}
        while i < len(data):
            for j in range(len(data), i, -1):
                if data[i:j] in by_bytes:
                    out.append(by_bytes[data[i:j]])
                    i = j
                    break
            else:
                i += 1
        return out


SYNTHETIC = [b"", b"", b"\n", b"\n\n", b".", b"?", b".\n", b" ", b"  \n", b"<", b"</", b"think", b">",
             b"</think>", b"k>", b"</th", b"ink>\n\n", b"a", b"ab", b"b", b";", b"42",
             "数".encode()[:1], "数".encode()[1:], "数".encode(), "🙂".encode()[:2], "🙂".encode()[2:],
             b"\xe6", b"\t", b"Therefore,", b"Wait", b"\r\n", b"x" * 12, b"\n\n\n"]


@pytest.fixture(scope="module")
def byte_tokenizer():
    return ByteTokenizer(list(dict.fromkeys(SYNTHETIC)) + [b"", b"\n"])  # duplicates: two ids, same bytes


@HYPO
@given(data=st.data())
def test_synthetic_vocab_random_batches(cpp, byte_tokenizer, data):
    vocab = len(byte_tokenizer)
    responses = st.lists(st.integers(0, vocab - 1), min_size=0, max_size=30)
    batch = data.draw(st.lists(responses, min_size=1, max_size=4))
    name = data.draw(st.sampled_from(sorted(CONFIGS)))
    planner = Planner(byte_tokenizer, CONFIGS[name])
    assert planner.tables.token_bytes is not None
    check(planner, batch)


def test_synthetic_zero_length_tokens(cpp, byte_tokenizer):
    enc = {t: i for i, t in enumerate(byte_tokenizer.table)}
    z, nl, a, lt, th = enc[b""], enc[b"\n"], enc[b"a"], enc[b"</"], enc[b"think"]
    planner = Planner(byte_tokenizer, RePROConfig())
    # "\n" z "\n" z z "a": the boundary straddles zero-length tokens; the start is the "a".
    # Then a marker split by zero-length tokens: E is the token of its first byte, F follows
    # the token of its last byte (not the zero-length tokens after it).
    ids = [a, nl, z, nl, z, z, a, z, lt, z, th, enc[b">"], z, z, a]
    (plan,) = check(planner, [ids])
    assert plan.candidates.tolist() == [6]
    assert (plan.think_begin, plan.think_end) == (8, 12)
    check(planner, [[z] * 5, [z, lt, z, th, z, enc[b"k>"]], [z, enc[b"</think>"], z]])


# ------------------------------------------------------------------------------------------
# The extension's own input checks
# ------------------------------------------------------------------------------------------

def test_cpp_rejects_bad_input(cpp, gpt2_tokenizer):
    planner = Planner(gpt2_tokenizer, RePROConfig())
    both(planner, [[1]])  # builds planner._cpp
    core = planner._cpp
    ids = np.array([1, 2, 3, 4], dtype=np.int64)
    with pytest.raises(ValueError, match="token id 50257 at position 1 of response 1"):
        core.plan_batch(np.array([1, 2, 50257, 3]), np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="token id -1 at position 0 of response 0"):
        core.plan_list([np.array([-1, 2])])
    with pytest.raises(ValueError, match="cu_seqlens: must end at 4"):
        core.plan_batch(ids, np.array([0, 2]))
    with pytest.raises(ValueError, match="non-decreasing"):
        core.plan_batch(ids, np.array([0, 3, 2, 4]))
    with pytest.raises(ValueError, match="start at 0"):
        core.plan_batch(ids, np.array([1, 4]))
    with pytest.raises(ValueError, match="1-D"):
        core.plan_batch(ids.reshape(2, 2), np.array([0, 4]))
    with pytest.raises(TypeError):
        core.plan_batch(ids.astype(np.float64), np.array([0, 4]))  # no silent float -> int cast
    with pytest.raises(ValueError, match="token id 50257"):  # the Planner wrapper checks too
        planner.use_cpp = True
        planner.plan_batch([[1, 50257]])
    # A strided view is converted (one copy), with the same plans.
    wide = np.array(gpt2_tokenizer.encode("a.\n\nb</think>c", add_special_tokens=False) * 2)[::2]
    E, F, c, ccu = core.plan_batch(wide, np.array([0, len(wide)]))
    E2, F2, c2, _ = core.plan_batch(np.ascontiguousarray(wide), np.array([0, len(wide)]))
    assert (E.tolist(), F.tolist(), c.tolist()) == (E2.tolist(), F2.tolist(), c2.tolist())
    assert ccu.tolist() == [0, len(c)]
    E, F, c, ccu = core.plan_batch(np.zeros(0, dtype=np.int64), np.array([0]))  # empty batch
    assert len(E) == len(F) == len(c) == 0 and ccu.tolist() == [0]


def test_cpp_table_validation(cpp):
    with pytest.raises(ValueError, match="vocab_size \\+ 1"):
        cpp.TokenTable(np.zeros(3, np.uint8), np.array([0, 3]), np.zeros(2, bool))
    with pytest.raises(ValueError, match="must end at 3"):
        cpp.TokenTable(np.zeros(3, np.uint8), np.array([0, 1, 2]), np.zeros(2, bool))
    table = cpp.TokenTable(np.zeros(3, np.uint8), np.array([0, 1, 3]), np.zeros(2, bool))
    with pytest.raises(ValueError, match="marker_id 2"):
        cpp.Planner(table, marker_id=2)
    with pytest.raises(ValueError, match="non-empty"):
        cpp.Planner(table, marker=b"")
    with pytest.raises(ValueError, match="not both"):
        cpp.Planner(table, marker=b"<", marker_id=0)


# ------------------------------------------------------------------------------------------
# The planner choice (resolved by repro_fast.dispatch: tests/test_dispatch.py)
# ------------------------------------------------------------------------------------------

def test_cpp_path_is_used_when_chosen(cpp, gpt2_tokenizer, monkeypatch):
    planner = Planner(gpt2_tokenizer, RePROConfig(), use_cpp=True)
    monkeypatch.setattr(planner, "_plan_python", lambda ids: pytest.fail("the Python planner ran"))
    ids = gpt2_tokenizer.encode("a.\n\nb", add_special_tokens=False)
    want = R.plan(gpt2_tokenizer, ids, RePROConfig())
    (plan,) = planner.plan_batch([ids])
    assert planner._cpp is not None
    assert (plan.think_begin, plan.think_end, plan.candidates.tolist()) == want


def test_scorer_same_points_on_both_paths(cpp, tiny_llama, gpt2_tokenizer):
    from repro_fast import RePROScorer

    prompts = [gpt2_tokenizer.encode("Q: 2+2?", add_special_tokens=False)] * 3
    responses = [gpt2_tokenizer.encode(t, add_special_tokens=False)
                 for t in ("Two.\n\nPlus two.\n\nFour?\nYes.</think>4", "", "x?\ny?\nz.\n\nw")]
    results = {}
    for backend in ("naive", "fast"):
        for choice in ("cpp", "python"):
            scorer = RePROScorer(
                tiny_llama, gpt2_tokenizer, RePROConfig(num_segments=2), backend, planner=choice
            )
            assert scorer.use_cpp_planner is (choice == "cpp")
            results[backend, choice] = scorer.score(prompts, responses, ["4"] * 3).points
    assert len({str(v) for v in results.values()}) == 1
    assert decode(gpt2_tokenizer, responses[0])  # sanity: a real response
