"""`repro_fast.inspector` (`repro-fast inspect`): the page's numbers, escaping, no network resources,
CLI errors, the J chart's axes, the think-end note, and a real headless Chromium that loads the page
with no console message, renders it, keeps it within the window (long unbroken lines wrap) and draws
no label over another (Chromium missing: FAIL). Bad inputs lose nothing and never end in a
traceback: the output may not be the input (under any spelling) and an existing output is replaced
only with --overwrite; every bad input (row, model folder, --segments) is an exit-2 message naming
the flag and the line, raised before the model loads or scores and before any file is written; a
long valid input says what it is doing before the steps that take time. Tiny random models saved to
tmp folders; nothing downloads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

import repro_fast.inspector as inspector
from repro_fast.cli import main
from repro_fast.inspector import inspect_rows, nice_ticks, normalized
from repro_fast.outputs import UsageError
from repro_fast.scorer import RePROScorer

CHROMIUM = "/usr/bin/chromium"
EVIL = "<script>alert('x')</script> & </span>"
ROWS = [
    {
        "prompt": "What is 3 + 4?",
        "answer": "7",
        "response": f"First, 3 + 4 = 7.\n\nWait, {EVIL} let me check.\n\n3 + 4 = 7 again.\n\n"
                    "So \\boxed{7}.",
    },
    {
        "prompt": "Compute 2 * 5 <b>now</b>.",
        "answer": "10",
        "response": "2 * 5 = 10.\n\nThe answer is \\boxed{10}.",
    },
]
EXTERNAL = re.compile(r"""\b(src|href|srcset|action)\s*=|url\(|@import|https?:|//[a-z]""", re.I)


def chromium(url: str, tmp_path, *args: str) -> tuple[str, list[str]]:
    """(stdout, console lines) of one headless Chromium run on ``url``."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: run .ci/browser_setup.sh (Debian's chromium)")
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", *args, url],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@pytest.fixture(scope="module")
def page_file(tmp_path_factory, tiny_llama, gpt2_tokenizer):
    d = tmp_path_factory.mktemp("inspect")
    tiny_llama.save_pretrained(d / "model")
    gpt2_tokenizer.save_pretrained(d / "model")
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    main(["inspect", "--input", str(d / "rows.jsonl"), "--out", str(d / "page.html"), "--model",
          str(d / "model"), "--segments", "3"])
    return d / "page.html"


def test_page_numbers_and_escaping(tiny_llama, gpt2_tokenizer):
    page = inspect_rows(ROWS, tiny_llama, gpt2_tokenizer)
    res = RePROScorer(tiny_llama, gpt2_tokenizer).score(
        [gpt2_tokenizer.encode(r["prompt"]) for r in ROWS],
        [gpt2_tokenizer.encode(r["response"]) for r in ROWS],
        [r["answer"] for r in ROWS],
    )
    for b in range(len(ROWS)):
        m = len(res.points[b]) - 1
        assert m >= 2  # the "\n\n" boundaries give segments
        for j in range(1, m + 1):  # every segment's row: J, S_magn, S_stab, S, r
            cells = (
                f"<td>{-res.nll[b][j]:.4f}</td><td>{res.s_magn[b][j - 1]:.4f}</td>"
                f"<td>{res.s_stab[b][j - 1]:.4f}</td><td>{res.score[b][j - 1]:.4f}</td>"
                f"<td>{res.rewards[b][j - 1]:+.4f}</td>"
            )
            assert cells in page
        assert f"S = {res.score[b][-1]:.4f} (= Σ r)" in page
        z = normalized(res.rewards[b].tolist())
        assert abs(sum(z)) < 1e-6 and abs(sum(v * v for v in z) / len(z) - 1) < 1e-3
    assert page.count('<div class="cot">') == 2 and page.count("<svg") == 2 and page.count("<polyline") == 2
    assert "<script" not in page.lower() and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;/span&gt;" in page
    assert EXTERNAL.search(page) is None


def test_normalized_matches_spec():
    z = normalized([1.0, 2.0, 4.0])
    mu, sd = 7 / 3, ((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) ** 0.5 / 3 ** 0.5
    assert z == pytest.approx([(x - mu) / (sd + 1e-6) for x in (1.0, 2.0, 4.0)])
    assert normalized([0.3]) == [0.0] and normalized([]) == []


def test_browser_loads_and_renders(page_file, tmp_path):
    page = page_file.read_text()
    assert EXTERNAL.search(page) is None and "<script" not in page.lower()
    dom, console = chromium(page_file.as_uri(), tmp_path, "--dump-dom")
    assert console == []
    assert dom.count('class="cot"') == 2 and dom.count("<circle") >= 6 and "<script" not in dom.lower()
    assert "&lt;script&gt;alert('x')&lt;/script&gt;" in dom  # shown as text
    shot = tmp_path / "shot.png"
    chromium(
        page_file.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1000,1400", "--hide-scrollbars"
    )
    from PIL import Image

    colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # text, colours and the plot, not a blank page


def test_browser_check_catches_console_errors(tmp_path):
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><p>x</p><script>console.error('boom'); missing()</script>")
    _, console = chromium(bad.as_uri(), tmp_path, "--dump-dom")
    assert any("boom" in c for c in console) and any("missing is not defined" in c for c in console)


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({"prompt": "p", "response": "r"}) + "\n")
    out = str(tmp_path / "p.html")
    assert "--input: file" in _cli_error(
        ["inspect", "--input", str(tmp_path / "no.jsonl"), "--out", out], capsys
    )
    err = _cli_error(["inspect", "--input", str(rows), "--out", out], capsys)
    assert "--input: line 2" in err and "'answer'" in err
    assert "--out:" in _cli_error(["inspect", "--input", str(rows), "--out", str(tmp_path)], capsys)
    assert "--segments:" in _cli_error(
        ["inspect", "--input", str(rows), "--out", out, "--segments", "0"], capsys
    )
    assert not os.path.exists(out)


# --- layout: wrapping, chart axes and labels, the think-end note --------------------------------

LAYOUT_ROWS = [
    # a 400-character line with no break opportunity, and a think-end marker with text after it
    {
        "prompt": "What is 3 + 4?",
        "answer": "7",
        "response": "Step one.\n\n" + "x" * 400 + "\n\n3 + 4 = 7.\n</think>\n\nThe answer is \\boxed{7}.",
    },
    # 20 points crowded into the first sixth of the response: their numbers cannot all fit
    {
        "prompt": "Count.",
        "answer": "30",
        "response": "".join(f"{i}.\n\n" for i in range(1, 31)) + " ten" * 300,
    },
]
# Runs in a copy of the page only (the page itself holds no script): how wide the document is, and
# every pair of chart labels (or label and point) whose boxes overlap.
PROBE = """<script>addEventListener('load', () => {
  const r = {scrollWidth: document.documentElement.scrollWidth, innerWidth: innerWidth,
             overlaps: [], labels: 0};
  for (const svg of document.querySelectorAll('svg')) {
    const items = [...svg.querySelectorAll('text, circle')].map(e => [e.tagName, e.textContent, e.getBBox()]);
    r.labels += items.filter(i => i[0] === 'text').length;
    items.forEach(([ta, la, a], i) => items.slice(i + 1).forEach(([tb, lb, b]) => {
      if (ta === 'circle' && tb === 'circle') return;
      if (a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height)
        r.overlaps.push([ta, la, tb, lb]);
    }));
  }
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(r);
  document.body.append(pre);
});</script>"""


@pytest.fixture(scope="module")
def layout_page(tmp_path_factory, tiny_llama, gpt2_tokenizer):
    d = tmp_path_factory.mktemp("layout")
    tiny_llama.save_pretrained(d / "model")
    gpt2_tokenizer.save_pretrained(d / "model")
    (d / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in LAYOUT_ROWS))
    main(["inspect", "--input", str(d / "rows.jsonl"), "--out", str(d / "page.html"), "--model",
          str(d / "model")])
    return d / "page.html"


@pytest.mark.parametrize("width", [1200, 700])
def test_browser_page_fits_the_window_and_labels_do_not_collide(layout_page, tmp_path, width):
    probed = tmp_path / "probed.html"
    probed.write_text(layout_page.read_text().replace("</body>", PROBE + "</body>"))
    dom, console = chromium(probed.as_uri(), tmp_path, "--dump-dom", f"--window-size={width},900")
    assert console == []
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert found, dom[-2000:]
    r = json.loads(found[1])
    assert r["innerWidth"] == width
    assert r["scrollWidth"] <= r["innerWidth"], r  # no horizontal scrollbar: the 400-x line wraps
    assert r["overlaps"] == [], r["overlaps"]
    assert r["labels"] >= 20  # axis ticks and point numbers are drawn


def _chart(page: str, b: int) -> str:
    return re.findall(r"<svg.*?</svg>", page, re.S)[b]


def test_chart_x_ticks_at_token_positions(tiny_llama, gpt2_tokenizer):
    page = inspect_rows(LAYOUT_ROWS, tiny_llama, gpt2_tokenizer)
    res = RePROScorer(tiny_llama, gpt2_tokenizer).score(
        [gpt2_tokenizer.encode(r["prompt"]) for r in LAYOUT_ROWS],
        [gpt2_tokenizer.encode(r["response"]) for r in LAYOUT_ROWS], [r["answer"] for r in LAYOUT_ROWS])
    for b, row in enumerate(LAYOUT_ROWS):
        svg, n = _chart(page, b), len(gpt2_tokenizer.encode(row["response"]))
        axis_y = max(
            float(y) for y in re.findall(r'<line x1="[\d.]+" y1="([\d.]+)" x2="[\d.]+" y2="\1"', svg)
        )
        ticks = {
            int(t): float(x)
            for x, t in re.findall(rf'<text x="([\d.]+)" y="{axis_y + 16:g}"[^>]*>(\d+)</text>', svg)
        }
        assert set(nice_ticks(n)) <= set(ticks) and max(ticks) <= n and len(ticks) <= 9
        (p0, x0), (p1, x1) = min(ticks.items()), max(ticks.items())
        for p, cx in zip(
            res.points[b], re.findall(r'<circle cx="([\d.]+)"', svg)
        ):  # each point over its token
            assert float(cx) == pytest.approx(x0 + (x1 - x0) * (p - p0) / (p1 - p0), abs=0.11)


def test_nice_ticks():
    assert nice_ticks(0) == [0] and nice_ticks(7) == list(range(8)) and nice_ticks(174) == [0, 50, 100, 150]
    assert nice_ticks(4000) == [0, 1000, 2000, 3000, 4000]
    for n in range(0, 3000, 37):
        t = nice_ticks(n)
        assert t[0] == 0 and t[-1] <= n and 2 <= len(t) <= 8 or n < 1


def test_header_says_whether_the_think_end_was_found(tiny_llama, gpt2_tokenizer):
    page = inspect_rows(LAYOUT_ROWS[:1] + ROWS[1:], tiny_llama, gpt2_tokenizer)
    head, first, second = page.split("<section>")
    assert "1 of 2 responses have the think end &#x27;&lt;/think&gt;&#x27;" in head
    assert "think end &#x27;&lt;/think&gt;&#x27; found</span>: scored up to token" in first
    assert "no think end &#x27;&lt;/think&gt;&#x27; in the response</span>" in second
    assert "no response has the think end" in inspect_rows(ROWS, tiny_llama, gpt2_tokenizer)
    assert "every response has the think end" in inspect_rows(LAYOUT_ROWS[:1], tiny_llama, gpt2_tokenizer)

# ==========================================================================================
# Bad inputs: nothing lost, no traceback, checked before the model loads
# ==========================================================================================


OK = {"prompt": "What is 3 + 4?", "response": "3 + 4 = 7.\n\nSo the answer is \\boxed{7}.", "answer": "7"}


def _save(tmp_path_factory, factory, tokenizer, arch: str):
    d = tmp_path_factory.mktemp(f"model_{arch}")
    factory(arch).save_pretrained(d)  # GPT-2's BPE: no chat template
    tokenizer.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory, tiny_model_factory, gpt2_tokenizer):
    """A rotary model (max_position_embeddings = 512) whose tokenizer has no chat template."""
    return _save(tmp_path_factory, tiny_model_factory, gpt2_tokenizer, "llama")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, tiny_model_factory, gpt2_tokenizer):
    """Learned positions (n_positions = 512)."""
    return _save(tmp_path_factory, tiny_model_factory, gpt2_tokenizer, "gpt2")


def _rows(path, *rows) -> str:
    """JSON lines (a str row is written as it is, e.g. a blank line)."""
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8"
    )
    return str(path)


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def _refuse(what: str):
    def refuse(*_a, **_k):
        raise AssertionError(f"{what} before the input was checked")

    return refuse


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if the tokenizer or the model is loaded (errors that need neither come first)."""
    monkeypatch.setattr(inspector, "_load_tokenizer", _refuse("the tokenizer was loaded"))
    monkeypatch.setattr(inspector, "_load_model", _refuse("the model was loaded"))


@pytest.fixture
def no_scoring(monkeypatch):
    """Fail the test if the model's weights load or scoring starts (the token checks come first)."""
    monkeypatch.setattr(inspector, "_load_model", _refuse("the model's weights were loaded"))
    monkeypatch.setattr(inspector.RePROScorer, "score", _refuse("scoring started"))


# --- nothing is written over -----------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["same", "dotdot", "symlink"])
def test_out_may_not_be_the_input(tmp_path, capsys, monkeypatch, no_model_load, spelling):
    monkeypatch.chdir(tmp_path)
    rows = _rows(tmp_path / "rows.jsonl", OK)
    before = (tmp_path / "rows.jsonl").read_bytes()
    (tmp_path / "sub").mkdir()
    if spelling == "symlink":
        os.symlink(tmp_path / "rows.jsonl", tmp_path / "link.html")
    out = {"same": rows, "dotdot": "./sub/../rows.jsonl",
           "symlink": str(tmp_path / "link.html")}[spelling]
    for extra in ([], ["--overwrite"]):  # --overwrite never makes the input writable
        err = _error(["inspect", "--input", rows, "--out", out, *extra], capsys)
        assert "--out:" in err and "input file" in err
    assert (tmp_path / "rows.jsonl").read_bytes() == before


def test_existing_out_needs_overwrite(tmp_path, capsys, llama_dir):
    rows = _rows(tmp_path / "rows.jsonl", OK)
    out = tmp_path / "page.html"
    out.write_text("my notes")
    err = _error(["inspect", "--input", rows, "--out", str(out), "--model", llama_dir], capsys)
    assert "--out:" in err and "exists" in err and "--overwrite" in err
    assert out.read_text() == "my notes"
    with pytest.raises(UsageError, match="^out: .* exists"):  # the library call refuses it too
        inspector.run_inspect(rows, str(out), model=llama_dir)
    main(["inspect", "--input", rows, "--out", str(out), "--model", llama_dir, "--segments", "3",
          "--overwrite"])
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("page.html.")] == []  # no temp file left


