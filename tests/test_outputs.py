"""`repro_fast.outputs`, nothing lost: no command writes over or deletes a file that an earlier run of
the same command did not create (--overwrite included), and none writes, deletes or trains anything
before every argument and setting is checked."""

from __future__ import annotations

import functools
import json
import os
import stat

import pytest

import repro_fast.grpo.demo as grpo_demo
import repro_fast.grpo.loop as loop
import repro_fast.grpo.sft as sft
import repro_fast.grpo.study as study
from repro_fast.cli import main
from repro_fast.outputs import LOCK, MANIFEST, UsageError, check_run_dir, read_manifest


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    """Any SFT or GRPO work reached by a test fails it (a test that means to reach it fakes it)."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the arguments were validated")

    for module, name in ((sft, "_run_sft"), (loop, "_train"), (loop, "run_sft"), (study, "_pool")):
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
    assert sorted(os.listdir(tmp_path)) == sorted([LOCK, MANIFEST, "notes.txt"])  # locked while it runs
    run_dir.close()
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
    assert len(calls) == 1 and (calls[0]["out"], calls[0]["steps"]) == (str(tmp_path), 2)
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

    def fake_sft(config):
        seen.append(sorted(os.listdir(tmp_path)))
        return {"train_s": 0.0}

    monkeypatch.setattr(sft, "run_sft", fake_sft)

    def fake_train(config):
        return {"eval": {"0": {"accuracy": 0.5, "response_length": 9.0}, "1": {"accuracy": 0.5,
                                                                          "response_length": 9.0}}}

    monkeypatch.setattr(loop, "train", fake_train)
    monkeypatch.setattr(study, "_pool", lambda workers: None)  # the runs in this process, where the fakes are
    main(["study", "--out", str(tmp_path), "--seeds", "1", "--steps", "1", "--no-progress"])
    assert seen == [sorted([LOCK, MANIFEST, "notes.txt"])]  # the earlier study's outputs went before the SFT
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


# --- issue 27: a manifest is input; --overwrite checks every deletion first; --out a dangling link ----

def _earlier_sft(folder, created) -> None:
    """An earlier `repro-fast sft` run in ``folder`` whose manifest lists ``created`` (any JSON values)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_text("old\n")
    (folder / MANIFEST).write_text(json.dumps({"command": "sft", "created": ["model.safetensors", *created]}))


def _outside(tmp_path) -> dict:
    """Files and a folder next to the run folder, which no manifest entry may delete."""
    (tmp_path / "x").write_text("the user's x\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "keep.txt").write_text("the user's\n")
    return _snapshot(tmp_path)


@pytest.mark.parametrize("entry, problem", [
    ("../x", "not a plain relative path"),
    ("../dir", "not a plain relative path"),
    ("sub/../../x", "not a plain relative path"),
    ("ABSOLUTE_X", "an absolute path"),
    (".", "not a plain relative path"),
    ("", "not a name"),
    ("./", "not a plain relative path"),
    ("link_out", "resolves outside the folder"),  # a symlink in the folder to ../dir
    ("link_out/keep.txt", "resolves outside the folder"),  # ../dir/keep.txt, through that symlink
    (5, "expected a string, got int"),
    (None, "expected a string, got NoneType"),
    (["model.safetensors"], "expected a string, got list"),
    (LOCK, "bookkeeping file"),
])
def test_a_manifest_entry_outside_the_folder_is_refused_before_anything_is_deleted(entry, problem, tmp_path,
                                                                                   capsys):
    """issue 27 item 7: `sft --overwrite` deleted ../x, an absolute path or ../dir, exit 0; non-string
    entries gave a TypeError traceback. Now: exit 2 naming the manifest and the entry, nothing deleted."""
    entry = str(tmp_path / "x") if entry == "ABSOLUTE_X" else entry
    out = tmp_path / "run"
    link = isinstance(entry, str) and entry.startswith("link_out")
    _earlier_sft(out, [entry, "link_out"] if link else [entry])  # the link is the earlier run's too
    if link:
        (out / "link_out").symlink_to(tmp_path / "dir", target_is_directory=True)
    before = _outside(tmp_path)
    err = _cli_error(["sft", "--out", str(out), "--overwrite"], capsys)
    assert f"--out: the manifest {str(out / MANIFEST)!r} lists {entry!r}" in err and problem in err
    assert "nothing was deleted" in err
    assert _snapshot(tmp_path) == before  # inside the folder and out of it
    assert os.path.islink(out / "link_out") == link


def test_a_dot_entry_in_a_train_manifest_deletes_nothing(tmp_path, capsys):
    """issue 27 item 7: an entry `.` deleted the whole train folder, the user's notes included."""
    (tmp_path / "metrics.jsonl").write_text("old\n")
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / MANIFEST).write_text(json.dumps({"command": "train", "created": ["metrics.jsonl", "."]}))
    before = _snapshot(tmp_path)
    err = _cli_error(["train", "--out", str(tmp_path), "--overwrite", "--task", "gsm8k"], capsys)
    assert "lists '.', which is not a plain relative path" in err
    assert _snapshot(tmp_path) == before


def test_an_sft_sub_manifest_outside_its_folder_is_refused_by_train(tmp_path, capsys):
    """issue 27 item 7: a train folder's sft/ manifest listing ../../victim.txt deleted it on
    `train --overwrite`. Now refused before the train folder's own files are touched either."""
    (tmp_path / "victim.txt").write_text("the user's\n")
    run = tmp_path / "r1"
    run.mkdir()
    (run / "metrics.jsonl").write_text("old\n")
    (run / MANIFEST).write_text(json.dumps({"command": "train", "created": ["metrics.jsonl", "sft"]}))
    _earlier_sft(run / "sft", ["../../victim.txt"])
    before = _snapshot(tmp_path)
    err = _cli_error(["train", "--out", str(run), "--overwrite"], capsys)  # toy: warm-starts into r1/sft
    assert f"the manifest {str(run / 'sft' / MANIFEST)!r} lists '../../victim.txt'" in err
    assert _snapshot(tmp_path) == before


