"""A minimal GRPO loop with RePro process advantages built in. Reads top to bottom:

    for each step:
        1. rollout  G samples per prompt from the current policy (temperature tau)
        2. reward   a verifier per completion (default: last \\boxed{} vs the ground truth)
        3. score    RePROScorer on the rollouts: process advantages, and token_logprobs = the
                    PPO old log-probs (no second forward pass)
        4. advantage  grpo_advantages: group-normalized outcome + alpha * RePro reward-to-go
                    (alpha = 0: plain GRPO)
        5. update   PPO-clip (eps_low / eps_high), token-level mean, optional k3 KL to the frozen
                    initial policy, `epochs` passes, mini-batches, gradient accumulation, AdamW,
                    gradient clipping, bf16 autocast on CUDA
        6. log      one row of DIR/metrics.jsonl; checkpoints; plots at the end

What this GRPO leaves out (on purpose, to stay readable): no vLLM or separate inference engine
(rollouts use Hugging Face ``generate`` on the training model), no multi-GPU / FSDP / DeepSpeed,
no sequence packing, no learning-rate schedule, no reward-model server, no dynamic sampling or
overlong filtering (DAPO), no entropy bonus, no value model (it is GRPO), no importance-sampling
correction between the generation and the training kernels, and no checkpoint resume (a
checkpoint is a Hugging Face folder that ``init`` can start a new run from).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import random
import shutil
import time

import numpy as np
import torch

from repro_fast.config import RePROConfig
from repro_fast.rewards import grpo_advantages
from repro_fast.scorer import RePROScorer
from repro_fast.grpo.config import ConfigError, GRPOConfig
from repro_fast.grpo.loss import grpo_loss, sequence_logprobs
from repro_fast.grpo.rollout import rollout
from repro_fast.grpo.sft import SFTConfig, cpu_threads, evaluate, make_out_dir, resolve_device, run_sft
from repro_fast.grpo.tasks import get_task, save_checkpoint
from repro_fast.grpo.verify import boxed_verifier, get_verifier


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # timings need the GPU's queue drained (a host sync)
        torch.cuda.synchronize(device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "final", "plots")


def prepare_out(out: str, overwrite: bool) -> None:
    """Make ``out`` ready for a run: a non-empty folder is refused unless ``overwrite``, which
    removes the previous run's files (a cached ``sft`` stays: `warm_start` checks its config)."""
    make_out_dir(out)
    entries = sorted(os.listdir(out))
    if entries and not overwrite:
        raise ConfigError(f"out: folder {out!r} is not empty ({', '.join(entries[:6])}); choose a new --out, "
                          "or pass --overwrite to replace the run in it")
    for name in entries:
        path = os.path.join(out, name)
        if name in RUN_FILES or name.startswith("checkpoint-"):
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def _sft_settings(config: SFTConfig | dict) -> dict:
    d = dataclasses.asdict(config) if isinstance(config, SFTConfig) else dict(config)
    return {k: v for k, v in d.items() if k not in ("out", "progress")}


def warm_start(config: GRPOConfig) -> str | None:
    """The checkpoint a run starts from: ``config.init``, else (toy) a quick SFT into out/sft,
    reused by a later run only if it was trained with the same settings."""
    if config.init is not None or config.task != "toy":
        return config.init
    sft_dir = os.path.join(config.out, "sft")
    sft = SFTConfig(task="toy", out=sft_dir, steps=config.sft_steps, seed=config.seed, device=config.device,
                    progress=config.progress, threads=config.threads)
    try:
        with open(os.path.join(sft_dir, "sft_summary.json")) as fp:
            cached = _sft_settings(json.load(fp)["config"])
    except (OSError, ValueError, KeyError):
        cached = None
    if cached != _sft_settings(sft):
        if cached is not None:
            changed = ", ".join(f"{k}={cached.get(k)!r} -> {v!r}" for k, v in _sft_settings(sft).items()
                                if cached.get(k) != v)
            print(f"{sft_dir} was trained with other settings ({changed}): re-running SFT")
        print(f"no init checkpoint given: warm-starting the toy model by SFT ({config.sft_steps} steps) into {sft_dir}")
        summary = run_sft(sft)
        print(f"SFT: {summary['train_s']:.0f} s, greedy accuracy {summary['eval_accuracy']:.2f}, "
              f"mean response length {summary['eval_response_length']:.1f} tokens")
    return sft_dir


