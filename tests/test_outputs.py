"""`repro_fast.outputs`, nothing lost: no command writes over or deletes a file that an earlier run of
the same command did not create (--overwrite included), and none writes, deletes or trains anything
before every argument and setting is checked."""

from __future__ import annotations

import functools
import json
import os

import pytest

import repro_fast.grpo.demo as grpo_demo
import repro_fast.grpo.loop as loop
import repro_fast.grpo.sft as sft
from repro_fast.cli import main
from repro_fast.outputs import MANIFEST, UsageError, check_run_dir, read_manifest


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Any SFT or GRPO work reached by a test fails it (a test that means to reach it fakes it)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the arguments were validated")

    for module, name in ((sft, "_run_sft"), (loop, "_train"), (loop, "run_sft")):
        monkeypatch.setattr(module, name, forbidden)


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("repro-fast: error: ") and "Traceback" not in err
    return err


def _snapshot(folder) -> dict:
    """Every file under ``folder`` with its text: what a refused command must leave as it was."""
    return {os.path.relpath(os.path.join(d, f), folder): open(os.path.join(d, f)).read()
            for d, _, files in os.walk(folder) for f in files}


def _user_files(folder, names=("config.json", "summary.json"), dirs=("plots", "final")) -> dict:
    """A folder that never held a run, with names a run writes: the user's own files."""
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / name).write_text(f"the user's {name}\n")
    for name in dirs:
        (folder / name).mkdir()
        (folder / name / "mine.txt").write_text("the user's\n")
    return _snapshot(folder)


def _fake_sft_run(config):
    """What `run_sft` leaves, without training: a checkpoint file and the summary, in the manifest."""
    _, _, run_dir = sft.check_sft(config)
    run_dir.claim()
    with open(run_dir.record("model.safetensors"), "w") as fp:
        fp.write("new\n")
    with open(run_dir.record("sft_summary.json"), "w") as fp:
        json.dump({"config": {}}, fp)
    return {"params": 1, "train_s": 0.0, "eval_accuracy": 0.0, "eval_response_length": 0.0}


# --- fault 1: train --overwrite deleted a folder's files, then failed on --init ----------------------------

def test_train_overwrite_with_a_bad_init_deletes_nothing(tmp_path, capsys):
    before = _user_files(tmp_path / "out")
    argv = ["train", "--out", str(tmp_path / "out"), "--overwrite", "--init", "/nonexistent"]
    err = _cli_error(argv, capsys)
    assert "--init: checkpoint folder '/nonexistent' does not exist" in err
    assert _snapshot(tmp_path / "out") == before
    (tmp_path / "not_a_checkpoint").mkdir()
    err = _cli_error(["train", "--out", str(tmp_path / "out"), "--overwrite", "--init",
                      str(tmp_path / "not_a_checkpoint")], capsys)
    assert "--init:" in err and "is not a checkpoint folder" in err
    assert _snapshot(tmp_path / "out") == before


def test_train_overwrite_refuses_a_folder_no_train_run_wrote(tmp_path, capsys):
    before = _user_files(tmp_path)
    err = _cli_error(["train", "--out", str(tmp_path), "--overwrite"], capsys)
    assert "--out:" in err and "holds no earlier `repro-fast train` run" in err
    assert _snapshot(tmp_path) == before


def test_train_refuses_an_init_inside_out(tmp_path, capsys):
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "config.json").write_text("{}")
    (tmp_path / MANIFEST).write_text(json.dumps({"command": "train", "created": ["final"]}))
    before = _snapshot(tmp_path)
    argv = ["train", "--out", str(tmp_path), "--overwrite", "--init", str(tmp_path / "final")]
    err = _cli_error(argv, capsys)
    assert "--init:" in err and "is inside --out" in err  # --overwrite would delete the checkpoint first
    assert _snapshot(tmp_path) == before