def test_manifest_entries_inside_the_folder_are_deleted_and_links_only_as_links(tmp_path, monkeypatch):
    """What a manifest may list: nested paths and symlinks that stay inside the folder. A symlink is
    deleted itself, never what it points to."""
    monkeypatch.setattr(sft, "run_sft", _fake_sft_run)
    out = tmp_path / "run"
    _earlier_sft(out, ["sub/f", "link_in"])
    (out / "sub").mkdir()
    (out / "sub" / "f").write_text("old\n")
    (out / "target.txt").write_text("old\n")
    (out / "link_in").symlink_to(out / "target.txt")
    (out / MANIFEST).write_text(json.dumps({"command": "sft", "created": [
        "model.safetensors", "sub/f", "sub", "link_in", "target.txt"]}))
    main(["sft", "--out", str(out), "--overwrite"])
    assert sorted(os.listdir(out)) == [MANIFEST, "model.safetensors", "sft_summary.json"]
    assert (out / "model.safetensors").read_text() == "new\n"


def _unprivileged_access(monkeypatch) -> None:
    """`os.access` as an unprivileged owner sees it (the tests may run as root, which may delete all)."""
    bits = {os.R_OK: stat.S_IRUSR, os.W_OK: stat.S_IWUSR, os.X_OK: stat.S_IXUSR}

    def access(path, mode, **kwargs):
        try:
            st = os.stat(path)
        except OSError:
            return False
        return all(st.st_mode & bit for flag, bit in bits.items() if mode & flag)

    monkeypatch.setattr(os, "access", access)


@pytest.fixture
def read_only_plots(tmp_path, monkeypatch):
    """An earlier train run in tmp_path whose plots/ holds a read-only folder: it cannot be deleted."""
    for name in ("metrics.jsonl", "summary.json"):
        (tmp_path / name).write_text("old\n")
    (tmp_path / "plots" / "locked").mkdir(parents=True)
    (tmp_path / "plots" / "locked" / "p.png").write_text("old\n")
    (tmp_path / MANIFEST).write_text(json.dumps({"command": "train",
                                                 "created": ["metrics.jsonl", "plots", "summary.json"]}))
    _unprivileged_access(monkeypatch)
    os.chmod(tmp_path / "plots" / "locked", 0o555)
    yield tmp_path
    if os.path.isdir(tmp_path / "plots" / "locked"):  # (the old code deleted it)
        os.chmod(tmp_path / "plots" / "locked", 0o755)


def test_overwrite_checks_every_deletion_before_deleting_any(read_only_plots, capsys):
    """issue 27 item 9: `--overwrite` over a run whose plots/ cannot be deleted gave a PermissionError
    traceback after the other files were already deleted. Now: exit 2 before any deletion."""
    before = _snapshot(read_only_plots)
    err = _cli_error(["train", "--out", str(read_only_plots), "--overwrite", "--task", "gsm8k"], capsys)
    locked = str(read_only_plots / "plots" / "locked")
    assert "cannot replace the earlier `repro-fast train` run's 'plots'" in err
    assert f"folder {locked!r} is not writable" in err and "nothing was deleted" in err
    assert _snapshot(read_only_plots) == before


def test_claim_checks_deletions_again(read_only_plots):
    """A folder made undeletable between the check and the claim: `claim` refuses it too, and deletes
    nothing."""
    os.chmod(read_only_plots / "plots" / "locked", 0o755)
    run_dir = loop.check_train(loop.GRPOConfig(out=str(read_only_plots), overwrite=True, task="gsm8k"))
    os.chmod(read_only_plots / "plots" / "locked", 0o555)
    before = _snapshot(read_only_plots)
    with pytest.raises(UsageError, match="nothing was deleted"):
        run_dir.claim()
    assert _snapshot(read_only_plots) == before


@pytest.mark.parametrize("command", ["train", "sft", "study", "demo"])
def test_out_a_dangling_symlink_says_so(command, tmp_path, capsys):
    """issue 27 item 10: `--out` a dangling symlink said "'dangling' is a file, not a folder"."""
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    err = _cli_error([command, "--out", str(tmp_path / "dangling")], capsys)
    assert f"--out: {str(tmp_path / 'dangling')!r} is a symbolic link to {str(tmp_path / 'gone')!r}, which " \
           "does not exist" in err
    assert "is a file" not in err and not os.path.lexists(tmp_path / "gone")


def test_a_planted_manifest_tmp_symlink_is_not_written_through(tmp_path):
    """The manifest is written through a temporary file: one left in the folder as a symlink to a
    file of the user's is replaced, never written through."""
    (tmp_path / "victim.txt").write_text("the user's\n")
    (tmp_path / MANIFEST).write_text(json.dumps({"command": "train", "created": []}))
    (tmp_path / (MANIFEST + ".tmp")).symlink_to(tmp_path / "victim.txt")
    loop.check_train(loop.GRPOConfig(out=str(tmp_path), overwrite=True, task="gsm8k")).claim().close()
    assert (tmp_path / "victim.txt").read_text() == "the user's\n"
    assert read_manifest(str(tmp_path)) == {"command": "train", "created": []}
    assert sorted(os.listdir(tmp_path)) == [MANIFEST, "victim.txt"]
