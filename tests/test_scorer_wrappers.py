"""The scorer under the ways trainers hold a model and a tokenizer: a tokenizer that gains tokens
after the first call, several threads sharing one scorer, a ``torch.compile``-d model, PEFT LoRA
adapters (on ``embed_tokens`` too) and trainable tokens. Each scores like the plain model."""

from __future__ import annotations

import copy
import threading

import peft  # the dev extra installs it: a missing peft fails here, never skips
import pytest
import torch
from transformers import GPT2TokenizerFast

from conftest import make_tiny_model
from repro_fast import RePROConfig, RePROScorer

Q = [15496, 995, 30]  # "Hello world?"
# Three segments: 'a' '.' '\n\n' 'b' ' c' '\n\n' 'd' ' e' '.' '\n\n' 'f'
Y = [64, 13, 628, 65, 269, 628, 67, 304, 13, 628, 69]


def _same_result(a, b, atol: float) -> None:
    assert a.points == b.points
    for field in ("nll", "rewards"):
        for x, y in zip(getattr(a, field), getattr(b, field)):
            torch.testing.assert_close(x, y, atol=atol, rtol=0)
    for field in ("token_logprobs", "token_entropies", "process_advantages"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), atol=atol, rtol=0)


def test_answer_ids_follow_tokens_added_after_the_first_call(gpt2_tokenizer_dir):
    """Fault: the answer's ids were cached by text only, so a tokenizer that gained ``\\boxed{``
    kept being scored with the old split (NLLs off by up to 1.7 against a fresh scorer)."""
    tok = GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_dir)
    model = make_tiny_model("llama")
    scorer = RePROScorer(model, tok)
    before = scorer.score([Q], [Y], ["42"])
    tok.add_tokens(["\\boxed{"])
    model.resize_token_embeddings(len(tok))
    with torch.no_grad():
        model.get_input_embeddings().weight[-1].normal_()  # the new row: not a copy of another
    assert scorer.answer_ids("42").tolist() == tok.encode("\\boxed{42}", add_special_tokens=False)
    after = scorer.score([Q], [Y], ["42"])
    fresh = RePROScorer(model, tok).score([Q], [Y], ["42"])
    _same_result(after, fresh, atol=0.0)
    assert not torch.allclose(after.nll[0], before.nll[0])  # the new split changed J


def test_threads_share_one_scorer(gpt2_tokenizer):
    """Fault: two threads' calls switched the model's train/eval flags under each other (dropout
    on inside a call, the model left in eval mode). Calls are serialized now."""
    model = make_tiny_model("gpt2").train()  # GPT-2's dropout is on in train mode
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2))
    prompts, responses = [Q, Q[:2]], [Y, Y[:7]]
    expected = scorer.score(prompts, responses, ["1", "2"], group_ids=[0, 0])
    results, errors = [], []

    def work():
        try:
            for _ in range(20):
                results.append(scorer.score(prompts, responses, ["1", "2"], group_ids=[0, 0]))
        except Exception as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 160
    for got in results:
        _same_result(got, expected, atol=0.0)
    assert model.training and all(m.training for m in model.modules())


def test_compiled_model_scores_like_the_plain_model(gpt2_tokenizer):
    """Fault: ``RePROScorer(torch.compile(model), ...)`` failed in verify() with
    ``_forward_unimplemented() got an unexpected keyword argument 'input_ids'``."""
    model = make_tiny_model("llama")
    compiled = torch.compile(model, backend="eager")
    got = RePROScorer(compiled, gpt2_tokenizer).score([Q], [Y], ["7"])
    expected = RePROScorer(make_tiny_model("llama"), gpt2_tokenizer).score([Q], [Y], ["7"])
    _same_result(got, expected, atol=1e-5)


@pytest.mark.parametrize("backend", ["fast", "naive"])
@pytest.mark.parametrize("adapter", ["lora_embed_and_head", "trainable_tokens"])
def test_peft_model_scores_like_its_merged_weights(gpt2_tokenizer, adapter, backend):
    """Fault: a LoRA adapter on ``embed_tokens`` (or ``trainable_token_indices``) failed at
    construction (``... has no attribute 'num_embeddings'``). The wrapped model must score like
    a plain model holding the merged weights."""
    if adapter == "lora_embed_and_head":
        config = peft.LoraConfig(r=4, target_modules=["embed_tokens", "q_proj", "lm_head"],
                                 init_lora_weights=False)
    else:
        config = peft.LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False,
                                 trainable_token_indices={"embed_tokens": [64, 628]})
    wrapped = peft.get_peft_model(make_tiny_model("llama"), config)
    if adapter == "trainable_tokens":
        with torch.no_grad():  # make the trained rows differ from the base rows
            for name, p in wrapped.named_parameters():
                if "trainable_tokens_delta" in name:
                    p.normal_()
    merged = copy.deepcopy(wrapped).merge_and_unload()
    cfg = RePROConfig(num_segments=2)
    got = RePROScorer(wrapped, gpt2_tokenizer, cfg, backend=backend).score([Q], [Y], ["7"])
    expected = RePROScorer(merged, gpt2_tokenizer, cfg, backend=backend).score([Q], [Y], ["7"])
    _same_result(got, expected, atol=1e-5)
    plain = RePROScorer(make_tiny_model("llama"), gpt2_tokenizer, cfg, backend=backend).score([Q], [Y], ["7"])
    assert not torch.allclose(got.token_logprobs, plain.token_logprobs, atol=1e-3)  # the adapter acts


def test_trl_trainer_with_a_lora_config_on_embed_tokens(gpt2_tokenizer, tmp_path):
    """Fault: ``RePROGRPOTrainer(peft_config=LoraConfig(target_modules=[..., "embed_tokens"]))``
    failed at construction. Now it trains a step and scores through the adapter."""
    from datasets import Dataset
    from trl import GRPOConfig

    from repro_fast.integrations.trl import RePROGRPOTrainer

    data = [{"prompt": f"Question {i}: what is {i} plus 3?\n", "answer": str(i + 3)} for i in range(4)]
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, max_steps=1, learning_rate=1e-3, bf16=False, use_cpu=True,
                      seed=0, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True)
    lora = peft.LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"], init_lora_weights=False)
    trainer = RePROGRPOTrainer(make_tiny_model("llama").train(), lambda completions, **kw: [1.0] * len(completions),
                               args=args, train_dataset=Dataset.from_list(data), processing_class=gpt2_tokenizer,
                               peft_config=lora)
    assert isinstance(trainer.model, peft.PeftModel)
    trainer.train()
    assert any("repro/scoring_seconds" in h for h in trainer.state.log_history)
