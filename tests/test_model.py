"""Soft-capped (Gemma2: ``final_logit_softcapping``) and logit-scaled (Cohere2: ``logit_scale``)
LM heads, fp32 and bf16 weights, inside ``torch.autocast`` as TRL and accelerate run with
``bf16=True``. Fault: the scorer cast the rows to bf16 with autocast off, then called the fp32 head
(``expected m1 and m2 to have the same dtype``). Checked against the model's own forward under
the same autocast, and by two real TRL steps with ``bf16=True``."""

from __future__ import annotations

import pytest
import torch
import transformers as tf

from repro_fast import RePROConfig, RePROScorer

Q = [15496, 995, 30]  # "Hello world?" in GPT-2's BPE
Y = [64, 13, 628, 65, 269, 628, 67, 304, 13, 628, 69]  # three segments


def tiny_scaled_head_model(arch: str, seed: int = 0):
    common = dict(vocab_size=50257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=50256, eos_token_id=50256, pad_token_id=50256)
    if arch == "gemma2":
        config = tf.Gemma2Config(head_dim=8, final_logit_softcapping=3.0, **common)  # caps bite
    else:
        config = tf.Cohere2Config(logit_scale=0.25, **common)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # spread the logits so the cap and the scale matter
        model.get_output_embeddings().weight.mul_(40.0)
    return model.eval()


@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("arch", ["gemma2", "cohere2"])
def test_scores_under_autocast_like_the_models_own_forward(gpt2_tokenizer, arch, weights):
    model = tiny_scaled_head_model(arch).to(weights)
    scorer = RePROScorer(model, gpt2_tokenizer, RePROConfig(num_segments=2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = scorer.score([Q], [Y], ["7"])
        with torch.no_grad():
            logits = model(torch.tensor([Q + Y])).logits[0, len(Q) - 1: len(Q) - 1 + len(Y)]
    own = torch.log_softmax(logits.float(), -1).gather(1, torch.tensor(Y)[:, None])[:, 0]
    # The same bf16 logits, normalized in fp32 by both: equal up to the log-softmax's own rounding.
    torch.testing.assert_close(result.token_logprobs[0], own, atol=1e-4, rtol=0)
    assert torch.isfinite(result.nll[0]).all()
    if arch == "gemma2":  # the cap is active: no logit above it, so no log-prob below -2 * cap
        assert float(own.min()) >= -2 * 3.0 - torch.log(torch.tensor(50257.0)).item()


@pytest.mark.parametrize("arch", ["gemma2", "cohere2"])
def test_trl_trains_two_bf16_steps(gpt2_tokenizer, tmp_path, arch):
    from datasets import Dataset
    from trl import GRPOConfig

    from repro_fast.integrations.trl import RePROGRPOTrainer

    data = [{"prompt": f"Question {i}: what is {i} plus 3?\n", "answer": str(i + 3)} for i in range(4)]
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=12, max_steps=2, learning_rate=1e-3, bf16=True, use_cpu=True,
                      seed=0, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True)
    trainer = RePROGRPOTrainer(tiny_scaled_head_model(arch).train(),
                               lambda completions, **kw: [float(len(c) % 3) for c in completions],
                               args=args, train_dataset=Dataset.from_list(data), processing_class=gpt2_tokenizer)
    trainer.train()
    scored = [h["repro/scoring_seconds"] for h in trainer.state.log_history if "repro/scoring_seconds" in h]
    assert len(scored) == 2
