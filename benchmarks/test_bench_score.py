"""pytest-benchmark: fast score(), naive score(), the plain HF forward a trainer runs, the plain
forward with the fused head, paper-code cost.

    pytest benchmarks/ [--benchmark-json=out.json]

One benchmark group per preset (`score-cpu`, `score-real`, `score-long`, `score-gpu`,
`score-gpu_real`, `score-gpu_long`; the GPU presets are skipped without CUDA). Rounds are few on
purpose: on 2 CPU cores the whole file takes a few minutes. For the side-by-side table with
memory, use `python benchmarks/bench_table.py`.
"""

from __future__ import annotations

import baselines

# (rounds, warmup_rounds) per provider and preset: the slow baselines get fewer rounds.
ROUNDS = {name: {"fast": (3, 1), "hf": (3, 1), "plain": (3, 1), "naive": (1, 0), "paper": (1, 0)}
          for name in ("cpu", "real", "long", "gpu", "gpu_real", "gpu_long")}

_POINTS: dict = {}  # preset name -> fast score()'s points, reused by the paper-code cost


def _run(benchmark, preset, provider, fn):
    rounds, warmup = ROUNDS[preset.name][provider]
    benchmark.group = f"score-{preset.name}"
    benchmark.extra_info.update(
        preset=preset.name, provider=provider, trajectories=len(preset.prompts),
        prompt_len=max(map(len, preset.prompts)), response_len=max(map(len, preset.responses)),
        num_segments=preset.num_segments, token_budget=preset.token_budget,
    )
    return benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)


def _sync(preset, fn):
    def call():
        out = fn()
        preset.synchronize()
        return out

    return call


def _record_points(benchmark, preset, result):
    pts = baselines.result_points(result)
    _POINTS[preset.name] = pts
    bound = baselines.token_count_bound(preset.prompts, preset.responses, preset.answer_ids(), pts)
    benchmark.extra_info.update(
        naive_tokens=bound["naive_tokens"], fast_tokens=bound["fast_tokens"],
        token_bound_naive_over_fast=round(bound["ratio"], 3),
    )


def test_fast_score(benchmark, preset):
    scorer = preset.make_scorer("fast")
    result = _run(benchmark, preset, "fast", _sync(preset, lambda: preset.score(scorer)))
    assert len(result.points) == len(preset.prompts)
    _record_points(benchmark, preset, result)


def test_naive_score(benchmark, preset):
    scorer = preset.make_scorer("naive")
    result = _run(benchmark, preset, "naive", _sync(preset, lambda: preset.score(scorer)))
    assert len(result.points) == len(preset.prompts)
    _record_points(benchmark, preset, result)


def test_plain_hf_forward(benchmark, preset):
    out = _run(benchmark, preset, "hf", _sync(preset, preset.hf_forward))
    assert [len(t) for t in out] == [len(y) for y in preset.responses]


def test_plain_logprob_forward(benchmark, preset):
    benchmark.extra_info["head"] = baselines.HEAD_NAME
    out = _run(benchmark, preset, "plain", _sync(preset, preset.plain_forward))
    assert [len(t) for t in out] == [len(y) for y in preset.responses]


def test_paper_code_cost(benchmark, preset):
    points = _POINTS.get(preset.name)  # fast score()'s points when that test ran first
    benchmark.extra_info["points"] = "fast score()" if points else "evenly spaced"
    out = _run(benchmark, preset, "paper", _sync(preset, lambda: preset.paper_cost(points)))
    expected = sum(len(p) for p in points) if points else \
        sum(len(baselines.default_points(len(y), preset.num_segments)) for y in preset.responses)
    assert out.numel() == expected
