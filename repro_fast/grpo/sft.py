"""Supervised warm start: next-token cross-entropy on the task's reference responses (response
tokens only), AdamW with linear warm-up and cosine decay. For the toy task it starts from random
weights and takes about a minute on 2 CPU cores; about half of its traces carry redundant
re-checking segments, so the warm-started policy overthinks (on purpose: RePro's target).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass

import torch


@dataclass
class SFTConfig:
    task: str = "toy"
    out: str = "runs/sft"
    init: str | None = None  # None: the task's fresh model (toy: random tiny Llama; gsm8k: SmolLM2)
    steps: int = 300
    batch_size: int = 32
    lr: float | None = None  # None: 3e-3 for the toy task, 1e-5 for gsm8k
    warmup: int = 30
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    eval_problems: int = 64
    device: str = "auto"
    progress: bool = True
    threads: int | None = None  # torch CPU threads; None: the task's choice (toy: 1); 0: torch's default

    def __post_init__(self):
        from repro_fast.grpo.config import ConfigError
        from repro_fast.grpo.tasks import get_task

        get_task(self.task)
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{name}: expected an int >= 1, got {v!r}")
        for name in ("warmup", "eval_problems", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{name}: expected an int >= 0, got {v!r}")
        if self.lr is not None and (not isinstance(self.lr, (int, float)) or not self.lr > 0):
            raise ConfigError(f"lr: expected a number > 0, got {self.lr!r}")


def _batch(tokenizer, task, examples, device):
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    seqs, labels = [], []
    for problem, response in examples:
        q = task.encode_prompt(tokenizer, problem)
        y = tokenizer.encode(response, add_special_tokens=False) + [eos]
        seqs.append(q + y)
        labels.append([-100] * len(q) + y)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    lab = torch.full((len(seqs), width), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, l) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(l)] = torch.tensor(l)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device), lab.to(device)


def evaluate(model, tokenizer, task, n: int, max_new_tokens: int, temperature: float | None = None,
             seed: int = 0) -> dict[str, float]:
    """Accuracy, mean response length (tokens) and the task's rollout metrics (toy: re-checks per
    response) on its ``n`` held-out problems: greedy
    (``temperature=None``) or one sample each at ``temperature`` with a fixed seed (the same
    draws before and after training)."""
    from repro_fast.grpo.rollout import generate
    from repro_fast.grpo.verify import boxed_verifier

    problems = task.eval_problems(n)
    if not problems:
        return {"accuracy": float("nan"), "response_length": float("nan")}
    prompts = [task.encode_prompt(tokenizer, p) for p in problems]
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        responses, _ = generate(model, tokenizer, prompts, greedy=temperature is None,
                                temperature=temperature or 1.0, max_new_tokens=max_new_tokens)
    finally:
        torch.random.set_rng_state(state)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    answers = [p.answer for p in problems]
    correct = boxed_verifier(texts, answers=answers)
    return {
        "accuracy": sum(correct) / len(correct),
        "response_length": sum(len(r) for r in responses) / len(responses),
        **task.rollout_metrics(texts),
    }


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from repro_fast.grpo.config import ConfigError

        raise ConfigError("device: 'cuda' requested but no CUDA device is available; use 'cpu' or 'auto'")
    return torch.device(name)


def make_out_dir(out: str) -> None:
    """Create the folder ``out`` now, or raise a ConfigError that says why it cannot be."""
    from repro_fast.grpo.config import ConfigError

    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"out: {out!r} is a file, not a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"out: cannot create folder {out!r}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"out: folder {out!r} is not writable")


def run_sft(config: SFTConfig) -> dict:
    """Train, evaluate, save ``model + tokenizer`` to ``config.out``; returns the summary."""
    from repro_fast.grpo.tasks import get_task

    task = get_task(config.task)
    device = resolve_device(config.device)
    make_out_dir(config.out)
    summary_path = os.path.join(config.out, "sft_summary.json")
    if os.path.exists(summary_path):  # it describes the checkpoint about to be replaced
        os.remove(summary_path)
    with cpu_threads(task.cpu_threads if config.threads is None else config.threads, device):
        return _run_sft(config, task, device, summary_path)


def _run_sft(config: SFTConfig, task, device, summary_path: str) -> dict:
    from repro_fast.grpo.tasks import load_checkpoint, save_checkpoint

    random.seed(config.seed)
    torch.manual_seed(config.seed)
    if config.init is not None:
        model, tokenizer = load_checkpoint(config.init)
    else:
        model, tokenizer = task.fresh(config.seed)
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
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, desc=f"sft {task.name}", unit="step",
                   disable=None)  # None: no bar when stderr is not a terminal (CI logs)
    start = time.perf_counter()
    losses = []
    for step in range(config.steps):
        ids, mask, labels = _batch(tokenizer, task, task.sft_examples(rng, config.batch_size), device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    if bar is not None:
        bar.close()
    train_s = time.perf_counter() - start
    model.eval()
    ev = evaluate(model, tokenizer, task, config.eval_problems, task.default_max_new_tokens)
    ev_s = evaluate(model, tokenizer, task, config.eval_problems, task.default_max_new_tokens, temperature=1.0)
    save_checkpoint(model, tokenizer, config.out)
    summary = {
        "task": task.name,
        "steps": config.steps,
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "train_s": train_s,
        "eval_accuracy": ev["accuracy"],
        "eval_response_length": ev["response_length"],
        "eval_sampled_accuracy": ev_s["accuracy"],
        "eval_sampled_response_length": ev_s["response_length"],
        "params": sum(p.numel() for p in model.parameters()),
        "config": asdict(config),
    }
    with open(summary_path, "w") as fp:
        json.dump(summary, fp, indent=2)
    return summary