# --- every bad input is a message naming the flag and the line --------------------------------


def test_bad_rows_name_the_line(tmp_path, capsys, llama_dir, no_model_load):
    out = tmp_path / "page.html"

    def err_for(*rows) -> str:
        path = _rows(tmp_path / "rows.jsonl", *rows)
        return _error(["inspect", "--input", path, "--out", str(out), "--model", llama_dir], capsys)

    # A blank line still counts: the bad row is line 3.
    err = err_for(OK, "", dict(OK, answer=""))
    assert "--input: line 3" in err and "'answer' is empty" in err
    assert "--input: line 3" in err_for(OK, "", dict(OK, answer="  "))
    err = err_for(OK, "", '{"prompt": "a\\ud800b", "response": "x", "answer": "1"}')
    assert "--input: line 3" in err and "'prompt'" in err and "surrogate" in err and "character 2" in err
    err = err_for(OK, "", '{"prompt": "p", "response": "x\\udfff", "answer": "1"}')
    assert "--input: line 3" in err and "'response'" in err and "surrogate" in err
    err = err_for(OK, "", "[1, 2]")
    assert "--input: line 3" in err and "JSON list" in err
    (tmp_path / "rows.jsonl").write_bytes(json.dumps(OK).encode() + b"\n\n" + b'{"prompt": "caf\xe9"}\n')
    err = _error(
        ["inspect", "--input", str(tmp_path / "rows.jsonl"), "--out", str(out), "--model", llama_dir], capsys
    )
    assert "--input: line 3" in err and "not UTF-8" in err and "0xe9" in err and "column 16" in err
    assert not out.exists()


