"""Every flag of every command says what it does and what its default is; `--list-settings` documents
every GRPOConfig field from the field's own declaration; a flag of the other demo mode is an error."""

from __future__ import annotations

import argparse
import dataclasses
import functools

import pytest

import repro_fast.demo as scoring_demo
import repro_fast.grpo.demo as grpo_demo
import repro_fast.inspector as inspector
from repro_fast.cli import build_parser, main, subparsers
from repro_fast.grpo.config import GRPOConfig
from repro_fast.grpo.sft import SFTConfig
from repro_fast.grpo.study import FIXED
from repro_fast.outputs import UsageError


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


def _cli_error(argv, capsys) -> str:
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
    assert message in _cli_error(argv, capsys)


def test_scoring_demo_passes_threads(monkeypatch):
    calls = []
    monkeypatch.setattr(scoring_demo, "run_demo", functools.wraps(scoring_demo.run_demo)(
        lambda **kwargs: calls.append(kwargs)))
    main(["demo", "--scoring", "--threads", "2", "--problems", "4"])
    main(["demo", "--scoring"])
    assert calls == [dict(num_problems=4, num_segments=20, threads=2), dict(num_problems=3, num_segments=20,
                                                                             threads=None)]


def test_one_name_per_command(capsys):
    assert "score-demo" not in subparsers(build_parser())
    assert "invalid choice: 'score-demo'" in _cli_error(["score-demo"], capsys)


def test_inspect_usage_errors_exit_2(monkeypatch, capsys, tmp_path):
    def bad_input(*args, **kwargs):
        raise UsageError("input: line 3: not JSON")

    monkeypatch.setattr(inspector, "run_inspect", bad_input)
    err = _cli_error(["inspect", "--input", "x.jsonl", "--out", str(tmp_path / "p.html")], capsys)
    assert err.startswith("repro-fast: error: --input: line 3: not JSON")
