"""`repro_fast.grpo.config`: GRPOConfig validation (every setting checked when the config is built, messages
that say what to change), config files (JSON, TOML, unknown keys) and the CLI's errors for them."""

from __future__ import annotations

import json
import re

import pytest

from repro_fast.cli import main
from repro_fast.grpo.config import ConfigError, GRPOConfig, load_config


def test_derived_sizes():
    c = GRPOConfig(prompts_per_step=4, group_size=8, mini_batch_size=16, micro_batch_size=4, epochs=2)
    assert c.rollout_batch_size == 32
    assert c.grad_accum_steps == 4
    assert c.optimizer_steps_per_step == 4
    d = GRPOConfig(prompts_per_step=2, group_size=4, mini_batch_size=None, micro_batch_size=64)
    assert (d.mini_batch_size, d.micro_batch_size, d.grad_accum_steps) == (8, 8, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(group_size=1), "group_size: expected an int >= 2"),
        (dict(task="toyy"), "did you mean 'toy'"),
        (dict(scorer="fastest"), "scorer: expected one of"),
        (dict(temperature=0.0), "temperature: expected a number in [0.0001, 10000.0], got 0.0"),
        (dict(stability_weight=1.5), "stability_weight: expected a number in [0.0, 1.0], got 1.5"),
        (dict(estimator="ppo"), "estimator: expected one of ('grpo', 'reinforce_plus_plus', 'rloo')"),
        (dict(eps_low=1.5), "eps_low"),
        (dict(steps=0), "steps: expected an int >= 1"),
        (dict(steps=2.5), "steps: expected an int"),
        (dict(prompts_per_step=3, group_size=4, mini_batch_size=5), "mini_batch_size: 5 does not divide"),
        (
            dict(prompts_per_step=2, group_size=4, mini_batch_size=8, micro_batch_size=3),
            "micro_batch_size: 3 does not divide",
        ),
        (dict(scorer="none", alpha=0.1), "alpha: expected 0 when scorer = 'none'"),
        (dict(kl_coef=-1.0), "kl_coef"),
        (dict(alpha=float("nan")), "alpha: expected a finite number"),
    ],
)
def test_bad_values_say_what_to_change(kwargs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        GRPOConfig(**kwargs)


def test_load_config_json_toml_and_unknown_key(tmp_path):
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"steps": 3, "alpha": 0.0, "max_new_tokens": None}))
    c = load_config(str(j), seed=5)
    assert (c.steps, c.alpha, c.seed, c.max_new_tokens) == (3, 0.0, 5, None)
    t = tmp_path / "c.toml"
    t.write_text('[grpo]\nsteps = 4\ntask = "gsm8k"\n')
    c = load_config(str(t), seed=1)
    assert (c.steps, c.task, c.seed) == (4, "gsm8k", 1)
    bad = tmp_path / "bad.toml"
    bad.write_text("step = 4\n")
    with pytest.raises(ConfigError, match="unknown key 'step' \\(did you mean 'steps'\\?\\)"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{steps: ")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_config(str(broken))


def _cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_cli_bad_task_name(capsys, tmp_path):
    err = _cli_error(["train", "--task", "gsm9k", "--out", str(tmp_path)], capsys)
    assert "task: expected one of ['gsm8k', 'gsm8k_variants', 'toy']" in err and "did you mean 'gsm8k'" in err
    err = _cli_error(["sft", "--task", "nope", "--out", str(tmp_path)], capsys)
    assert "unknown task 'nope'" in err


def test_cli_bad_config_value(capsys, tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"group_size": 1}))
    err = _cli_error(["train", str(cfg), "--out", str(tmp_path)], capsys)
    # the file's key, named as the file and the key (issue 27: it said --group-size, a flag not given)
    assert f"config file {str(cfg)!r}: group_size: expected an int >= 2, got 1" in err
    assert "--group-size" not in err
    err = _cli_error(["train", "--scorer", "slow", "--out", str(tmp_path)], capsys)
    assert "scorer: expected one of ('fast', 'naive', 'none'), got 'slow'" in err
    err = _cli_error(["train", "--set", "eps_high=-1", "--out", str(tmp_path)], capsys)
    assert "eps_high" in err


