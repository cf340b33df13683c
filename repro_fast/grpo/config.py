"""`GRPOConfig`: every knob of the trainer in one dataclass. It derives the batch sizes and
rejects bad settings with a message that says what to change (in the spirit of TRL's
``GRPOConfig.__post_init__``). `load_config` reads JSON or TOML and applies overrides.

Sizes per step::

    rollout batch   = prompts_per_step * group_size            trajectories sampled per step
    mini_batch_size = trajectories per optimizer step           (default: the whole rollout batch)
    micro_batch_size= trajectories per forward/backward         (gradient accumulation inside)
    optimizer steps per training step = epochs * rollout batch / mini_batch_size
"""

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


class ConfigError(ValueError):
    """A bad configuration value, key or file."""


@dataclass
class GRPOConfig:
    """Settings of one GRPO run (defaults: the toy task on a CPU).

    Attributes:
        task: ``"toy"`` or ``"gsm8k"`` (see `repro_fast.grpo.tasks`).
        init: checkpoint folder to start from; None: the toy task runs a quick SFT into
            ``out/sft`` first, gsm8k loads SmolLM2-135M-Instruct.
        out: output folder (metrics.jsonl, checkpoints, plots); must be empty unless ``overwrite``.
        overwrite: replace the run in a non-empty ``out`` (its cached ``sft`` is kept when its
            config matches).
        steps: training steps (one rollout batch each).
        prompts_per_step, group_size: prompts per step and samples per prompt (G).
        temperature: sampling temperature tau (also RePro's and the loss's tau).
        max_new_tokens: response length cap; None: the task's default.
        lr: AdamW learning rate; None: the task's default.
        epochs: passes over each rollout batch (PPO epochs; TRL's ``num_iterations``).
        mini_batch_size: trajectories per optimizer step; None: the whole rollout batch.
        micro_batch_size: trajectories per forward/backward (gradient accumulation).
        eps_low, eps_high: PPO clip range ``[1 - eps_low, 1 + eps_high]`` (DAPO's clip-higher).
        kl_coef: beta of the k3 KL to the frozen initial policy (0: no reference model).
        scorer: RePro backend, ``"fast"`` or ``"naive"``; ``"none"`` skips RePro (plain GRPO
            with old log-probs from one no-grad forward; needs alpha = 0).
        alpha: weight of RePro's process advantage; 0 is plain GRPO.
        num_segments, normalize: RePro's k and normalization scope.
        compare_naive: also score every rollout batch with the naive backend (timing only).
        verifier: name of a built-in verifier (``"boxed"``); the Python API also takes a callable.
        eval_every, eval_problems: evaluation on held-out problems every n steps (0: only
            before and after training): one sample per problem at ``temperature`` with a
            fixed seed (the same draws every time), or greedy with ``eval_greedy``.
        eval_greedy: evaluate greedily instead.
        save_every: checkpoint every n steps (0: only the final one).
        weight_decay, max_grad_norm, adam_beta1, adam_beta2: the optimizer.
        seed: makes a CPU run repeatable (sampling, problem order, initialization).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        bf16: bf16 autocast for the loss forward on CUDA (ignored on CPU).
        plots: write PNG plots at the end.
        progress: show a tqdm progress bar.
        sft_steps: SFT steps when the toy task warm-starts itself (init = None).
        threads: torch intra-op threads on CPU; None: the task's choice (toy: 1, since a tiny
            model gains nothing from more and a shared CPU can make them 10x slower); 0: torch's.
    """

    task: str = "toy"
    init: str | None = None
    out: str = "runs/grpo"
    overwrite: bool = False
    steps: int = 40
    prompts_per_step: int = 8
    group_size: int = 8
    temperature: float = 1.0
    max_new_tokens: int | None = None
    lr: float | None = None
    epochs: int = 1
    mini_batch_size: int | None = 32
    micro_batch_size: int = 32
    eps_low: float = 0.2
    eps_high: float = 0.28
    kl_coef: float = 0.0
    scorer: str = "fast"
    alpha: float = 0.1
    num_segments: int = 20
    normalize: str = "group"
    compare_naive: bool = False
    verifier: str = "boxed"
    eval_every: int = 0
    eval_problems: int = 128
    eval_greedy: bool = False
    save_every: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    plots: bool = True
    progress: bool = True
    sft_steps: int = 300
    threads: int | None = None
    # derived in __post_init__ (not settable)
    rollout_batch_size: int = field(init=False, default=0)
    grad_accum_steps: int = field(init=False, default=0)
    optimizer_steps_per_step: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        def bad(name: str, expected: str, fix: str = "") -> ConfigError:
            return ConfigError(f"{name}: expected {expected}, got {getattr(self, name)!r}" + (f"; {fix}" if fix else ""))

        ints = ("steps", "prompts_per_step", "group_size", "epochs", "micro_batch_size", "num_segments",
                "eval_every", "eval_problems", "save_every", "seed", "sft_steps")
        for name in ints + ("max_new_tokens", "mini_batch_size"):
            value = getattr(self, name)
            if value is None and name in ("max_new_tokens", "mini_batch_size"):
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad(name, "an int")
        floats = ("temperature", "eps_low", "eps_high", "kl_coef", "alpha", "weight_decay", "max_grad_norm",
                  "adam_beta1", "adam_beta2", "lr")
        for name in floats:
            value = getattr(self, name)
            if value is None and name == "lr":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise bad(name, "a finite number")
            setattr(self, name, float(value))
        for name in ("compare_naive", "bf16", "plots", "progress", "eval_greedy", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise bad(name, "true or false")
        from repro_fast.grpo.tasks import TASKS

        if self.task not in TASKS:
            close = difflib.get_close_matches(str(self.task), TASKS, n=1)
            raise bad("task", f"one of {sorted(TASKS)}", f"did you mean {close[0]!r}?" if close else "")
        if self.scorer not in SCORERS:
            raise bad("scorer", f"one of {SCORERS}")
        if self.normalize not in NORMALIZE:
            raise bad("normalize", f"one of {NORMALIZE}")
        if self.device not in DEVICES:
            raise bad("device", f"one of {DEVICES}")
        if not isinstance(self.verifier, str) and not callable(self.verifier):
            raise bad("verifier", "a verifier name or a callable")
        for name in ("steps", "prompts_per_step", "epochs", "micro_batch_size", "num_segments", "sft_steps"):
            if getattr(self, name) < 1:
                raise bad(name, "an int >= 1")
        if self.group_size < 2:
            raise bad("group_size", "an int >= 2",
                      "GRPO normalizes rewards within a group, so with one sample per prompt every advantage is 0")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise bad("max_new_tokens", "an int >= 1 (or null for the task's default)")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 0):
            raise bad("threads", "an int >= 0 (0: torch's default) or null (the task's choice)")
        for name in ("eval_every", "save_every", "eval_problems", "seed"):
            if getattr(self, name) < 0:
                raise bad(name, "an int >= 0")
        if self.temperature <= 0:
            raise bad("temperature", "a number > 0")
        if self.lr is not None and self.lr <= 0:
            raise bad("lr", "a number > 0 (or null for the task's default)")
        if not 0 <= self.eps_low < 1:
            raise bad("eps_low", "a number in [0, 1)")
        if self.eps_high < 0:
            raise bad("eps_high", "a number >= 0")
        if self.kl_coef < 0:
            raise bad("kl_coef", "a number >= 0")
        if self.max_grad_norm <= 0:
            raise bad("max_grad_norm", "a number > 0")
        for name in ("adam_beta1", "adam_beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise bad(name, "a number in [0, 1)")
        if self.weight_decay < 0:
            raise bad("weight_decay", "a number >= 0")
        if self.scorer == "none" and self.alpha != 0:
            raise bad("alpha", "0 when scorer = 'none'", "RePro's process advantage needs a scorer: set scorer to 'fast'")
        if self.scorer == "none" and self.compare_naive:
            raise bad("compare_naive", "false when scorer = 'none'")

        # derived sizes
        self.rollout_batch_size = self.prompts_per_step * self.group_size
        mini = self.mini_batch_size if self.mini_batch_size is not None else self.rollout_batch_size
        mini = min(mini, self.rollout_batch_size)
        if mini < 1 or self.rollout_batch_size % mini:
            raise ConfigError(
                f"mini_batch_size: {self.mini_batch_size} does not divide the rollout batch "
                f"(prompts_per_step * group_size = {self.rollout_batch_size}); choose a divisor of it"
            )
        self.mini_batch_size = mini
        micro = min(self.micro_batch_size, mini)
        if mini % micro:
            raise ConfigError(
                f"micro_batch_size: {self.micro_batch_size} does not divide mini_batch_size ({mini}); "
                "choose a divisor of it"
            )
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
    try:
        if ext == ".json":
            with open(path, encoding="utf-8") as fp:
                data = json.load(fp)
        elif ext == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            with open(path, "rb") as fp:
                data = tomllib.load(fp)
            if set(data) == {"grpo"} and isinstance(data["grpo"], dict):
                data = data["grpo"]
        else:
            raise ConfigError(f"config: {path!r} is neither .json nor .toml")
    except (json.JSONDecodeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
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
