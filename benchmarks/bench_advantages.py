"""`repro_fast.process_advantages` (SPEC §6) at trainer batch sizes, on one CPU core.

    python benchmarks/bench_advantages.py [--sizes 4096 16384 65536] [--width 512] [--repeats 5]

Inputs: N trajectories, each with 0-20 points at random positions in a ``width``-token response
(the real counts of a k = 20 scorer) and float64 rewards, as a trainer gathers them from several
`RePROResult`s; ``group_ids=None`` (every trajectory its own group: the largest number of
scopes) and ``"batch"`` (one scope). Beside it, the per-scope loop the package used before
(one pass over all trajectories per scope, so O(N x scopes)), up to the size where it
takes over 30 s. Time: median over the repeats after one warm-up call.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np
import torch

from repro_fast import process_advantages
from repro_fast.rewards import EPS, place

import report


def per_scope_loop(rewards, points, width, group_ids, normalize):
    """The previous normalization: for each scope, a scan over every trajectory."""
    scopes = list(range(len(rewards))) if normalize == "group" and group_ids is None else [0] * len(rewards)
    out = [r.clone() for r in rewards]
    for scope in set(scopes):
        members = [b for b, s in enumerate(scopes) if s == scope and rewards[b].numel()]
        if members:
            pooled = torch.cat([rewards[b] for b in members])
            mu, sigma = pooled.mean(), pooled.var(unbiased=False).sqrt()
            for b in members:
                out[b] = (rewards[b] - mu) / (sigma + EPS)
    return place(out, points, width).flip(-1).cumsum(-1).flip(-1).float()


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 65536],
                        help="numbers of trajectories N (default: %(default)s)")
    parser.add_argument("--width", type=int, default=512,
                        help="response width in tokens (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed calls per cell (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"{report.cpu_name()}, 1 thread, torch {torch.__version__}, width {args.width}")
    print("| N | normalize | process_advantages (s) | per-scope loop (s) |")
    print("|---|---|---|---|")
    loop_too_slow = False
    for n in args.sizes:
        points = [[0, *sorted(rng.choice(np.arange(1, args.width + 1), rng.integers(0, 21),
                                         replace=False).tolist())] for _ in range(n)]
        rewards = [torch.from_numpy(rng.normal(size=len(p) - 1)) for p in points]
        for normalize in ("group", "batch"):
            cell = (rewards, points, args.width, None, normalize)
            fast = timed(partial(process_advantages, *cell), args.repeats)
            loop = "-"
            if not loop_too_slow or normalize == "batch":
                seconds = timed(partial(per_scope_loop, *cell), 1)
                loop = f"{seconds:.3f}"
                loop_too_slow |= normalize == "group" and seconds > 30 / 4  # next size is 4x
            print(f"| {n} | {normalize} | {fast:.3f} | {loop} |", flush=True)


if __name__ == "__main__":
    main()