def test_cli_unknown_config_key(capsys, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("lerning_rate = 0.1\n")
    err = _cli_error(["train", str(cfg), "--out", str(tmp_path)], capsys)
    assert "unknown key 'lerning_rate'" in err
    err = _cli_error(["train", "--set", "group=3", "--out", str(tmp_path)], capsys)
    assert "unknown key 'group'" in err


def test_cli_missing_init(capsys, tmp_path):
    err = _cli_error(["train", "--init", str(tmp_path / "nope"), "--out", str(tmp_path)], capsys)
    assert "does not exist" in err


@pytest.mark.parametrize("kwargs, message", [
    # RePROConfig's bounds, checked when the config is built, not when the scorer is (after the SFT)
    (dict(num_segments=100000), "num_segments: expected an int in [1, 65536], got 100000"),
    (dict(temperature=0.00001), "temperature: expected a number in [0.0001, 10000.0], got 1e-05"),
    (dict(temperature=100000), "temperature: expected a number in [0.0001, 10000.0], got 100000"),
    (dict(verifier="nope"), "verifier: expected one of ['boxed'] (a built-in verifier's name) or a callable"),
    (dict(task=["toy"]), "task: expected a string, got ['toy']"),
    (dict(out=3), "out: expected a string, got 3"),
])
def test_every_setting_is_checked_when_the_config_is_built(kwargs, message):
    with pytest.raises(ConfigError) as exc:
        GRPOConfig(**kwargs)
    assert message in str(exc.value)


def test_device_cuda_without_cuda_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device: 'cuda' requested but no CUDA device is available"):
        GRPOConfig(device="cuda")
    from repro_fast.grpo.sft import SFTConfig

    with pytest.raises(ConfigError, match="device: 'cuda' requested"):
        SFTConfig(device="cuda")


def test_a_callable_verifier_is_accepted():
    assert GRPOConfig(verifier=lambda completions, **kw: [1.0] * len(completions)).verifier is not None


def test_null_mini_batch_size_is_the_whole_rollout_batch():
    for config in (load_config(mini_batch_size=None), GRPOConfig(mini_batch_size=None)):
        assert config.mini_batch_size == config.rollout_batch_size == 64
        assert config.optimizer_steps_per_step == 1


# ------------------------------------------------------------------------------------------
# issue 27 item 10: config files (duplicate keys refused in JSON as in TOML; errors on a file's
# keys name the file and the key, not a flag)
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, text", [
    ("dup.json", '{"alpha": 0.2, "alpha": 0.7}'),
    ("dup.toml", "alpha = 0.2\nalpha = 0.7\n"),
    ("nested.json", '{"steps": 3, "alpha": 0.2, "seed": {"a": 1, "a": 2}}'),
])
def test_config_file_duplicate_key_is_refused(name, text, tmp_path, capsys):
    """A JSON config with a key twice ran with the last value (0.7) silently; TOML refused it."""
    cfg = tmp_path / name
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=f"config: cannot parse {str(cfg)!r}"):
        load_config(str(cfg))
    err = _cli_error(["train", str(cfg), "--out", str(tmp_path / "out")], capsys)
    assert f"config: cannot parse {str(cfg)!r}" in err and not (tmp_path / "out").exists()
    if name.endswith(".json"):
        assert "key 'alpha' is given twice" in err or "key 'a' is given twice" in err


@pytest.mark.parametrize("settings, key, message", [
    ({"alpha": float("inf")}, "alpha", "alpha: expected a finite number"),
    ({"group_size": 1}, "group_size", "group_size: expected an int >= 2, got 1"),
    ({"prompts_per_step": 3, "group_size": 4, "mini_batch_size": 5}, "mini_batch_size",
     "mini_batch_size: 5 does not divide"),
    ({"stepz": 3}, "stepz", "unknown key 'stepz' (did you mean 'steps'?)"),
])
def test_config_file_errors_name_the_file_and_the_key(settings, key, message, tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(settings))
    with pytest.raises(ConfigError) as exc:
        load_config(str(cfg))
    assert str(exc.value).startswith(f"config file {str(cfg)!r}: {message}")
    err = _cli_error(["train", str(cfg), "--out", str(tmp_path / "out")], capsys)
    flag = "--" + key.replace("_", "-")
    assert f"config file {str(cfg)!r}: {message}" in err and f"{flag}:" not in err


def test_a_flag_that_overrides_the_file_is_named_as_the_flag(tmp_path, capsys):
    """The value in error is the flag's, not the file's: the error names the flag."""
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"group_size": 4}))
    err = _cli_error(["train", str(cfg), "--group-size", "1", "--out", str(tmp_path / "out")], capsys)
    assert "--group-size: expected an int >= 2, got 1" in err and "config file" not in err
    with pytest.raises(ConfigError, match="^group_size: expected an int >= 2, got 1"):
        load_config(str(cfg), group_size=1)


def test_repro_settings_are_reproconfigs_fields():
    """One place per setting: the RePro fields' defaults are RePROConfig's, and the scorer's config is
    built from the values set (with the task's think_end), not from copies."""
    import dataclasses

    from repro_fast.config import RePROConfig
    from repro_fast.grpo.config import repro_fields, setting_help
    from repro_fast.grpo.tasks import TASKS

    names = repro_fields(GRPOConfig)
    assert set(names) == {"temperature", "alpha", "num_segments", "stability_weight", "normalize"}
    defaults = {f.name: f.default for f in dataclasses.fields(RePROConfig)}
    assert all(f.default == defaults[f.name] for f in dataclasses.fields(GRPOConfig) if f.name in names)
    c = GRPOConfig(alpha=0.3, num_segments=7, stability_weight=0.5, normalize="batch", temperature=0.7,
                   estimator="rloo")
    assert c.repro == RePROConfig(alpha=0.3, num_segments=7, stability_weight=0.5, normalize="batch",
                                  temperature=0.7, think_end=TASKS["toy"].think_end)
    assert "repro" not in c.to_dict() and c.to_dict()["estimator"] == "rloo"
    assert "repro_fast.grpo.estimators.advantages" in setting_help(GRPOConfig, "alpha")  # alpha's reader
