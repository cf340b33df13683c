"""The real SmolLM2-135M-Instruct (offline GGUF) on real GSM8K problems: backend="naive" in fp32
against the float64 SPEC reference. Slow (model load ~25 s, once per session)."""

from __future__ import annotations

import pytest
import torch

import reference as R
from data import gsm8k_examples

from repro_fast import RePROConfig, RePROScorer

pytestmark = pytest.mark.slow


def chat_prompt(tok, question: str) -> list[int]:
    out = tok.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
    )
    if hasattr(out, "keys"):  # transformers 5 returns a BatchEncoding
        out = out["input_ids"]
    if isinstance(out, torch.Tensor):
        out = out.tolist()
    if out and isinstance(out[0], list):
        out = out[0]
    return [int(i) for i in out]


@pytest.fixture(scope="module")
def smol_case(smollm2):
    model, tok = smollm2
    (q1, cot1, a1), (q2, cot2, a2) = gsm8k_examples(2, start=0)
    cot1 = cot1.replace("\n\nThe answer is", "\n\n</think>\n\nThe answer is")  # think end in one
    prompts = [chat_prompt(tok, q1), chat_prompt(tok, q2)]
    responses = [tok.encode(cot1, add_special_tokens=False), tok.encode(cot2, add_special_tokens=False)]
    return model, tok, prompts, responses, [a1, a2]


@pytest.fixture(scope="module")
def smol64(smollm2):
    return R.float64_copy(smollm2[0])


def test_smollm2_inputs_are_real(smol_case):
    model, tok, prompts, responses, answers = smol_case
    text = R.text_of(tok, prompts[0])
    assert "<|im_start|>assistant" in text and text.rstrip().endswith("assistant")
    assert "</think>" in R.text_of(tok, responses[0])
    assert "\\boxed{" + answers[1] + "}" in R.text_of(tok, responses[1])
    assert model.config.vocab_size == 49152


@pytest.mark.parametrize(
    "cfg",
    [RePROConfig(num_segments=2), RePROConfig(normalize="batch", temperature=0.8)],
    ids=["k2_group", "k20_batch_t0.8"],
)
def test_smollm2_naive_matches_reference(smol_case, smol64, cfg):
    model, tok, prompts, responses, answers = smol_case
    res = RePROScorer(model, tok, cfg, backend="naive").score(prompts, responses, answers, ["g", "g"])
    ref = R.reference_score(model, tok, prompts, responses, answers, ["g", "g"], cfg, smol64)
    t0, t1 = ref.traj
    # the test case covers the rules: a think end inside the response, real candidates
    assert t0.F < len(responses[0]) and t0.E < t0.F
    assert len(t0.candidates) >= 2 and len(t1.candidates) >= 2
    for t in ref.traj:
        assert t.margin > 1e-5, f"ill-conditioned: entropy gap {t.margin}"
    assert all(s > 2e-3 for s in ref.sigmas)
    R.assert_results_close(res, ref, label="smollm2")
