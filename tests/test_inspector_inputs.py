"""`repro-fast inspect` loses nothing and never ends in a traceback: the output may not be the input
(under any spelling) and an existing output is replaced only with --overwrite; every bad input
(row, model folder, --segments) is an exit-2 message naming the flag and the line, raised before the
model loads or scores and before any file is written; a long valid input says what it is doing
before the steps that take time. Tiny random models saved to tmp folders; nothing downloads."""

from __future__ import annotations

import json
import os
import time

import pytest

import repro_fast.inspector as inspector
from repro_fast.cli import main
from repro_fast.outputs import UsageError

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
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
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


# --- 2. nothing is written over -----------------------------------------------------------------


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
    main(["inspect", "--input", rows, "--out", str(out), "--model", llama_dir, "--segments", "3", "--overwrite"])
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("page.html.")] == []  # no temp file left


# --- 9. every bad input is a message naming the flag and the line --------------------------------


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
    err = _error(["inspect", "--input", str(tmp_path / "rows.jsonl"), "--out", str(out), "--model", llama_dir],
                 capsys)
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
    err = _error(["inspect", "--input", rows, "--out", out, "--model", str(tmp_path / "empty_folder")], capsys)
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
