"""Supervised warm start: cross-entropy on the task's reference responses, AdamW, linear warm-up and
cosine decay. Half the toy traces carry redundant re-checks, so the policy overthinks (RePro's target)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

from repro_fast.grpo.config import ConfigError, check_device, check_fields, setting
from repro_fast.grpo.rollout import generate
from repro_fast.grpo.tasks import get_task, load_checkpoint, save_checkpoint
from repro_fast.grpo.verify import boxed_verifier
from repro_fast.outputs import (
    RunDir,
    check_run_dir,
    is_inside,
    make_out_dir,  # noqa: F401  (grpo/demo.py and inspector.py import it from here)
    same_path,
)


@dataclass
class SFTConfig:
    """Settings of one SFT run; ``init``, ``lr`` and ``threads`` default to the task's choice. Every
    field is documented where it is declared; ``repro-fast sft --help`` shows the same text."""

    task: str = setting("toy", "The task whose reference responses are the SFT data: toy, gsm8k or "
                        "gsm8k_variants (see GRPOConfig.task).")
    out: str = setting("runs/sft", "Output folder: the checkpoint (model and tokenizer), sft_summary.json "
                       "and a manifest (.repro-fast-run.json) of what the run wrote. Must not exist yet or "
                       "be empty, unless overwrite.")
    overwrite: bool = setting(False, "Replace an earlier sft run in out: the files that run wrote (its "
                              "manifest lists them) are deleted first. A non-empty folder without such a "
                              "manifest, or with files the earlier run did not write, is refused even so.")
    init: str | None = setting(None, "Checkpoint folder to start from. null: the task's starting point (toy: "
                               "a randomly initialized tiny Llama seeded by seed; gsm8k: "
                               "SmolLM2-135M-Instruct).")
    steps: int = setting(300, "Optimizer steps (one batch each).")
    batch_size: int = setting(32, "Examples (prompt + reference response) per step.")
    lr: float | None = setting(None, "Peak AdamW learning rate. null: the task's (toy: 3e-3, gsm8k: 1e-5).")
    warmup: int = setting(30, "Steps of linear warm-up, then cosine decay to a tenth of lr.")
    weight_decay: float = setting(0.01, "AdamW weight decay.")
    max_grad_norm: float = setting(1.0, "Gradient clipping: the most global L2 norm per step.")
    seed: int = setting(0, "Seed of the model's initialization (toy) and of the example order.")
    eval_problems: int = setting(64, "Held-out problems evaluated after training (greedy and one sample at "
                                 "tau = 1) for sft_summary.json.")
    device: str = setting("auto", "auto (CUDA when available, else CPU), cpu or cuda (refused when no CUDA "
                          "device is available).")
    progress: bool = setting(True, "Show a progress bar (only on a terminal).")
    threads: int | None = setting(None, "torch CPU threads. null: the task's (toy: 1); 0: torch's default.")

    def __post_init__(self):
        check_fields(self)
        try:
            get_task(self.task)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        check_device(self)


def _batch(tokenizer, task, examples, device):
    """Prompt + response + EOS per example, right-padded; labels are -100 on prompts and padding."""
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    seqs, labels = [], []
    for problem, response in examples:
        q = task.encode_prompt(tokenizer, problem)
        y = tokenizer.encode(response, add_special_tokens=False) + [eos]
        seqs.append(torch.tensor(q + y))
        labels.append(torch.tensor([-100] * len(q) + y))
    ids = pad_sequence(seqs, batch_first=True, padding_value=pad)
    mask = pad_sequence([torch.ones_like(s) for s in seqs], batch_first=True)
    labels = pad_sequence(labels, batch_first=True, padding_value=-100)
    return ids.to(device), mask.to(device), labels.to(device)


def evaluate(model, tokenizer, task, n: int, max_new_tokens: int, temperature: float | None = None,
             seed: int = 0) -> dict[str, float]:
    """Accuracy, mean response length (tokens) and the task's rollout metrics on ``n`` held-out problems:
    greedy (``temperature=None``) or one fixed-seed sample each (the same draws before and after training)."""
    problems = task.eval_problems(n)
    if not problems:
        return {"accuracy": float("nan"), "response_length": float("nan")}
    prompts = [task.encode_prompt(tokenizer, p) for p in problems]
    with torch.random.fork_rng(devices=[]):  # the caller's CPU random stream goes on as if untouched
        torch.manual_seed(seed)
        responses, _ = generate(model, tokenizer, prompts, greedy=temperature is None,
                                temperature=temperature or 1.0, max_new_tokens=max_new_tokens)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    correct = boxed_verifier(texts, answers=[p.answer for p in problems])
    return {"accuracy": sum(correct) / len(correct),
            "response_length": sum(len(r) for r in responses) / len(responses), **task.rollout_metrics(texts)}


@contextlib.contextmanager
def cpu_threads(n: int | None, device: torch.device):
    """Run with ``n`` torch intra-op threads on CPU (None or 0: leave torch's setting); restore."""
    before = torch.get_num_threads()
    if n and device.type == "cpu":
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def progress_bar(enabled: bool, total: int, desc: str):
    """A tqdm bar over ``total`` steps; a no-op one unless ``enabled`` and stderr is a terminal."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=None if enabled else True)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available), ``cpu`` or ``cuda`` as a torch device; CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def check_init(init: str, out: str) -> None:
    """``init`` is a checkpoint folder (a Hugging Face ``config.json`` in it) outside ``out``, which the
    run writes (and, replacing an earlier run, clears first)."""
    if not os.path.isdir(init):
        raise ConfigError(f"init: checkpoint folder {init!r} does not exist; "
                          "run `repro-fast sft` first or pass --init DIR")
    if same_path(init, out) or is_inside(init, out):
        where = "" if same_path(init, out) else "inside "
        raise ConfigError(f"init: {init!r} is {where}--out {out!r}, which this run writes; "
                          "choose an --out that does not hold the checkpoint you start from")
    if not os.path.isfile(os.path.join(init, "config.json")):
        raise ConfigError(f"init: {init!r} is not a checkpoint folder (no config.json in it); pass a folder "
                          "written by `repro-fast sft` or `train`, or a Hugging Face model folder")


def check_sft(config: SFTConfig) -> tuple:
    """Every check of an SFT run that needs the disk or the machine, before anything is written:
    ``(task, device, run_dir)``."""
    task = get_task(config.task)
    device = resolve_device(config.device)
    if config.init is not None:
        check_init(config.init, config.out)
    # the folder becomes the checkpoint: it may hold nothing but an earlier SFT run's files
    run_dir = check_run_dir(config.out, "sft", overwrite=config.overwrite)
    return task, device, run_dir


def run_sft(config: SFTConfig) -> dict:
    """Train, evaluate, save ``model + tokenizer`` to ``config.out``; returns the summary."""
    task, device, run_dir = check_sft(config)
    run_dir.claim()
    with cpu_threads(task.cpu_threads if config.threads is None else config.threads, device):
        return _run_sft(config, task, device, run_dir)


def _run_sft(config: SFTConfig, task, device, run_dir: RunDir) -> dict:
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    model, tokenizer = task.fresh(config.seed) if config.init is None else load_checkpoint(config.init)
    model.to(device).train()
    lr = config.lr if config.lr is not None else (3e-3 if task.name == "toy" else 1e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=config.weight_decay)

    def schedule(step: int) -> float:
        if step < config.warmup:
            return (step + 1) / config.warmup
        progress = (step - config.warmup) / max(1, config.steps - config.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    rng = random.Random(config.seed)
    start = time.perf_counter()
    losses = []
    with progress_bar(config.progress, config.steps, f"sft {task.name}") as bar:
        for _ in range(config.steps):
            ids, mask, labels = _batch(tokenizer, task, task.sft_examples(rng, config.batch_size), device)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
    train_s = time.perf_counter() - start
    model.eval()
    max_new = task.default_max_new_tokens
    ev = evaluate(model, tokenizer, task, config.eval_problems, max_new)
    ev_s = evaluate(model, tokenizer, task, config.eval_problems, max_new, temperature=1.0)
    before = set(os.listdir(config.out))
    save_checkpoint(model, tokenizer, config.out)
    run_dir.record(*sorted(set(os.listdir(config.out)) - before))  # the checkpoint's files
    summary = {
        "task": task.name, "steps": config.steps, "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "train_s": train_s, "eval_accuracy": ev["accuracy"], "eval_response_length": ev["response_length"],
        "eval_sampled_accuracy": ev_s["accuracy"], "eval_sampled_response_length": ev_s["response_length"],
        "params": sum(p.numel() for p in model.parameters()), "config": asdict(config),
    }
    with open(run_dir.record("sft_summary.json"), "w") as fp:
        json.dump(summary, fp, indent=2)
    return summary