def test_utf8_byte_order_mark_is_read(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(OK).encode() + b"\r\n")
    assert inspector.read_rows(str(path)) == [{**OK, "line": 1}]


def test_bad_segments_and_model_folder(tmp_path, capsys, no_model_load):
    rows, out = _rows(tmp_path / "rows.jsonl", OK), str(tmp_path / "page.html")
    for k in ("100000", "0", "-1"):
        err = _error(["inspect", "--input", rows, "--out", out, "--segments", k], capsys)
        assert "--segments:" in err and "65536" in err
    (tmp_path / "empty_folder").mkdir()
    err = _error(
        ["inspect", "--input", rows, "--out", out, "--model", str(tmp_path / "empty_folder")], capsys
    )
    assert "--model:" in err and "config.json" in err
    (tmp_path / "bad_config").mkdir()
    (tmp_path / "bad_config" / "config.json").write_text("{}")
    err = _error(["inspect", "--input", rows, "--out", out, "--model", str(tmp_path / "bad_config")], capsys)
    assert "--model:" in err
    err = _error(["inspect", "--input", rows, "--out", out, "--model", rows], capsys)
    assert "--model:" in err and "not a folder" in err
    assert not os.path.exists(out)


def test_model_folder_without_weights(tmp_path, capsys, llama_dir):
    folder = tmp_path / "no_weights"
    folder.mkdir()
    for name in os.listdir(llama_dir):
        if not name.endswith(".safetensors"):
            (folder / name).write_bytes((open(os.path.join(llama_dir, name), "rb")).read())
    rows, out = _rows(tmp_path / "rows.jsonl", OK), tmp_path / "page.html"
    err = _error(["inspect", "--input", rows, "--out", str(out), "--model", str(folder)], capsys)
    assert "--model:" in err and not out.exists()


