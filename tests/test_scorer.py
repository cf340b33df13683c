"""Bad inputs raise ValueError / TypeError whose message names the argument (SPEC §7, DESIGN
"validate": errors name the argument), and the trajectory index where one is involved."""

from __future__ import annotations

import copy
import re

import pytest
import torch


from repro_fast import RePROConfig, RePROScorer  # noqa: E402

BAD = (ValueError, TypeError)
Q = [15496, 995, 30]  # "Hello world?"
Y = [64, 628, 65, 13, 198, 56]  # 'a' '\n\n' 'b' '.' '\n' 'Y'


@pytest.fixture(scope="module", params=["naive", "fast"])
def scorer(request, tiny_llama, gpt2_tokenizer):
    return RePROScorer(tiny_llama, gpt2_tokenizer, RePROConfig(num_segments=2), backend=request.param)


def _names_index(exc_info, index: int):
    msg = str(exc_info.value)
    assert re.search(rf"(?<![0-9]){index}(?![0-9])", msg), f"message does not name index {index}: {msg!r}"


# ------------------------------------------------------------------------------------------
# score() inputs
# ------------------------------------------------------------------------------------------


def test_valid_inputs_pass(scorer):
    # the baseline for every case below: this call is fine (an empty response is valid)
    res = scorer.score([Q, Q], [Y, []], ["7", "8"])
    assert len(res.points) == 2 and res.points[1] == [0]


def test_empty_prompt(scorer):
    with pytest.raises(BAD, match="prompts") as ei:
        scorer.score([Q, []], [Y, Y], ["1", "2"])
    _names_index(ei, 1)


def test_empty_answer(scorer):
    with pytest.raises(BAD, match="answers") as ei:
        scorer.score([Q, Q], [Y, Y], ["1", ""])
    _names_index(ei, 1)


def test_answer_encoding_to_zero_tokens(tiny_llama, gpt2_tokenizer):
    # template "{answer}" with an empty answer renders "" -> zero answer tokens
    s = RePROScorer(tiny_llama, gpt2_tokenizer, RePROConfig(answer_template="{answer}"), backend="naive")
    with pytest.raises(BAD, match="answer") as ei:
        s.score([Q, Q], [Y, Y], ["3", ""])
    _names_index(ei, 1)


def test_answer_not_a_string(scorer):
    with pytest.raises(BAD, match="answers"):
        scorer.score([Q], [Y], [7])


@pytest.mark.parametrize(
    "args, names",
    [
        (([Q, Q], [Y], ["1", "2"]), "responses|prompts"),
        (([Q], [Y, Y], ["1"]), "responses|prompts"),
        (([Q, Q], [Y, Y], ["1"]), "answers"),
    ],
)
def test_lengths_differ(scorer, args, names):
    with pytest.raises(BAD, match=names):
        scorer.score(*args)


def test_group_ids_wrong_length(scorer):
    with pytest.raises(BAD, match="group_ids"):
        scorer.score([Q, Q], [Y, Y], ["1", "2"], group_ids=[0])


@pytest.mark.parametrize("bad", [-1, 50257, 10**9])
@pytest.mark.parametrize("where", ["prompts", "responses"])
def test_token_id_out_of_vocab(scorer, where, bad):
    prompts, responses = [Q, list(Q)], [Y, list(Y)]
    target = prompts if where == "prompts" else responses
    target[1] = target[1][:2] + [bad] + target[1][2:]
    with pytest.raises(BAD, match=where) as ei:
        scorer.score(prompts, responses, ["1", "2"])
    _names_index(ei, 1)


def test_token_id_out_of_vocab_in_tensor(scorer):
    with pytest.raises(BAD, match="responses"):
        scorer.score([Q], [torch.tensor([1, 2, 50257])], ["1"])


@pytest.mark.parametrize(
    "bad",
    [
        [1.0, 2.0],
        [1, 2.5],
        torch.tensor([1.0, 2.0]),
        ["a", "b"],
        "hello",
        [[1, 2], [3, 4]],
        torch.tensor([[1, 2], [3, 4]]),
        [True, False],
    ],
    ids=["floats", "mixed_float", "float_tensor", "strings", "str", "nested_list", "2d_tensor", "bools"],
)
@pytest.mark.parametrize("where", ["prompts", "responses"])
def test_non_integer_ids(scorer, where, bad):
    prompts, responses = [Q, Q], [Y, Y]
    if where == "prompts":
        prompts = [Q, bad]
    else:
        responses = [Y, bad]
    with pytest.raises(BAD, match=where) as ei:
        scorer.score(prompts, responses, ["1", "2"])
    _names_index(ei, 1)


