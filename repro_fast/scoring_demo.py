"""The scoring demo, `repro-fast demo --scoring` (the training demo is `repro_fast.grpo.demo`): score
real GSM8K chains of thought with SmolLM2-135M-Instruct. Prints each trajectory's scored segments
(text excerpt, J, S_magn, S_stab, r), then the fast and naive backends' time on the same batch: one
untimed warm-up call of each scorer on that batch first (its time printed apart), then one timed
call, as the ``real`` benchmark preset times them."""

from __future__ import annotations

import time

import torch

from repro_fast.config import RePROConfig
from repro_fast.inspector import encode_prompt
from repro_fast.offline import gsm8k_problems, load_smollm2
from repro_fast.scorer import RePROScorer
from repro_fast.segments import decode

# the instruction the `real` benchmark preset appends to each question (benchmarks/inputs.py imports it)
INSTRUCTION = " Please reason step by step, and put your final answer within \\boxed{}."


def _excerpt(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def run_demo(num_problems: int = 3, num_segments: int = 20, width: int = 60,
             threads: int | None = None, progress: bool = True) -> dict:
    """Score the reference solutions of the first ``num_problems`` GSM8K problems; print tables, timings.

    ``threads``: torch CPU threads during the demo (None: leave torch's setting); restored after.
    ``progress``: False turns transformers' progress bars off while the model loads.
    Returns the timings in seconds: ``{"warmup": {backend: s}, "timed": {backend: s}}``."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _run_demo(num_problems, num_segments, width, progress)
    finally:
        torch.set_num_threads(before)


def _run_demo(num_problems: int, num_segments: int, width: int, progress: bool) -> dict:
    torch.manual_seed(0)
    model, tokenizer = load_smollm2(progress=progress)  # says what it does on stderr (slow once, then cached)
    problems = gsm8k_problems(limit=num_problems)
    prompts = [encode_prompt(tokenizer, p.question + INSTRUCTION) for p in problems]
    responses = [tokenizer.encode(p.chain_of_thought(), add_special_tokens=False) for p in problems]
    answers = [p.answer for p in problems]
    config = RePROConfig(num_segments=num_segments)
    warmup, timings, results = {}, {}, {}
    for backend in ("fast", "naive"):
        scorer = RePROScorer(model, tokenizer, config, backend=backend)
        # untimed warm-up on the same batch: the first call's one-time work (tokenizer tables,
        # checks, thread pools, allocator growth) stays out of the timing below
        start = time.perf_counter()
        scorer.score(prompts, responses, answers)
        warmup[backend] = time.perf_counter() - start
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
    n_tokens = sum(len(p) + len(r) for p, r in zip(prompts, responses))
    print(f"\nscore() on {len(problems)} trajectories ({n_tokens:,} prompt + response tokens; CPU, fp32, "
          f"{torch.get_num_threads()} torch threads), one call each after an untimed warm-up call on the "
          f"same batch: fast {timings['fast']:.2f} s, naive {timings['naive']:.2f} s "
          f"({timings['naive'] / timings['fast']:.1f}x)")
    print(f"warm-up calls (first call's one-time work included): fast {warmup['fast']:.2f} s, "
          f"naive {warmup['naive']:.2f} s")
    print("Wall times on a shared or busy CPU are noisy; benchmarks/RESULTS.md's `real` preset "
          "(16 CoTs, median of repeats) is the careful measurement.")
    return {"warmup": warmup, "timed": timings}