def test_tokenizer_of_another_model(tmp_path, capsys, tiny_model_factory, gpt2_tokenizer, monkeypatch):
    folder = tmp_path / "small_vocab"
    tiny_model_factory("llama", vocab_size=1000).save_pretrained(folder)  # GPT-2's 50257 ids do not fit
    gpt2_tokenizer.save_pretrained(folder)
    monkeypatch.setattr(inspector.RePROScorer, "score", _refuse("scoring started"))
    rows, out = _rows(tmp_path / "rows.jsonl", OK), tmp_path / "page.html"
    err = _error(["inspect", "--input", rows, "--out", str(out), "--model", str(folder)], capsys)
    assert "--model:" in err and "line 1" in err and "1000-row embedding" in err
    assert not out.exists()


def test_empty_prompt_without_chat_template(tmp_path, capsys, llama_dir, no_scoring):
    rows, out = _rows(tmp_path / "rows.jsonl", OK, dict(OK, prompt="")), tmp_path / "page.html"
    err = _error(["inspect", "--input", rows, "--out", str(out), "--model", llama_dir], capsys)
    assert "--input: line 2" in err and "'prompt'" in err and "chat template" in err
    assert not out.exists()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])  # rotary positions, learned positions
def test_longer_than_the_model(tmp_path, capsys, llama_dir, gpt2_dir, no_scoring, arch):
    model = {"llama": llama_dir, "gpt2": gpt2_dir}[arch]
    long = dict(OK, response=" seven" * 600)  # 600 tokens > 512 positions
    rows, out = _rows(tmp_path / "rows.jsonl", OK, long), tmp_path / "page.html"
    err = _error(["inspect", "--input", rows, "--out", str(out), "--model", model], capsys)
    assert "--input: line 2" in err and "max_position_embeddings" in err and "512" in err
    assert not out.exists()


