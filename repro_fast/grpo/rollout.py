"""Rollouts: G samples per prompt from the current policy with Hugging Face ``generate``, by plain
ancestral sampling at temperature tau (no top-k/top-p/repetition penalty): exactly the distribution
RePro's ``token_logprobs`` measure, so they serve as the PPO "old" log-probs with no second pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Rollouts:
    """A rollout batch of N = prompts x G trajectories, prompt-major (group g = rows g*G..g*G+G-1)."""

    prompts: list[list[int]]  # token ids per trajectory (the group's prompt, repeated)
    responses: list[list[int]]  # sampled ids, up to and including EOS (absent when truncated)
    group_ids: list[int]
    answers: list[str]
    texts: list[str]  # decoded responses
    truncated: list[bool]


def _left_padded(prompts: list[list[int]], pad_id: int, device):
    width = max(len(p) for p in prompts)
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    return ids.to(device), mask.to(device)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[list[int]], *, temperature: float = 1.0,
             max_new_tokens: int = 128, greedy: bool = False,
             batch_size: int = 64) -> tuple[list[list[int]], list[bool]]:
    """One response per prompt: ``(responses, truncated)``. Responses stop after EOS (kept)."""
    from transformers import GenerationConfig

    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    gen_config = GenerationConfig(
        do_sample=not greedy, temperature=None if greedy else float(temperature), top_k=None if greedy else 0,
        top_p=None if greedy else 1.0, max_new_tokens=max_new_tokens, eos_token_id=eos, pad_token_id=pad)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    responses, truncated = [], []
    try:
        for s in range(0, len(prompts), batch_size):
            ids, mask = _left_padded(prompts[s : s + batch_size], pad, device)
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_config)
            for row in out[:, ids.shape[1] :].tolist():
                truncated.append(eos not in row)
                responses.append(row if truncated[-1] else row[: row.index(eos) + 1])
    finally:
        model.train(was_training)
    return responses, truncated


def rollout(model, tokenizer, prompt_ids: list[list[int]], answers: list[str], group_size: int,
            temperature: float, max_new_tokens: int) -> Rollouts:
    """G samples per prompt, prompt-major."""
    prompts = [p for p in prompt_ids for _ in range(group_size)]
    responses, truncated = generate(model, tokenizer, prompts, temperature=temperature,
                                    max_new_tokens=max_new_tokens)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return Rollouts(prompts=prompts, responses=responses,
                    group_ids=[g for g in range(len(prompt_ids)) for _ in range(group_size)],
                    answers=[a for a in answers for _ in range(group_size)], texts=texts, truncated=truncated)
