"""The C++ planner (repro_fast._C) must give the Python planner's plans, bit for bit.

Both are checked against the literal text rule of SPEC §1 and §3 (`oracle_plan` from
test_segments.py, which decodes every prefix) on real tokenizers (GPT-2 BPE, SmolLM2), on
random token streams (hypothesis), and on a synthetic byte-level vocabulary with zero-length
tokens and split multi-byte characters. Plus SPEC §4's selection, input validation, the
``REPRO_FAST_PLANNER`` switch and the fallback when the extension is missing.

A missing extension is a failure, not a skip: the README's install builds it, and a test run
that silently lost the C++ comparison would prove nothing.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro_fast import RePROConfig
from repro_fast import _planner_cpp
from repro_fast import rewards as R
from repro_fast.segments import Planner, _byte_level_alphabet, decode
from test_segments import TEXTS, _pool, oracle_plan

ENV = _planner_cpp.ENV_VAR
HYPO = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def cpp():
    ext = _planner_cpp.extension()
    if ext is None:
        pytest.fail(f"repro_fast._C is not built ({_planner_cpp._import_error}); reinstall with pip install -e .")
    return ext


@pytest.fixture
def fresh_switch(monkeypatch):
    """Forget the extension's import result and the warning, before and after the test."""
    _planner_cpp._reset()
    monkeypatch.delenv(ENV, raising=False)
    yield
    _planner_cpp._reset()


def both(planner: Planner, batch):
    """Plans of `batch` from the C++ and from the Python path."""
    old = os.environ.get(ENV)
    try:
        os.environ[ENV] = "cpp"
        cpp_plans = planner.plan_batch(batch)
        os.environ[ENV] = "python"
        py_plans = planner.plan_batch(batch)
    finally:
        if old is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = old
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
            E, F, cands = oracle_plan(planner.tokenizer, list(ids), planner.config)
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
    cpp_plans = check(planner, batch, oracle=False)
    firsts = {gpt2_tokenizer.encode(s, add_special_tokens=False)[0] for s in config.boundary_suffixes}
    for ids, plan in zip(batch, cpp_plans):
        E = ids.index(50256) if think_end and 50256 in ids else len(ids)
        F = E + 1 if E < len(ids) else E
        assert (plan.think_begin, plan.think_end) == (E, F)
        assert plan.candidates.tolist() == [i for i in range(1, E) if ids[i - 1] in firsts]


def test_gpt2_mixed_modes(cpp, gpt2_tokenizer):
    """Text think end with token-id boundaries, and the other way round."""
    batch = [gpt2_tokenizer.encode(t, add_special_tokens=False) + [50256, 13] for t in EDGE_TEXTS]
    for config in (RePROConfig(boundary_mode="token_id"),
                   RePROConfig(think_end="<|endoftext|>", think_end_mode="token_id")):
        check(Planner(gpt2_tokenizer, config), batch, oracle=False)


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
    check(Planner(gpt2_tokenizer, config), batch, oracle=False)


@pytest.mark.slow
def test_smollm2(cpp, smollm2):
    _, tok = smollm2
    for config in (RePROConfig(), CONFIGS["custom_suffixes"], RePROConfig.authors_code(think_end="<|im_end|>")):
        planner = Planner(tok, config)
        assert planner.tables.token_bytes is not None
        batch = [tok.encode(t, add_special_tokens=False) for t in EDGE_TEXTS]
        check(planner, batch, oracle=config.boundary_mode == "text")
        # A long random stream from a newline- and marker-rich pool (plans only: the oracle is O(n^2)).
        pieces = ["\n", "\n\n", ".", "?", ".\n", " ", "</", "think", ">", "</think>", "a", "数", "🙂", "<|im_end|>"]
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
# SPEC §4: select_points
# ------------------------------------------------------------------------------------------

