"""`repro-fast inspect`: the page's numbers, escaping, no network resources, CLI errors, and a real
headless Chromium that loads it with no console message and renders it (Chromium missing: FAIL)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from repro_fast.cli import main
from repro_fast.inspector import inspect_rows, normalized
from repro_fast.scorer import RePROScorer

CHROMIUM = "/usr/bin/chromium"
EVIL = "<script>alert('x')</script> & </span>"
ROWS = [
    {"prompt": "What is 3 + 4?", "answer": "7",
     "response": f"First, 3 + 4 = 7.\n\nWait, {EVIL} let me check.\n\n3 + 4 = 7 again.\n\nSo \\boxed{{7}}."},
    {"prompt": "Compute 2 * 5 <b>now</b>.", "answer": "10", "response": "2 * 5 = 10.\n\nThe answer is \\boxed{10}."},
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
    main(["inspect", "--input", str(d / "rows.jsonl"), "--out", str(d / "page.html"), "--model", str(d / "model"),
          "--segments", "3"])
    return d / "page.html"


def test_page_numbers_and_escaping(tiny_llama, gpt2_tokenizer):
    page = inspect_rows(ROWS, tiny_llama, gpt2_tokenizer)
    res = RePROScorer(tiny_llama, gpt2_tokenizer).score(
        [gpt2_tokenizer.encode(r["prompt"]) for r in ROWS], [gpt2_tokenizer.encode(r["response"]) for r in ROWS],
        [r["answer"] for r in ROWS])
    for b in range(len(ROWS)):
        m = len(res.points[b]) - 1
        assert m >= 2  # the "\n\n" boundaries give segments
        for j in range(1, m + 1):  # every segment's row: J, S_magn, S_stab, S, r
            cells = (f"<td>{-res.nll[b][j]:.4f}</td><td>{res.s_magn[b][j - 1]:.4f}</td><td>{res.s_stab[b][j - 1]:.4f}"
                     f"</td><td>{res.score[b][j - 1]:.4f}</td><td>{res.rewards[b][j - 1]:+.4f}</td>")
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
    chromium(page_file.as_uri(), tmp_path, f"--screenshot={shot}", "--window-size=1000,1400", "--hide-scrollbars")
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
    assert "--input: file" in _cli_error(["inspect", "--input", str(tmp_path / "no.jsonl"), "--out", out], capsys)
    err = _cli_error(["inspect", "--input", str(rows), "--out", out], capsys)
    assert "--input: line 2" in err and "'answer'" in err
    assert "--out:" in _cli_error(["inspect", "--input", str(rows), "--out", str(tmp_path)], capsys)
    assert "--segments:" in _cli_error(["inspect", "--input", str(rows), "--out", out, "--segments", "0"], capsys)
    assert not os.path.exists(out)
