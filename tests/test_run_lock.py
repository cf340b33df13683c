"""`repro_fast.outputs`: a run holds an exclusive lock on its output folder for as long as it writes
it, so that two runs on one folder at the same time cannot mix their files (issue 27 item 8: two
`repro-fast sft` on one new --out both exited 0, the folder holding one seed's weights and the other's
summary). The second run is refused at once, before it deletes or trains anything, whichever of them
checked the folder first; the lock goes with the run (its end, `close`, or the process dying)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from test_outputs import _cli_error, no_training  # noqa: F401  (an autouse fixture: no work may start)

import repro_fast.outputs as outputs
from repro_fast.outputs import LOCK, MANIFEST, UsageError, check_run_dir, read_manifest

# Another process that claims a run folder and holds it until told to go: outputs.py loaded on its
# own (it needs only the standard library), so that the process starts in a fraction of a second.
HOLDER = textwrap.dedent("""
    import importlib.util, json, os, sys
    spec = importlib.util.spec_from_file_location("outputs_holder", sys.argv[1])
    outputs = sys.modules["outputs_holder"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(outputs)
    folder, command, writes = sys.argv[2], sys.argv[3], tuple(json.loads(sys.argv[4]))
    run_dir = outputs.check_run_dir(folder, command, overwrite=True, writes=writes, flag=None).claim()
    with open(run_dir.record("model.safetensors"), "w") as fp:
        fp.write("the first run's\\n")
    print("claimed", flush=True)
    sys.stdin.readline()  # the test says when this run ends
    with open(run_dir.record("sft_summary.json"), "w") as fp:
        fp.write("the first run's\\n")
""")


class Holder:
    """A second process running ``command`` in ``folder``: it claims it, writes model.safetensors,
    then waits; `finish` lets it write sft_summary.json and end, `kill` kills it."""

    def __init__(self, folder, command: str = "sft", writes=("*",)):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, outputs.__file__, str(folder), command, json.dumps(list(writes))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line == "claimed\n", self.proc.communicate(timeout=30)

    def finish(self) -> None:
        out, err = self.proc.communicate("go\n", timeout=60)
        assert self.proc.returncode == 0, err

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)


@pytest.fixture
def holders():
    """Every holder a test starts; any still running at the end is killed."""
    started = []
    yield lambda *args, **kwargs: started.append(Holder(*args, **kwargs)) or started[-1]
    for holder in started:
        if holder.proc.poll() is None:
            holder.kill()


def _files(folder) -> dict:
    return {name: (folder / name).read_text() for name in sorted(os.listdir(folder))
            if (folder / name).is_file()}


def test_a_second_sft_on_a_folder_being_written_is_refused(tmp_path, capsys, holders):
    out = tmp_path / "new"
    first = holders(out)
    before = _files(out)
    for argv in (["sft", "--out", str(out)], ["sft", "--out", str(out), "--overwrite"]):
        err = _cli_error(argv, capsys)
        assert f"--out: folder {str(out)!r} is being written by another run (pid {first.proc.pid}, " \
               "`repro-fast sft`)" in err
        assert _files(out) == before
    first.finish()
    assert _files(out) == {MANIFEST: (out / MANIFEST).read_text(), "model.safetensors": "the first run's\n",
                           "sft_summary.json": "the first run's\n"}  # the lock went with the run
    assert read_manifest(str(out))["created"] == ["model.safetensors", "sft_summary.json"]


def test_two_runs_that_both_checked_a_new_folder_one_is_refused(tmp_path, holders):
    """The race of two `repro-fast sft` on one new --out: both pass the check (the folder is not there
    yet); the one that claims second is refused, whether the first still runs or has ended."""
    out = tmp_path / "new"
    second = check_run_dir(str(out), "sft", overwrite=False)  # checked while the folder did not exist
    first = holders(out)
    with pytest.raises(UsageError, match="is being written by another run"):
        second.claim()
    first.finish()
    before = _files(out)
    with pytest.raises(UsageError, match="it holds an earlier `repro-fast sft` run"):  # checked again
        second.claim()
    assert _files(out) == before


@pytest.mark.parametrize("command, argv", [
    ("train", ["train", "--overwrite", "--task", "gsm8k"]),
    ("sft", ["sft", "--overwrite"]),
    ("study", ["study"]),
    ("demo", ["demo"]),
])
def test_every_command_refuses_a_folder_another_run_writes(command, argv, tmp_path, capsys, holders):
    holders(tmp_path, command, writes=("model.safetensors", "sft_summary.json"))
    before = _files(tmp_path)
    err = _cli_error(argv + ["--out", str(tmp_path)], capsys)
    assert "is being written by another run" in err and f"`repro-fast {command}`" in err
    assert _files(tmp_path) == before


def test_a_killed_run_leaves_no_lock(tmp_path, holders, monkeypatch):
    """The lock is the kernel's (flock): a run killed mid-way holds nothing, and its lock file (the
    only trace) is no entry of the folder."""
    out = tmp_path / "run"
    holders(out).kill()
    assert LOCK in os.listdir(out)
    run_dir = check_run_dir(str(out), "sft", overwrite=True).claim()
    assert sorted(os.listdir(out)) == sorted([LOCK, MANIFEST])  # model.safetensors replaced
    run_dir.close()
    assert sorted(os.listdir(out)) == [MANIFEST]


def test_runs_in_one_process_follow_each_other(tmp_path):
    """A second claim by this process (a run rerun in a notebook after a failure, whose traceback
    still holds the first `RunDir`) is not refused; another process is refused until both are closed."""
    first = check_run_dir(str(tmp_path), "sft", overwrite=True).claim()
    second = check_run_dir(str(tmp_path), "sft", overwrite=True).claim()
    probe = [sys.executable, "-c", HOLDER, outputs.__file__, str(tmp_path), "sft", '["*"]']
    first.close()
    refused = subprocess.run(probe, input="", capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "is being written by another run" in refused.stderr
    second.close()
    assert LOCK not in os.listdir(tmp_path)
    done = subprocess.run(probe, input="go\n", capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_lock_file_that_is_not_a_plain_file_is_refused(tmp_path):
    (tmp_path / "elsewhere").write_text("the user's\n")
    out = tmp_path / "run"
    out.mkdir()
    run_dir = check_run_dir(str(out), "sft", overwrite=False)
    (out / LOCK).symlink_to(tmp_path / "elsewhere")  # after the check: a symlink is an entry of the folder
    with pytest.raises(UsageError, match=f"cannot create the lock file {str(out / LOCK)!r}"):
        run_dir.claim()
    with pytest.raises(UsageError, match=r"is not empty \(\.repro-fast-run\.lock\)"):
        check_run_dir(str(out), "sft", overwrite=False)
    assert (tmp_path / "elsewhere").read_text() == "the user's\n"