@HYPO
@given(data=st.data())
def test_select_points_matches_python(cpp, data):
    batch = data.draw(st.integers(0, 5))
    k = data.draw(st.integers(1, 8))
    ents, cands, fs = [], [], []
    for _ in range(batch):
        n = data.draw(st.integers(0, 30))
        # Few distinct values: many exact ties, which go to the smaller index.
        ents.append(np.array(data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.5, 1e-7, 3.0]),
                                                min_size=n, max_size=n)), dtype=np.float32))
        cands.append(sorted(data.draw(st.sets(st.integers(1, max(n - 1, 1)), max_size=n))) if n > 1 else [])
        fs.append(data.draw(st.integers(0, n)))
    got = _planner_cpp.select_points_batch(ents, cands, k, fs)
    want = [R.select_points(e, np.array(c, dtype=np.int64), k, f) for e, c, f in zip(ents, cands, fs)]
    assert got == want


def test_select_points_ties_fewer_than_k_and_nan(cpp):
    H = np.array([0, 1.0, 2.0, 2.0, 1.0, 2.0, np.nan, 0.5], dtype=np.float32)
    cands = [1, 2, 3, 4, 5, 6, 7]
    for k in range(0, 9):
        want = R.select_points(H, np.array(cands), k, 8) if k else sorted({0, 8})
        assert _planner_cpp.select_points_batch([H], [cands], k, [8]) == [want]
    assert _planner_cpp.select_points_batch([H], [cands], 2, [8]) == [[0, 2, 3, 8]]  # ties: smaller index
    assert _planner_cpp.select_points_batch([H[:3]], [[1, 2]], 5, [3]) == [[0, 1, 2, 3]]  # fewer than k
    assert _planner_cpp.select_points_batch([np.zeros(0, np.float32)], [[]], 5, [0]) == [[0]]  # empty


def test_select_points_validates(cpp):
    H = np.ones(4, dtype=np.float32)
    with pytest.raises(ValueError, match="candidate 4"):
        _planner_cpp.select_points_batch([H], [[1, 4]], 1, [4])
    with pytest.raises(ValueError, match="think_end 5"):
        _planner_cpp.select_points_batch([H], [[1]], 1, [5])
    with pytest.raises(ValueError, match="k must be"):
        _planner_cpp.select_points_batch([H], [[1]], -1, [4])


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
        os.environ[ENV] = "cpp"
        try:
            planner.plan_batch([[1, 50257]])
        finally:
            os.environ.pop(ENV)
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
# The switch and the fallback
# ------------------------------------------------------------------------------------------

