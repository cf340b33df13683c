"""`GRPOConfig`: every setting of the trainer, validated with messages that name the bad field and
what to change; `load_config` reads JSON or TOML and applies overrides."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field

from repro_fast.config import RePROConfig
from repro_fast.grpo.estimators import ESTIMATORS
from repro_fast.outputs import UsageError

SCORERS = ("fast", "naive", "none")
DEVICES = ("auto", "cpu", "cuda")

_BOUNDS = {  # a range as the error messages write it, and its test
    ">= 0": lambda v: v >= 0, ">= 1": lambda v: v >= 1, ">= 2": lambda v: v >= 2, "> 0": lambda v: v > 0,
    "in [0, 1)": lambda v: 0 <= v < 1,
}
# GRPOConfig's and SFTConfig's numeric fields with a range (mini_batch_size: see below; the RePro fields
# are RePROConfig's, checked by it)
_RANGES = {
    "steps": ">= 1", "prompts_per_step": ">= 1", "group_size": ">= 2", "epochs": ">= 1",
    "micro_batch_size": ">= 1", "eval_every": ">= 0", "eval_problems": ">= 0",
    "save_every": ">= 0", "seed": ">= 0", "sft_steps": ">= 1", "max_new_tokens": ">= 1", "threads": ">= 0",
    "eps_low": "in [0, 1)", "eps_high": ">= 0", "kl_coef": ">= 0", "lr": "> 0",
    "weight_decay": ">= 0", "max_grad_norm": "> 0", "adam_beta1": "in [0, 1)", "adam_beta2": "in [0, 1)",
    "batch_size": ">= 1", "warmup": ">= 0",
}
_TASK_DEFAULT = " (or null for the task's default)"
_NULL_MEANS = {"max_new_tokens": _TASK_DEFAULT, "lr": _TASK_DEFAULT,
               "threads": " (0: torch's default) or null (the task's choice)"}
_FIXES = {"group_size": "GRPO and RLOO compare the samples of a prompt's group, so with one sample per "
                        "prompt every advantage is 0"}
_TYPES = {  # an annotation's type: what the error message expects, and the test (no bool is an int)
    "str": ("a string", lambda v: isinstance(v, str)),
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "int": ("an int", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a finite number",
              lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
}


class ConfigError(UsageError):
    """A bad configuration value, key or file."""


def _bad(config, name: str, expected: str, fix: str = "") -> ConfigError:
    got = f"{name}: expected {expected}, got {getattr(config, name)!r}"
    return ConfigError(f"{got}; {fix}" if fix else got)


def check_fields(config) -> None:
    """Check the str, int, float and bool fields of a config dataclass (`GRPOConfig`, `SFTConfig`) by
    their annotations and `_RANGES`, and make its floats float; a ConfigError names a bad field."""
    for f in dataclasses.fields(config):
        # the annotation is a string here ("int | None"); other types are the caller's to check
        kind, value = f.type.split(" | ")[0], getattr(config, f.name)
        if kind not in _TYPES or (value is None and f.type.endswith(" | None")):
            continue
        if callable(value) and f.type.endswith(" | Callable"):  # e.g. a verifier function
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


def setting(default, doc: str, **kwargs):
    """A config field with its documentation, kept where the field is declared (as TRL's and Hugging
    Face's ``metadata={"help": ...}``): ``--list-settings`` and the CLI's flag help read it there."""
    return field(default=default, metadata={"help": doc}, **kwargs)


def repro_setting(doc: str, *, name: str):
    """A `GRPOConfig` field that is `RePROConfig`'s field ``name``: its default is RePROConfig's (read
    from it, not copied), its bounds are RePROConfig's (checked when `GRPOConfig` builds its ``repro``),
    and ``doc`` says what the trainer does with it."""
    default = RePROConfig.__dataclass_fields__[name].default
    return field(default=default, metadata={"help": doc, "repro_field": name})


def repro_fields(cls) -> list[str]:
    """The fields of ``cls`` declared with `repro_setting`."""
    return [f.name for f in dataclasses.fields(cls) if "repro_field" in f.metadata]


def setting_help(cls, name: str) -> str:
    """The documentation of field ``name`` of the config dataclass ``cls``."""
    return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)


def describe_settings(cls, skip=(), flags: dict[str, str] | None = None) -> str:
    """Every settable field of ``cls`` but ``skip``: name, type, default (as JSON, the way ``--set`` and a
    config file write it), the flag that sets it (``flags``), and its documentation."""
    flags = flags or {}
    lines = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        flag = f"  [{flags[f.name]}]" if f.name in flags else ""
        lines.append(f"{f.name}: {f.type} = {json.dumps(f.default)}{flag}")
        lines += textwrap.wrap(f.metadata["help"], width=96, initial_indent="    ", subsequent_indent="    ")
    return "\n".join(lines)


def check_device(config) -> None:
    """``config.device``: one of `DEVICES`, and cuda only where a CUDA device is available."""
    if config.device not in DEVICES:
        raise _bad(config, "device", f"one of {DEVICES}")
    if config.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device: 'cuda' requested but no CUDA device is available; use 'cpu' or 'auto'")


@dataclass
class GRPOConfig:
    """Settings of one GRPO run (defaults: the toy task on a CPU). Each step samples
    ``prompts_per_step * group_size`` trajectories, split into mini-batches (one optimizer step each) of
    micro-batches (one forward/backward each). Every field is documented below, where it is declared;
    ``repro-fast train --list-settings`` prints the same text."""

    # --- what to train, where ---
    task: str = setting("toy", "The task: toy (synthetic arithmetic whose SFT traces carry redundant "
                        "re-checks; a 0.5M-parameter model, CPU minutes), gsm8k (GSM8K with "
                        "SmolLM2-135M-Instruct) or gsm8k_variants (trains on reasoning-gym's GSM8K variants, "
                        "evaluates on GSM8K); see repro_fast.grpo.tasks.")
    init: str | None = setting(None, "Checkpoint folder to start from (e.g. the output of `repro-fast sft`). "
                               "null: the toy task warm-starts by SFT into out/sft (sft_steps steps, reused "
                               "while its settings match); gsm8k starts from SmolLM2-135M-Instruct.")
    out: str = setting("runs/grpo", "Output folder: config.json, metrics.jsonl (one row per step), "
                       "summary.json, final/, checkpoint-N/, plots/ and a manifest (.repro-fast-run.json) of "
                       "what the run wrote. Must not exist yet or be empty, unless overwrite.")
    overwrite: bool = setting(False, "Replace an earlier train run in out: only the files that run wrote "
                              "(its manifest lists them) are deleted; its cached sft/ is kept and reused "
                              "only if its settings match. A non-empty folder without such a manifest is "
                              "refused even so: files of yours are never deleted.")
    steps: int = setting(40, "GRPO steps; each samples a rollout batch, scores it and updates the policy.")
    # --- rollouts ---
    prompts_per_step: int = setting(8, "Prompts sampled per step.")
    group_size: int = setting(8, "Completions sampled per prompt, G (TRL: num_generations); at least 2, "
                              "since GRPO normalizes rewards within each prompt's group.")
    temperature: float = repro_setting("Sampling temperature tau of the rollouts, also RePro's tau (the "
                                       "scorer's softmax) and the loss's log-probs' (as TRL's temperature); "
                                       "in [1e-4, 1e4].", name="temperature")
    max_new_tokens: int | None = setting(None, "Most tokens per completion (TRL: max_completion_length). "
                                         "null: the task's (toy: 96, gsm8k: 256).")
    # --- optimization ---
    lr: float | None = setting(None, "AdamW learning rate, constant. null: the task's (toy: 5e-5, gsm8k: "
                               "1e-6).")
    epochs: int = setting(1, "Passes over each rollout batch (TRL: num_iterations; PPO's epochs).")
    mini_batch_size: int | None = setting(32, "Trajectories per optimizer step; divides prompts_per_step * "
                                          "group_size (a larger value means the whole batch). null: the "
                                          "whole rollout batch, one optimizer step per epoch.")
    micro_batch_size: int = setting(32, "Trajectories per forward/backward; gradients accumulate up to "
                                    "mini_batch_size, so it changes memory, not the update.")
    eps_low: float = setting(0.2, "Lower PPO clip range: the ratio is clipped at 1 - eps_low (PPO, Schulman "
                             "et al., arXiv 1707.06347; TRL: epsilon).")
    eps_high: float = setting(0.28, "Upper PPO clip range: the ratio is clipped at 1 + eps_high; above "
                              "eps_low it is DAPO's clip-higher (Yu et al., arXiv 2503.14476; TRL: "
                              "epsilon_high).")
    kl_coef: float = setting(0.0, "beta: weight of the per-token KL penalty to the frozen initial policy. "
                             "grpo and rloo: a loss term, the k3 estimate exp(q) - q - 1, q = ref - policy "
                             "log-prob (Schulman, 'Approximating KL divergence', 2020), as in GRPO (Shao et "
                             "al., arXiv 2402.03300; TRL: beta). reinforce_plus_plus: a token reward, "
                             "-beta * (old - ref log-prob), as REINFORCE++ (verl: use_kl_in_reward with "
                             "kl_penalty=kl). 0: no reference model is kept.")
    estimator: str = setting("grpo", "The outcome advantage A_t that RePro's alpha * A_process is added to "
                             "(repro_fast.grpo.estimators; names as verl's adv_estimator): grpo (reward "
                             "normalized within each prompt's group; Shao et al., arXiv 2402.03300), "
                             "reinforce_plus_plus (REINFORCE++: return-to-go of the outcome reward minus the "
                             "per-token KL, normalized over the whole batch; Hu et al., arXiv 2501.03262) or "
                             "rloo (reward minus the mean of the group's other samples; Ahmadian et al., "
                             "arXiv 2402.14740).")
    # --- RePro (the fields declared with repro_setting are RePROConfig's: its defaults, its bounds; the
    # trainer's scorer gets them as GRPOConfig.repro) ---
    scorer: str = setting("fast", "RePro's scoring backend: fast (one pass per CoT, KV cache reused for the "
                          "answer copies), naive (one forward per scored prefix, as the paper's code) or "
                          "none (plain GRPO; needs alpha = 0).")
    alpha: float = repro_setting("Weight of RePro's process advantage: A_t = A_outcome,t + alpha * "
                                 "A_process,t (RePro, Liu et al., arXiv 2512.01925; SPEC section 6). Read by "
                                 "the trainer's advantage step (repro_fast.grpo.estimators.advantages), not "
                                 "by the scorer. 0: the estimator alone.", name="alpha")
    num_segments: int = repro_setting("RePro's k: the most high-entropy segment starts scored per CoT; in "
                                      "[1, 65536].", name="num_segments")
    stability_weight: float = repro_setting("RePro's w in S = (1 - w) S_magnitude + w S_stability (SPEC "
                                            "section 5); in [0, 1].", name="stability_weight")
    normalize: str = repro_setting("Scope of RePro's reward normalization (SPEC section 6): group (within "
                                   "each prompt's group), batch or none.", name="normalize")
    compare_naive: bool = setting(False, "Also score every rollout batch with the naive backend, timed and "
                                  "compared (time_score_naive_s, naive_max_abs_diff in metrics.jsonl); "
                                  "training is unchanged.")
    verifier: str | Callable = setting("boxed", "Outcome reward: a built-in verifier's name (boxed: 1 when "
                                       "the last \\boxed{} matches the answer, else 0; see "
                                       "repro_fast.grpo.verify). The Python API also takes a callable with "
                                       "TRL's reward-function signature.")
    # --- evaluation, checkpoints, output ---
    eval_every: int = setting(0, "Held-out evaluation every n steps (0: before and after training only).")
    eval_problems: int = setting(128, "Held-out problems per evaluation: one fixed-seed sample each at "
                                 "temperature (the same draws before and after), or greedy with eval_greedy. "
                                 "0: no evaluation.")
    eval_greedy: bool = setting(False, "Evaluate with greedy decoding instead of one sample at temperature.")
    save_every: int = setting(0, "Save out/checkpoint-N every n steps (0: only out/final).")
    weight_decay: float = setting(0.0, "AdamW weight decay.")
    max_grad_norm: float = setting(1.0, "Gradient clipping: the most global L2 norm per optimizer step.")
    adam_beta1: float = setting(0.9, "AdamW beta1.")
    adam_beta2: float = setting(0.99, "AdamW beta2.")
    seed: int = setting(0, "Seed of problem order, sampling and mini-batch order: a CPU run with the same "
                        "seed repeats exactly.")
    device: str = setting("auto", "auto (CUDA when available, else CPU), cpu or cuda (refused when no CUDA "
                          "device is available).")
    bf16: bool = setting(True, "On CUDA, autocast the policy's and reference's log-prob forwards of the "
                         "update to bfloat16; no effect on CPU.")
    plots: bool = setting(True, "Write plots of the run's metrics to out/plots (needs matplotlib).")
    progress: bool = setting(True, "Show a progress bar (only on a terminal).")
    sft_steps: int = setting(300, "Toy task with init = null: steps of the SFT warm start into out/sft.")
    threads: int | None = setting(None, "torch CPU threads. null: the task's (toy: 1, since a 0.5M-parameter "
                                  "model gains nothing from more); 0: torch's default.")
    # derived in __post_init__ (not settable)
    rollout_batch_size: int = field(init=False, default=0)
    grad_accum_steps: int = field(init=False, default=0)
    optimizer_steps_per_step: int = field(init=False, default=0)
    # the scorer's settings: the fields declared with repro_setting and the task's think_end
    repro: RePROConfig | None = field(init=False, default=None, repr=False)

    def __post_init__(self) -> None:
        from repro_fast.grpo.tasks import TASKS
        from repro_fast.grpo.verify import VERIFIERS

        check_fields(self)
        if self.task not in TASKS:
            close = difflib.get_close_matches(str(self.task), TASKS, n=1)
            hint = f"did you mean {close[0]!r}?" if close else ""
            raise _bad(self, "task", f"one of {sorted(TASKS)}", hint)
        for name, choices in (("scorer", SCORERS), ("estimator", ESTIMATORS)):
            if getattr(self, name) not in choices:
                raise _bad(self, name, f"one of {choices}")
        check_device(self)
        if isinstance(self.verifier, str) and self.verifier not in VERIFIERS:
            expected = f"one of {sorted(VERIFIERS)} (a built-in verifier's name) or a callable"
            raise _bad(self, "verifier", expected)
        # the scorer's config, built (and so checked against RePro's bounds) now rather than after a warm
        # start that may take minutes; its message names the field as the user set it, a GRPOConfig key
        try:
            self.repro = RePROConfig(think_end=TASKS[self.task].think_end,
                                     **{name: getattr(self, name) for name in repro_fields(GRPOConfig)})
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc).removeprefix("RePROConfig.")) from None
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
        """Every field as JSON-ready values (a callable verifier by its name), for config.json; ``repro``
        is left out (its values are the fields declared with `repro_setting`)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "repro"}
        if callable(self.verifier):
            d["verifier"] = getattr(self.verifier, "__name__", "callable")
        return d

    @classmethod
    def settable_fields(cls) -> list[str]:
        """The fields a user may set (the derived batch sizes are not)."""
        return [f.name for f in dataclasses.fields(cls) if f.init]


