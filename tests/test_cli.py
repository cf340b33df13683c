"""The CLI refuses bad arguments and output folders before any work (exit 2, `--flag:` messages),
protects a finished run unless --overwrite, and re-runs a cached toy SFT whose settings changed."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

import repro_fast.grpo.loop as loop
import repro_fast.grpo.sft as sft
from repro_fast.cli import main
from repro_fast.grpo import GRPOConfig


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Any SFT or GRPO work reached by a test fails it: validation must come first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the arguments were validated")

    monkeypatch.setattr(sft, "_run_sft", forbidden)
    monkeypatch.setattr(loop, "_train", forbidden)


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("repro-fast: error: ") and "Traceback" not in err
    return err


def _finished_run(folder) -> None:
    for name in ("metrics.jsonl", "summary.json", "config.json", "notes.txt"):
        (folder / name).write_text("old\n")
    for name in ("final", "plots", "checkpoint-5", "sft"):
        (folder / name).mkdir()
        (folder / name / "f").write_text("old\n")


def test_train_refuses_a_finished_run(tmp_path, capsys):
    _finished_run(tmp_path)
    err = _cli_error(["train", "--out", str(tmp_path), "--steps", "1"], capsys)
    assert "--out:" in err and "not empty" in err and "--overwrite" in err
    assert (tmp_path / "metrics.jsonl").read_text() == "old\n"


def test_overwrite_clears_only_the_runs_files(tmp_path):
    _finished_run(tmp_path)
    loop.prepare_out(str(tmp_path), overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt", "sft"]  # the cached SFT is checked, not deleted
    loop.prepare_out(str(tmp_path / "new" / "run"), overwrite=False)  # created
    assert os.path.isdir(tmp_path / "new" / "run")


@pytest.mark.parametrize("command", [["train"], ["demo"], ["sft"], ["study"]])
def test_bad_out_paths(command, tmp_path, capsys, monkeypatch):
    afile = tmp_path / "file"
    afile.write_text("x")
    err = _cli_error(command + ["--out", str(afile)], capsys)
    assert "--out:" in err and "is a file, not a folder" in err
    err = _cli_error(command + ["--out", str(afile / "sub")], capsys)
    assert "--out: cannot create folder" in err and "Not a directory" in err
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    err = _cli_error(command + ["--out", str(tmp_path / "ro")], capsys)
    assert "--out:" in err and "is not writable" in err


@pytest.mark.parametrize("argv, message", [
    (["demo", "--steps", "-1"], "--steps: expected an int >= 1, got -1"),
    (["demo", "--sft-steps", "0"], "--sft-steps: expected an int >= 1, got 0"),
    (["study", "--seeds", "0"], "--seeds: expected an int >= 1, got 0"),
    (["study", "--eval-problems", "0"], "--eval-problems: expected an int >= 1, got 0"),
    (["study", "--steps", "0"], "--steps: expected an int >= 1, got 0"),
    (["study", "--set", "groupsize=3"], "unknown key 'groupsize'"),
    (["study", "--set", "steps=3"], "--set: steps has its own flag, --steps"),
    (["study", "--set", "seed=1"], "--set: seed is chosen by the study for each run"),
    (["train", "--steps", "0"], "--steps: expected an int >= 1, got 0"),
    (["train", "--set", "sft_steps=-3"], "sft_steps: expected an int >= 1"),
    (["sft", "--steps", "0"], "--steps: expected an int >= 1, got 0"),
])
def test_bad_values_fail_before_any_work(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert message in _cli_error(argv + ["--out", str(out)], capsys)
    assert not out.exists()


def test_cached_sft_is_rerun_when_its_settings_differ(tmp_path, monkeypatch, capsys):
    calls = []

    def fake_sft(config):
        calls.append(config)
        os.makedirs(config.out, exist_ok=True)
        with open(os.path.join(config.out, "sft_summary.json"), "w") as fp:
            json.dump({"config": dataclasses.asdict(config)}, fp)
        return {"train_s": 0.0, "eval_accuracy": 0.5, "eval_response_length": 20.0}

    monkeypatch.setattr(loop, "run_sft", fake_sft)
    config = GRPOConfig(out=str(tmp_path), sft_steps=7, seed=1, progress=False)
    assert loop.warm_start(config) == str(tmp_path / "sft") and len(calls) == 1
    loop.warm_start(config)
    assert len(calls) == 1  # same settings: the cached checkpoint is reused
    capsys.readouterr()
    loop.warm_start(GRPOConfig(out=str(tmp_path), sft_steps=7, seed=2, progress=False))
    assert len(calls) == 2 and calls[-1].seed == 2 and "seed=1 -> 2" in capsys.readouterr().out
    loop.warm_start(GRPOConfig(out=str(tmp_path), sft_steps=9, seed=2, progress=False))
    assert len(calls) == 3 and calls[-1].steps == 9
    os.remove(tmp_path / "sft" / "sft_summary.json")  # an SFT that never finished
    loop.warm_start(GRPOConfig(out=str(tmp_path), sft_steps=9, seed=2, progress=False))
    assert len(calls) == 4