def test_cpp_path_is_used_when_available(cpp, gpt2_tokenizer, fresh_switch, monkeypatch):
    planner = Planner(gpt2_tokenizer, RePROConfig())
    monkeypatch.setattr(planner, "_plan_python", lambda ids: pytest.fail("the Python planner ran"))
    ids = gpt2_tokenizer.encode("a.\n\nb", add_special_tokens=False)
    want = oracle_plan(gpt2_tokenizer, ids, RePROConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (plan,) = planner.plan_batch([ids])
    assert planner._cpp is not None
    assert (plan.think_begin, plan.think_end, plan.candidates.tolist()) == want
    plan = planner.plan(ids)  # one response goes through plan_batch too
    assert (plan.think_begin, plan.think_end, plan.candidates.tolist()) == want


def test_env_switch_python(cpp, gpt2_tokenizer, fresh_switch, monkeypatch):
    monkeypatch.setenv(ENV, "python")
    planner = Planner(gpt2_tokenizer, RePROConfig())
    ids = gpt2_tokenizer.encode("a.\n\nb", add_special_tokens=False)
    (plan,) = planner.plan_batch([ids])
    assert planner._cpp is None and plan.candidates.tolist() == oracle_plan(gpt2_tokenizer, ids, RePROConfig())[2]
    monkeypatch.setenv(ENV, " CPP ")  # case and spaces do not matter
    planner.plan_batch([[1]])
    assert planner._cpp is not None


def test_env_switch_invalid_value(gpt2_tokenizer, fresh_switch, monkeypatch):
    monkeypatch.setenv(ENV, "rust")
    with pytest.raises(ValueError, match=ENV):
        Planner(gpt2_tokenizer, RePROConfig()).plan_batch([[1, 2]])


def test_fallback_warns_once_when_extension_missing(gpt2_tokenizer, fresh_switch, monkeypatch):
    monkeypatch.setitem(sys.modules, "repro_fast._C", None)  # makes `import repro_fast._C` fail
    planner = Planner(gpt2_tokenizer, RePROConfig())
    ids = gpt2_tokenizer.encode("Step.\n\nNext</think>x", add_special_tokens=False)
    with pytest.warns(RuntimeWarning, match="C\\+\\+ planner.*not available"):
        (plan,) = planner.plan_batch([ids])
    assert (plan.think_begin, plan.think_end, plan.candidates.tolist()) == oracle_plan(
        gpt2_tokenizer, ids, RePROConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise
        Planner(gpt2_tokenizer, RePROConfig()).plan_batch([ids])
    assert planner._cpp is None


def test_env_cpp_without_extension_is_an_error(gpt2_tokenizer, fresh_switch, monkeypatch):
    monkeypatch.setitem(sys.modules, "repro_fast._C", None)
    monkeypatch.setenv(ENV, "cpp")
    with pytest.raises(ImportError, match=f"{ENV}=cpp"):
        Planner(gpt2_tokenizer, RePROConfig()).plan_batch([[1]])
    monkeypatch.setenv(ENV, "python")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit choice of Python does not warn
        Planner(gpt2_tokenizer, RePROConfig()).plan_batch([[1]])


def test_scorer_same_points_on_both_paths(cpp, tiny_llama, gpt2_tokenizer, monkeypatch):
    from repro_fast import RePROScorer

    scorer = RePROScorer(tiny_llama, gpt2_tokenizer, RePROConfig(num_segments=2))
    prompts = [gpt2_tokenizer.encode("Q: 2+2?", add_special_tokens=False)] * 2
    responses = [gpt2_tokenizer.encode(t, add_special_tokens=False)
                 for t in ("Two.\n\nPlus two.\n\nFour?\nYes.</think>4", "")]
    results = {}
    for choice in ("cpp", "python"):
        monkeypatch.setenv(ENV, choice)
        results[choice] = scorer.score(prompts, responses, ["4", "4"]).points
    assert results["cpp"] == results["python"]
    assert decode(gpt2_tokenizer, responses[0])  # sanity: a real response


def test_cpu_scorer_selects_in_cpp_and_python_path_agrees(cpp, tiny_llama, gpt2_tokenizer, monkeypatch):
    """On CPU the naive scorer's top-k goes through the C++ select_points (one call per group);
    with REPRO_FAST_PLANNER=python it goes through the torch op, and the fast scorer keeps its
    points on the device. All three give the same points, and the C++ call is made."""
    from repro_fast import RePROScorer

    calls = []
    real = _planner_cpp.select_points_batch

    def spy(*args, **kwargs):
        calls.append(len(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(_planner_cpp, "select_points_batch", spy)
    config = RePROConfig(num_segments=3)
    naive = RePROScorer(tiny_llama, gpt2_tokenizer, config, backend="naive")
    prompts = [gpt2_tokenizer.encode("Q: 2+2?", add_special_tokens=False)] * 3
    responses = [gpt2_tokenizer.encode(t, add_special_tokens=False) for t in
                 ("a.\n\nb.\n\nc.\n\nd.\n\ne.\n\nf</think>4", "", "x?\ny?\nz.\n\nw")]
    monkeypatch.setenv(ENV, "cpp")
    with_cpp = naive.score(prompts, responses, ["4", "4", "4"]).points
    assert calls == [3]  # one call for the whole group
    monkeypatch.setenv(ENV, "python")
    assert naive.score(prompts, responses, ["4", "4", "4"]).points == with_cpp
    fast = RePROScorer(tiny_llama, gpt2_tokenizer, config, backend="fast")
    assert fast.score(prompts, responses, ["4", "4", "4"]).points == with_cpp
    assert calls == [3]