def test_train_overwrite_keeps_a_file_of_yours_and_refuses_one_it_would_write_over(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("old run\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / MANIFEST).write_text(json.dumps({"command": "train", "created": ["metrics.jsonl"]}))
    run_dir = loop.check_train(loop.GRPOConfig(out=str(tmp_path), overwrite=True, init=None, task="gsm8k"))
    run_dir.claim()
    assert sorted(os.listdir(tmp_path)) == [MANIFEST, "notes.txt"]
    (tmp_path / "summary.json").write_text("mine\n")  # a name the run writes, not written by the run
    with pytest.raises(UsageError, match="summary.json, which the earlier `repro-fast train` run did not"):
        loop.check_train(loop.GRPOConfig(out=str(tmp_path), overwrite=True, task="gsm8k"))


# --- fault 2: sft replaced the user's config.json -------------------------------------------------

def test_sft_refuses_a_folder_of_your_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = _user_files(tmp_path, names=("config.json",), dirs=())
    err = _cli_error(["sft", "--out", "."], capsys)
    assert "--out: folder '.' is not empty (config.json) and holds no earlier `repro-fast sft` run" in err
    err = _cli_error(["sft", "--out", ".", "--overwrite"], capsys)
    assert "holds no earlier `repro-fast sft` run" in err
    assert _snapshot(tmp_path) == before


def test_sft_replaces_an_earlier_sft_run_only_with_overwrite(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sft, "run_sft", _fake_sft_run)
    out = str(tmp_path / "sft")
    main(["sft", "--out", out])
    assert read_manifest(out)["created"] == ["model.safetensors", "sft_summary.json"]
    err = _cli_error(["sft", "--out", out], capsys)
    assert "it holds an earlier `repro-fast sft` run" in err and "--overwrite" in err
    main(["sft", "--out", out, "--overwrite"])
    (tmp_path / "sft" / "notes.txt").write_text("mine\n")  # the folder is a checkpoint: nothing else in it
    err = _cli_error(["sft", "--out", out, "--overwrite"], capsys)
    assert "notes.txt, which the earlier `repro-fast sft` run did not create" in err
    assert (tmp_path / "sft" / "notes.txt").read_text() == "mine\n"


def test_sft_checks_init_before_writing(tmp_path, capsys):
    err = _cli_error(["sft", "--out", str(tmp_path / "out"), "--init", str(tmp_path / "missing")], capsys)
    assert "--init: checkpoint folder" in err and not (tmp_path / "out").exists()
    err = _cli_error(["sft", "--out", str(tmp_path), "--init", str(tmp_path)], capsys)
    assert "--init:" in err and "is --out" in err


# --- demo and study replace their own earlier runs, nothing else ----------------------------------

@pytest.mark.parametrize("command", ["demo", "study"])
def test_demo_and_study_refuse_a_folder_of_your_files(command, tmp_path, capsys):
    before = _user_files(tmp_path, names=("study.json", "demo_summary.json"), dirs=("plots", "sft", "seed0"))
    err = _cli_error([command, "--out", str(tmp_path)], capsys)
    assert f"holds no earlier `repro-fast {command}` run" in err
    assert _snapshot(tmp_path) == before


def test_demo_replaces_only_its_own_outputs(tmp_path, monkeypatch):
    calls = []
    fake = functools.wraps(grpo_demo.run_training_demo)(lambda **kwargs: calls.append(kwargs))  # its defaults
    monkeypatch.setattr(grpo_demo, "run_training_demo", fake)
    (tmp_path / "sft").mkdir()
    (tmp_path / "sft" / "model.safetensors").write_text("old\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / MANIFEST).write_text(json.dumps({"command": "demo", "created": ["sft", "plots"]}))
    main(["demo", "--out", str(tmp_path), "--steps", "2"])
    assert calls == [{"out": str(tmp_path), "steps": 2}]
    assert sorted(os.listdir(tmp_path)) == [MANIFEST, "notes.txt"]  # its old SFT went, the notes stayed
    assert set(read_manifest(str(tmp_path))["created"]) == {"sft", "repro", "grpo", "plots",
                                                             "demo_summary.json"}


def test_study_replaces_only_its_own_outputs(tmp_path, monkeypatch):
    for name in ("seed0", "seed3"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("old\n")
    (tmp_path / "study.json").write_text("old\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    earlier = {"command": "study", "created": ["seed0", "seed3", "study.json"]}
    (tmp_path / MANIFEST).write_text(json.dumps(earlier))
    seen = []
    monkeypatch.setattr(sft, "run_sft", lambda config: seen.append(sorted(os.listdir(tmp_path))))

    def fake_train(config):
        return {"eval": {"0": {"accuracy": 0.5, "response_length": 9.0}, "1": {"accuracy": 0.5,
                                                                          "response_length": 9.0}}}

    monkeypatch.setattr(loop, "train", fake_train)
    main(["study", "--out", str(tmp_path), "--seeds", "1", "--steps", "1", "--no-progress"])
    assert seen == [[MANIFEST, "notes.txt"]]  # the earlier study's outputs went before the SFT ran
    assert sorted(os.listdir(tmp_path)) == [MANIFEST, "notes.txt", "study.json", "study.md", "study.png"]
    assert (tmp_path / "notes.txt").read_text() == "mine\n"


# --- the check itself ------------------------------------------------------------------------------

def test_check_run_dir_touches_nothing(tmp_path):
    run_dir = check_run_dir(str(tmp_path / "a" / "b"), "train", overwrite=False)
    assert not (tmp_path / "a").exists()
    run_dir.claim()
    assert read_manifest(str(tmp_path / "a" / "b")) == {"command": "train", "created": []}
    (tmp_path / "a" / "b" / "metrics.jsonl").write_text("x")
    with pytest.raises(UsageError, match="a `repro-fast train` run.*holds no earlier `repro-fast sft` run"):
        check_run_dir(str(tmp_path / "a" / "b"), "sft", overwrite=True)
