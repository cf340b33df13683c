"""`GRPOConfig`: every setting of the trainer, validated with messages that name the bad field and
what to change; `load_config` reads JSON or TOML and applies overrides."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
from dataclasses import dataclass, field

SCORERS = ("fast", "naive", "none")
NORMALIZE = ("group", "batch", "none")
DEVICES = ("auto", "cpu", "cuda")

_BOUNDS = {  # a range as the error messages write it, and its test
    ">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1, ">= 2": lambda v: v >= 2, "> 0": lambda v: v > 0,
    "in [0, 1)": lambda v: 0 <= v < 1,
}
_RANGES = {  # GRPOConfig's and SFTConfig's numeric fields with a range (mini_batch_size: see below)
    "steps": ">= 1", "prompts_per_step": ">= 1", "group_size": ">= 2", "epochs": ">= 1",
    "micro_batch_size": ">= 1", "num_segments": ">= 1", "eval_every": ">= 0", "eval_problems": ">= 0",
    "save_every": ">= 0", "seed": ">= 0", "sft_steps": ">= 1", "max_new_tokens": ">= 1", "threads": ">= 0",
    "temperature": "> 0", "eps_low": "in [0, 1)", "eps_high": ">= 0", "kl_coef": ">= 0", "lr": "> 0",
    "weight_decay": ">= 0", "max_grad_norm": "> 0", "adam_beta1": "in [0, 1)", "adam_beta2": "in [0, 1)",
    "batch_size": ">= 1", "warmup": ">= 0",
}
_TASK_DEFAULT = " (or null for the task's default)"
_NULL_MEANS = {"max_new_tokens": _TASK_DEFAULT, "lr": _TASK_DEFAULT,
               "threads": " (0: torch's default) or null (the task's choice)"}
_FIXES = {"group_size": "GRPO normalizes rewards within a group, so with one sample per prompt "
                        "every advantage is 0"}
_TYPES = {  # an annotation's type: what the error message expects, and the test (no bool is an int)
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "int": ("an int", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a finite number",
              lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
}


class ConfigError(ValueError):
    """A bad configuration value, key or file."""


def _bad(config, name: str, expected: str, fix: str = "") -> ConfigError:
    got = f"{name}: expected {expected}, got {getattr(config, name)!r}"
    return ConfigError(f"{got}; {fix}" if fix else got)


def check_fields(config) -> None:
    """Check the int, float and bool fields of a config dataclass (`GRPOConfig`, `SFTConfig`) by
    their annotations and `_RANGES`, and make its floats float; a ConfigError names a bad field."""
    for f in dataclasses.fields(config):
        # the annotation is a string here ("int | None"); other types are the caller's to check
        kind, value = f.type.split(" | ")[0], getattr(config, f.name)
        if kind not in _TYPES or (value is None and f.type.endswith(" | None")):
            continue
        expected, has_type = _TYPES[kind]
        if not has_type(value):
            raise _bad(config, f.name, expected)
        if kind == "float":
            value = float(value)
            setattr(config, f.name, value)
        bound = _RANGES.get(f.name)
        if bound and not _BOUNDS[bound](value):
            expected = f"{'an int' if kind == 'int' else 'a number'} {bound}{_NULL_MEANS.get(f.name, '')}"
            raise _bad(config, f.name, expected, _FIXES.get(f.name, ""))


@dataclass
class GRPOConfig:
    """Settings of one GRPO run (defaults: the toy task on a CPU); None for ``max_new_tokens``, ``lr`` or
    ``threads``: the task's choice. Each step samples ``prompts_per_step * group_size`` trajectories, split
    into mini-batches (one optimizer step each) of micro-batches (one forward/backward each)."""

    task: str = "toy"  # toy, gsm8k or gsm8k_variants (see `repro_fast.grpo.tasks`)
    init: str | None = None  # checkpoint folder; None: SmolLM2 (gsm8k) or an SFT into out/sft (toy)
    out: str = "runs/grpo"  # metrics.jsonl, checkpoints, plots; must be empty unless overwrite
    overwrite: bool = False  # replace the run in out (a cached SFT is kept)
    steps: int = 40
    prompts_per_step: int = 8
    group_size: int = 8  # samples per prompt (G)
    temperature: float = 1.0  # sampling tau, also RePro's and the loss's
    max_new_tokens: int | None = None
    lr: float | None = None  # AdamW
    epochs: int = 1  # passes over each rollout batch (TRL's num_iterations)
    mini_batch_size: int | None = 32  # trajectories per optimizer step; None: the whole rollout batch
    micro_batch_size: int = 32  # trajectories per forward/backward
    eps_low: float = 0.2  # PPO clip range [1 - eps_low, 1 + eps_high]
    eps_high: float = 0.28
    kl_coef: float = 0.0  # beta of the k3 KL to the frozen initial policy (0: no reference model)
    scorer: str = "fast"  # RePro backend: fast or naive; none: plain GRPO (needs alpha = 0)
    alpha: float = 0.1  # weight of RePro's process advantage (0: plain GRPO)
    num_segments: int = 20  # RePro's k
    normalize: str = "group"  # RePro's normalization scope: group, batch or none
    compare_naive: bool = False  # also time the naive backend on every rollout batch
    verifier: str = "boxed"  # a built-in verifier's name; the Python API also takes a callable
    eval_every: int = 0  # held-out evaluation every n steps (0: before and after training only)
    eval_problems: int = 128  # one fixed-seed sample each at temperature, or greedy with eval_greedy
    eval_greedy: bool = False
    save_every: int = 0  # checkpoint every n steps (0: only the final one)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    seed: int = 0  # makes a CPU run repeatable
    device: str = "auto"  # auto, cpu or cuda
    bf16: bool = True  # autocast the loss forward on CUDA
    plots: bool = True
    progress: bool = True
    sft_steps: int = 300  # the toy task's warm start when init is None
    threads: int | None = None  # torch CPU threads (toy: 1); 0: torch's default
    # derived in __post_init__ (not settable)
    rollout_batch_size: int = field(init=False, default=0)
    grad_accum_steps: int = field(init=False, default=0)
    optimizer_steps_per_step: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        from repro_fast.grpo.tasks import TASKS

        check_fields(self)
        if self.task not in TASKS:
            close = difflib.get_close_matches(str(self.task), TASKS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else ""
            raise _bad(self, "task", f"one of {sorted(TASKS)}", hint)
        for name, choices in (("scorer", SCORERS), ("normalize", NORMALIZE), ("device", DEVICES)):
            if getattr(self, name) not in choices:
                raise _bad(self, name, f"one of {choices}")
        if not isinstance(self.verifier, str) and not callable(self.verifier):
            raise _bad(self, "verifier", "a verifier name or a callable")
        if self.scorer == "none" and self.alpha != 0:
            raise _bad(self, "alpha", "0 when scorer = 'none'",
                      "RePro's process advantage needs a scorer: set scorer to 'fast'")
        if self.scorer == "none" and self.compare_naive:
            raise _bad(self, "compare_naive", "false when scorer = 'none'")

        # derived sizes
        self.rollout_batch_size = self.prompts_per_step * self.group_size
        mini = self.mini_batch_size if self.mini_batch_size is not None else self.rollout_batch_size
        mini = min(mini, self.rollout_batch_size)
        if mini < 1 or self.rollout_batch_size % mini:
            raise ConfigError(f"mini_batch_size: {self.mini_batch_size} does not divide the rollout batch "
                              f"(prompts_per_step * group_size = {self.rollout_batch_size}); "
                              "choose a divisor of it")
        self.mini_batch_size = mini
        micro = min(self.micro_batch_size, mini)
        if mini % micro:
            raise ConfigError(f"micro_batch_size: {self.micro_batch_size} does not divide "
                              f"mini_batch_size ({mini}); choose a divisor of it")
        self.micro_batch_size = micro
        self.grad_accum_steps = mini // micro
        self.optimizer_steps_per_step = self.epochs * (self.rollout_batch_size // mini)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if callable(self.verifier):
            d["verifier"] = getattr(self.verifier, "__name__", "callable")
        return d

    @classmethod
    def settable_fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls) if f.init]


def read_config_file(path: str) -> dict:
    """The settings in a ``.json`` or ``.toml`` file (TOML: top level or a ``[grpo]`` table)."""
    if not os.path.isfile(path):
        raise ConfigError(f"config: file {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".toml"):
        raise ConfigError(f"config: {path!r} is neither .json nor .toml")
    try:
        if ext == ".json":
            with open(path, encoding="utf-8") as fp:
                data = json.load(fp)
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            with open(path, "rb") as fp:
                data = tomllib.load(fp)
            if set(data) == {"grpo"} and isinstance(data["grpo"], dict):
                data = data["grpo"]
    except ValueError as exc:  # also json's and tomllib's decode errors
        raise ConfigError(f"config: cannot parse {path!r}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path!r} must hold a table/object of settings, got {type(data).__name__}")
    return data


def load_config(path: str | None = None, **overrides) -> GRPOConfig:
    """A `GRPOConfig` from a file (optional) with ``overrides`` on top (None values ignored).
    Unknown keys are an error that names the closest valid key."""
    data = read_config_file(path) if path else {}
    data.update({k: v for k, v in overrides.items() if v is not None})
    valid = GRPOConfig.settable_fields()
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"config: unknown key {key!r}{hint}; valid keys: {', '.join(valid)}")
    return GRPOConfig(**data)