def _unique_keys(pairs: list[tuple]) -> dict:
    """A JSON object as a dict, refusing a key given twice (as TOML does) rather than keeping the last."""
    data = {}
    for key, value in pairs:
        if key in data:
            raise ValueError(f"key {key!r} is given twice")
        data[key] = value
    return data


def read_config_file(path: str) -> dict:
    """The settings in a ``.json`` or ``.toml`` file (TOML: top level or a ``[grpo]`` table); a key given
    twice is an error in both."""
    if not os.path.isfile(path):
        raise ConfigError(f"config: file {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".toml"):
        raise ConfigError(f"config: {path!r} is neither .json nor .toml")
    try:
        if ext == ".json":
            with open(path, encoding="utf-8") as fp:
                data = json.load(fp, object_pairs_hook=_unique_keys)
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
    """A `GRPOConfig` from a file (optional) with ``overrides`` on top, each as given: None is a value
    (``mini_batch_size=None``: the whole rollout batch), so pass only the settings you mean to set.
    Unknown keys are an error that names the closest valid key."""
    data = read_config_file(path) if path else {}
    # an error on a key the file sets (and no override replaces) names the file and the key, not a flag
    from_file = {key for key in data if key not in overrides}
    where = f"config file {path!r}" if path else "config"
    data.update(overrides)
    valid = GRPOConfig.settable_fields()
    for key in data:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            origin = where if key in from_file else "config"
            raise ConfigError(f"{origin}: unknown key {key!r}{hint}; valid keys: {', '.join(valid)}")
    try:
        return GRPOConfig(**data)
    except ConfigError as exc:
        if str(exc).split(":", 1)[0] not in from_file:  # a message starts with the key it is about
            raise
        raise ConfigError(f"{where}: {exc}") from None