def test_megabyte_line_is_refused_quickly(tmp_path, capsys, llama_dir, no_scoring):
    """A 1.2 MB row (no spaces, no paragraphs) used to run past 300 s without a word."""
    rows = _rows(tmp_path / "rows.jsonl", dict(OK, response="x7" * 600_000))
    out = tmp_path / "page.html"
    start = time.perf_counter()
    err = _error(["inspect", "--input", rows, "--out", str(out), "--model", llama_dir], capsys)
    assert time.perf_counter() - start < 60
    assert "--input: line 1" in err and "max_position_embeddings" in err
    assert "1.2 MB" in err  # the progress line before loading the model
    assert not out.exists()


def test_progress_before_scoring(tmp_path, capsys, llama_dir, monkeypatch):
    """A valid input says what it does before the model loads and before scoring starts."""
    seen = {}
    score = inspector.RePROScorer.score

    def spy(self, *a, **k):
        seen["before_scoring"] = capsys.readouterr().err
        return score(self, *a, **k)

    monkeypatch.setattr(inspector.RePROScorer, "score", spy)
    rows, out = _rows(tmp_path / "rows.jsonl", OK, dict(OK, response=" seven" * 400)), tmp_path / "page.html"
    main(["inspect", "--input", rows, "--out", str(out), "--model", llama_dir, "--segments", "4"])
    assert "tokenizing with" in seen["before_scoring"] and "loading model" in seen["before_scoring"]
    assert "scoring 2 chains of thought" in seen["before_scoring"] and "tokens" in seen["before_scoring"]
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_the_bundled_example_input_is_valid(gpt2_tokenizer):
    """`repro-fast examples` writes it; README's inspect command reads it: real rows, each encodable."""
    from repro_fast.cli import examples_dir
    from repro_fast.config import RePROConfig

    path = str(examples_dir() / "inspect_gsm8k.jsonl")
    rows = inspector.read_rows(path)
    assert rows and all(row["answer"].strip() and "\n\n" in row["response"] for row in rows)
    prompts, responses = inspector.encode_rows(rows, gpt2_tokenizer, RePROConfig(), None, path, "gpt2")
    assert all(prompts) and all(responses)