def test_prompts_not_a_list(scorer):
    with pytest.raises(BAD, match="prompts"):
        scorer.score(None, [Y], ["1"])


# ------------------------------------------------------------------------------------------
# model / tokenizer / backend / config
# ------------------------------------------------------------------------------------------


def test_model_without_lm_head(gpt2_tokenizer, tiny_llama):
    from transformers import AutoModel

    base = AutoModel.from_config(tiny_llama.config).eval()  # LlamaModel: hidden states, no logits
    with pytest.raises(BAD, match="model"):
        RePROScorer(base, gpt2_tokenizer, backend="naive").score([Q], [Y], ["1"])


def test_tokenizer_larger_than_model_vocab(gpt2_tokenizer, tiny_model_factory):
    small = tiny_model_factory("llama", seed=3, vocab_size=1000)
    with pytest.raises(BAD, match="tokenizer"):
        RePROScorer(small, gpt2_tokenizer, backend="naive").score([[1, 2]], [[3, 4]], ["1"])


@pytest.mark.parametrize("backend", ["naive", "fast"])
def test_nan_in_logits(tiny_llama, gpt2_tokenizer, backend):
    bad = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        bad.lm_head.weight[5].fill_(float("nan"))
    with pytest.raises(BAD, match=r"(?i)nan|inf|finite"):
        RePROScorer(bad, gpt2_tokenizer, backend=backend).score([Q], [Y], ["1"])


@pytest.mark.parametrize("backend", ["naive", "fast"])
def test_inf_in_logits(tiny_llama, gpt2_tokenizer, backend):
    bad = copy.deepcopy(tiny_llama)
    with torch.no_grad():
        bad.model.norm.weight.fill_(float("inf"))
    with pytest.raises(BAD, match=r"(?i)nan|inf|finite"):
        RePROScorer(bad, gpt2_tokenizer, backend=backend).score([Q], [Y], ["1"])


@pytest.mark.parametrize("backend", ["slow", "", "NAIVE", None, 3])
def test_bad_backend(tiny_llama, gpt2_tokenizer, backend):
    with pytest.raises(BAD, match="backend"):
        RePROScorer(tiny_llama, gpt2_tokenizer, backend=backend)


def test_config_not_a_config(tiny_llama, gpt2_tokenizer):
    with pytest.raises(BAD, match="config"):
        RePROScorer(tiny_llama, gpt2_tokenizer, config={"num_segments": 3}, backend="naive")


@pytest.mark.parametrize(
    "field, value",
    [
        ("num_segments", 0),
        ("num_segments", -3),
        ("num_segments", 2.5),
        ("stability_weight", -0.1),
        ("stability_weight", 1.5),
        ("ema_decay", -0.01),
        ("ema_decay", 1.01),
        ("temperature", 0.0),
        ("temperature", -1.0),
        ("temperature", float("nan")),
        ("normalize", "global"),
        ("normalize", None),
        ("answer_template", "no placeholder"),
        ("boundary_suffixes", "\n\n"),
        ("think_end", ""),
    ],
)
def test_config_out_of_range(field, value):
    with pytest.raises(BAD, match=field):
        RePROConfig(**{field: value})


def test_config_edges_are_valid():
    # closed intervals: w, d in [0, 1]; k = 1; think_end None disables the marker
    RePROConfig(num_segments=1, stability_weight=0.0, ema_decay=0.0)
    RePROConfig(stability_weight=1.0, ema_decay=1.0, think_end=None, temperature=1e-3)


def test_token_id_think_end_of_several_tokens_uses_its_first_id(tiny_llama, gpt2_tokenizer):
    # authors' code (SPEC §8): "</think>" is three GPT-2 tokens; thinking ends before the first
    # "</" fragment, F = E + 1, as their code does
    tok = gpt2_tokenizer
    y = tok.encode("a.\n\nb</c.\n\nd</think>e")
    res = RePROScorer(tiny_llama, tok, RePROConfig.authors_code(), backend="naive").score([Q], [y], ["1"])
    E = y.index(tok.encode("</think>")[0])
    assert res.think_end == [E + 1] and res.points[0][-1] == E + 1