def _update(model, opt, ro, old_lp, adv, mask, ref_lp, config: GRPOConfig, pad_id, autocast_dtype, gen):
    """`epochs` passes over the rollout batch; one optimizer step per mini-batch."""
    n = len(ro.responses)
    sums = {"tokens": 0.0, "clip_sum": 0.0, "kl_sum": 0.0, "ratio_sum": 0.0, "loss": 0.0, "grad_norm": 0.0}
    n_opt = 0
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen).tolist()
        for s in range(0, n, config.mini_batch_size):
            idx = order[s : s + config.mini_batch_size]
            num_tokens = max(1, sum(len(ro.responses[i]) for i in idx))  # token-level mean over the mini-batch
            opt.zero_grad(set_to_none=True)
            for m in range(0, len(idx), config.micro_batch_size):
                mi = idx[m : m + config.micro_batch_size]
                lp = sequence_logprobs(model, [ro.prompts[i] for i in mi], [ro.responses[i] for i in mi],
                                       config.temperature, pad_id, autocast_dtype)
                width = lp.shape[1]
                loss, st = grpo_loss(
                    lp, old_lp[mi, :width], adv[mi, :width], mask[mi, :width],
                    eps_low=config.eps_low, eps_high=config.eps_high, beta=config.kl_coef,
                    ref_logp=None if ref_lp is None else ref_lp[mi, :width], num_tokens=num_tokens,
                )
                loss.backward()  # gradients accumulate over micro-batches
                for k in ("tokens", "clip_sum", "kl_sum", "ratio_sum"):
                    sums[k] += st[k]
                sums["loss"] += loss.item()  # host sync: fine at this size
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            opt.step()
            sums["grad_norm"] += float(grad_norm)
            n_opt += 1
    tokens = max(sums["tokens"], 1.0)
    return {
        "loss": sums["loss"] / n_opt,
        "clip_frac": sums["clip_sum"] / tokens,
        "kl": sums["kl_sum"] / tokens,
        "ratio_mean": sums["ratio_sum"] / tokens,
        "grad_norm": sums["grad_norm"] / n_opt,
    }


@torch.no_grad()
def _batched_logprobs(model, ro, config, pad_id, autocast_dtype) -> torch.Tensor:
    """No-grad log-probs of the whole rollout batch (reference model, or scorer = 'none')."""
    was = model.training
    model.eval()
    n_max = max(len(r) for r in ro.responses)
    device = next(model.parameters()).device
    out = torch.zeros(len(ro.responses), n_max, device=device)
    for s in range(0, len(ro.responses), config.micro_batch_size):
        sl = slice(s, s + config.micro_batch_size)
        lp = sequence_logprobs(model, ro.prompts[sl], ro.responses[sl], config.temperature, pad_id, autocast_dtype)
        out[sl, : lp.shape[1]] = lp
    model.train(was)
    return out


def train(config: GRPOConfig, verifier=None, model=None, tokenizer=None) -> dict:
    """Run GRPO (with RePro when ``alpha != 0``); returns the summary also written to
    ``out/summary.json``. ``verifier``: a callable ``(completions, **kwargs) -> list[float]``
    (default: the config's named verifier). ``model``/``tokenizer``: start from these instead of
    ``config.init``."""
    task = get_task(config.task)
    device = resolve_device(config.device)
    prepare_out(config.out, config.overwrite)
    with cpu_threads(task.cpu_threads if config.threads is None else config.threads, device):
        return _train(config, task, device, verifier, model, tokenizer)


