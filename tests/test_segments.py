"""The planner's tables must give exactly the text rule of SPEC §1 and §3.

The oracle here decodes every prefix literally (O(n^2)), the definition itself; the planner
uses per-token byte tables. They must agree on real text, on random token streams (hypothesis),
and on the edge cases: markers split across tokens, runs of newlines, think end at token 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repro_fast import RePROConfig
from repro_fast.segments import Planner, decode, tables_for


def oracle_plan(tok, ids, config: RePROConfig):
    """SPEC §1 and §3 by decoding prefixes, the literal definition."""
    n = len(ids)
    text = decode(tok, ids)
    marker = config.think_end
    if marker is not None and marker in text:
        F = next(j for j in range(n + 1) if marker in decode(tok, ids[:j]))
        pos = text.find(marker)
        E = max(i for i in range(n) if len(decode(tok, ids[:i])) <= pos)
    else:
        E = F = n
    cands = [
        i for i in range(1, E)
        if decode(tok, ids[:i]).endswith(tuple(config.boundary_suffixes))
        and decode(tok, ids[i : i + 1]).strip() != ""
    ]
    return E, F, cands


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
    E, F, cands = oracle_plan(gpt2_tokenizer, ids, config)
    assert (plan.think_begin, plan.think_end) == (E, F)
    assert plan.candidates.tolist() == cands


def test_marker_split_across_tokens(gpt2_tokenizer):
    # With GPT-2 BPE, "42.</think>" does not contain the token ids of encode("</think>").
    ids = gpt2_tokenizer.encode("x = 42.</think>done", add_special_tokens=False)
    marker_ids = gpt2_tokenizer.encode("</think>", add_special_tokens=False)
    assert len(marker_ids) > 1
    plan = Planner(gpt2_tokenizer, RePROConfig()).plan(ids)
    E, F, _ = oracle_plan(gpt2_tokenizer, ids, RePROConfig())
    assert (plan.think_begin, plan.think_end) == (E, F)
    assert plan.think_begin < plan.think_end <= len(ids)


def test_think_end_disabled_and_custom_suffixes(gpt2_tokenizer):
    config = RePROConfig(think_end=None, boundary_suffixes=(";", "\n"))
    ids = gpt2_tokenizer.encode("a; b\nc</think>d;e", add_special_tokens=False)
    plan = Planner(gpt2_tokenizer, config).plan(ids)
    E, F, cands = oracle_plan(gpt2_tokenizer, ids, config)
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


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_planner_equals_text_rule_random_streams(gpt2_tokenizer, data):
    pool = _pool(gpt2_tokenizer)
    ids = data.draw(st.lists(st.sampled_from(pool), min_size=0, max_size=40))
    config = RePROConfig()
    plan = Planner(gpt2_tokenizer, config).plan(ids)
    E, F, cands = oracle_plan(gpt2_tokenizer, ids, config)
    assert (plan.think_begin, plan.think_end) == (E, F)
    assert plan.candidates.tolist() == cands


def test_token_id_modes_follow_authors_code(gpt2_tokenizer):
    config = RePROConfig.authors_code(think_end="<|endoftext|>")
    planner = Planner(gpt2_tokenizer, config)
    ids = gpt2_tokenizer.encode("a.\n\nb?\nc", add_special_tokens=False) + [50256, 64]
    plan = planner.plan(ids)
    firsts = {gpt2_tokenizer.encode(s, add_special_tokens=False)[0] for s in config.boundary_suffixes}
    E = ids.index(50256)
    assert (plan.think_begin, plan.think_end) == (E, E + 1)
    assert plan.candidates.tolist() == [i for i in range(1, E) if ids[i - 1] in firsts]


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
        E, F, cands = oracle_plan(tok, ids, config)
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
        E, F, cands = oracle_plan(gpt2_tokenizer, ids, config)
        assert (plan.think_begin, plan.think_end, plan.candidates.tolist()) == (E, F, cands), ids