def _train(config: GRPOConfig, task, device, verifier, model, tokenizer) -> dict:
    _seed_everything(config.seed)
    if model is None:
        model, tokenizer = task.load(warm_start(config))
    elif tokenizer is None:
        raise ValueError("tokenizer: needed when a model is passed")
    _seed_everything(config.seed)
    model.to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    autocast_dtype = torch.bfloat16 if (config.bf16 and device.type == "cuda") else None
    lr = config.lr if config.lr is not None else task.default_lr
    max_new = config.max_new_tokens or task.default_max_new_tokens
    verify = get_verifier(verifier if verifier is not None else config.verifier)
    ref = copy.deepcopy(model).eval().requires_grad_(False) if config.kl_coef > 0 else None

    repro_config = RePROConfig(
        num_segments=config.num_segments, alpha=config.alpha, temperature=config.temperature,
        normalize=config.normalize, think_end=task.think_end,
    )
    scorer = None if config.scorer == "none" else RePROScorer(model, tokenizer, repro_config, backend=config.scorer)
    naive = RePROScorer(model, tokenizer, repro_config, backend="naive") if config.compare_naive else None
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(config.adam_beta1, config.adam_beta2),
                            weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    rng = random.Random(config.seed)
    with open(os.path.join(config.out, "config.json"), "w") as fp:
        json.dump({**config.to_dict(), "lr_resolved": lr, "max_new_tokens_resolved": max_new}, fp, indent=2)

    def run_eval() -> dict[str, float]:
        return evaluate(model, tokenizer, task, config.eval_problems, max_new,
                        temperature=None if config.eval_greedy else config.temperature, seed=config.seed)

    evals = {}
    if config.eval_problems:
        evals[0] = run_eval()
    metrics_path = os.path.join(config.out, "metrics.jsonl")
    rows = []
    bar = None
    if config.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, desc=f"grpo {task.name} alpha={config.alpha:g}", unit="step",
                   disable=None)  # None: no bar when stderr is not a terminal (CI logs)
    with open(metrics_path, "w") as metrics_fp:
        for step in range(1, config.steps + 1):
            # 1. rollout
            problems = task.train_problems(rng, config.prompts_per_step)
            prompt_ids = [task.encode_prompt(tokenizer, p) for p in problems]
            torch.manual_seed(config.seed * 1_000_003 + step)  # sampling: repeatable per step
            _sync(device)
            t0 = time.perf_counter()
            ro = rollout(model, tokenizer, prompt_ids, [p.answer for p in problems], config.group_size,
                         config.temperature, max_new)
            _sync(device)
            t_rollout = time.perf_counter() - t0

            # 2. outcome reward
            questions = [p.question for p in problems for _ in range(config.group_size)]
            rewards = [float(r) for r in verify(ro.texts, answers=ro.answers, prompts=questions)]
            if len(rewards) != len(ro.texts):
                raise ValueError(f"verifier: returned {len(rewards)} rewards for {len(ro.texts)} completions")
            correct = boxed_verifier(ro.texts, answers=ro.answers)

            # 3. RePro scoring (old log-probs come with it)
            t0 = time.perf_counter()
            if scorer is not None:
                res = scorer.score(ro.prompts, ro.responses, ro.answers, group_ids=ro.group_ids)
                old_lp, mask = res.token_logprobs, res.response_mask
                process_adv = res.process_advantages
            else:
                old_lp = _batched_logprobs(model, ro, config, pad_id, autocast_dtype)
                mask = old_lp.new_zeros(old_lp.shape, dtype=torch.bool)
                for b, r in enumerate(ro.responses):
                    mask[b, : len(r)] = True
                process_adv = None
            _sync(device)
            t_score = time.perf_counter() - t0
            row_naive = {}
            if naive is not None:
                t0 = time.perf_counter()
                res_naive = naive.score(ro.prompts, ro.responses, ro.answers, group_ids=ro.group_ids)
                _sync(device)
                row_naive = {
                    "time_score_naive_s": time.perf_counter() - t0,
                    "naive_max_abs_diff": float((res_naive.process_advantages - res.process_advantages).abs().max())
                    if res.process_advantages.numel() else 0.0,
                }

            # 4. advantages: A + alpha * RePro reward-to-go (alpha = 0: plain GRPO)
            adv = grpo_advantages(rewards, ro.group_ids,
                                  process_advantages=process_adv if config.alpha != 0 else None,
                                  response_mask=mask, alpha=config.alpha).to(device)
            ref_lp = _batched_logprobs(ref, ro, config, pad_id, autocast_dtype) if ref is not None else None

            # 5. update
            t0 = time.perf_counter()
            upd = _update(model, opt, ro, old_lp, adv, mask, ref_lp, config, pad_id, autocast_dtype, gen)
            _sync(device)
            t_update = time.perf_counter() - t0

            # 6. log
            lengths = [len(r) for r in ro.responses]
            row = {
                "step": step,
                "reward_mean": float(np.mean(rewards)),
                "accuracy": float(np.mean(correct)),
                "response_length": float(np.mean(lengths)),
                "truncated_frac": float(np.mean(ro.truncated)),
                "time_rollout_s": t_rollout,
                "time_score_s": t_score,
                "time_update_s": t_update,
                **row_naive,
                **upd,
                "lr": lr,
            }
            if scorer is not None:
                row["segments_per_rollout"] = float(np.mean([len(p) - 1 for p in res.points]))
                row["j_gain_mean"] = float(np.mean([float(nl[0] - nl[-1]) for nl in res.nll]))  # J(P_m) - J(0)
                row["process_adv_abs_mean"] = float(res.process_advantages[res.response_mask].abs().mean())
            row.update(task.rollout_metrics(ro.texts))
            if (config.eval_every and step % config.eval_every == 0) or step == config.steps:
                if config.eval_problems:
                    evals[step] = run_eval()
                    row["eval_accuracy"] = evals[step]["accuracy"]
                    row["eval_response_length"] = evals[step]["response_length"]
            metrics_fp.write(json.dumps(row) + "\n")
            metrics_fp.flush()
            rows.append(row)
            if config.save_every and step % config.save_every == 0:
                save_checkpoint(model, tokenizer, os.path.join(config.out, f"checkpoint-{step}"))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(reward=f"{row['reward_mean']:.2f}", len=f"{row['response_length']:.0f}",
                                score_s=f"{t_score:.2f}")
    if bar is not None:
        bar.close()
    save_checkpoint(model, tokenizer, os.path.join(config.out, "final"))
    summary = {
        "steps": config.steps,
        "alpha": config.alpha,
        "scorer": config.scorer,
        "seed": config.seed,
        "eval": {str(k): v for k, v in evals.items()},
        "time_rollout_s": sum(r["time_rollout_s"] for r in rows),
        "time_score_s": sum(r["time_score_s"] for r in rows),
        "time_update_s": sum(r["time_update_s"] for r in rows),
    }
    if naive is not None:
        summary["time_score_naive_s"] = sum(r["time_score_naive_s"] for r in rows)
    with open(os.path.join(config.out, "summary.json"), "w") as fp:
        json.dump(summary, fp, indent=2)
    if config.plots:
        from repro_fast.grpo.plots import plot_run

        summary["plots"] = plot_run(rows, os.path.join(config.out, "plots"))
    return summary
