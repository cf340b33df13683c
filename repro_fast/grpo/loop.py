"""A minimal GRPO loop with RePro process advantages built in: rollout, outcome reward, RePro scoring
(whose token log-probs are the PPO old log-probs), advantages, PPO-clip update, log. Left out to
stay readable: vLLM, multi-GPU, sequence packing, a learning-rate schedule, DAPO's dynamic sampling,
entropy bonus, value model, checkpoint resume (``init`` starts a new run from a checkpoint)."""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import os
import random
import time

import numpy as np
import torch

from repro_fast.advantages import grpo_advantages
from repro_fast.config import RePROConfig
from repro_fast.grpo.config import GRPOConfig
from repro_fast.grpo.loss import grpo_loss, sequence_logprobs
from repro_fast.grpo.plots import plot_run
from repro_fast.grpo.rollout import rollout
from repro_fast.grpo.sft import (
    SFTConfig,
    check_init,
    cpu_threads,
    evaluate,
    progress_bar,
    resolve_device,
    run_sft,
)
from repro_fast.grpo.tasks import get_task, save_checkpoint
from repro_fast.grpo.verify import boxed_verifier, get_verifier
from repro_fast.outputs import RunDir, check_run_dir
from repro_fast.scorer import RePROScorer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # timings need the GPU's queue drained (a host sync)
        torch.cuda.synchronize(device)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# what a train run may write into its out folder; a file of yours with one of these names blocks the run
TRAIN_WRITES = ("config.json", "metrics.jsonl", "summary.json", "final", "plots", "checkpoint-*", "sft")


def needs_warm_start(config: GRPOConfig) -> bool:
    """The toy task without ``init`` starts from an SFT into out/sft (`warm_start`)."""
    return config.init is None and config.task == "toy"


def check_train(config: GRPOConfig, model_given: bool = False) -> RunDir:
    """Every check of a run that needs the disk or the machine, before anything is written: the device,
    the ``init`` checkpoint (unless a model is given), the out folder and the cached SFT in it.
    Returns the out folder, checked and not yet claimed."""
    resolve_device(config.device)
    if config.init is not None and not model_given:
        check_init(config.init, config.out)
    # overwrite replaces only what an earlier train run wrote; its cached SFT is warm_start's to check
    run_dir = check_run_dir(config.out, "train", overwrite=config.overwrite, writes=TRAIN_WRITES,
                            keep=("sft",))
    if needs_warm_start(config) and not model_given:
        check_run_dir(os.path.join(config.out, "sft"), "sft", overwrite=True)
    return run_dir


def _sft_settings(sft_config: dict) -> dict:
    """The settings an SFT checkpoint depends on."""
    return {k: v for k, v in sft_config.items() if k not in ("out", "progress", "overwrite")}


def warm_start(config: GRPOConfig) -> str | None:
    """The checkpoint a run starts from: ``config.init``, else (toy) a quick SFT into out/sft,
    reused by a later run only if it was trained with the same settings."""
    if not needs_warm_start(config):
        return config.init
    sft_dir = os.path.join(config.out, "sft")
    # overwrite: the cache is this run's own (an earlier SFT run's files only; check_train made sure)
    sft = SFTConfig(task="toy", out=sft_dir, steps=config.sft_steps, seed=config.seed, device=config.device,
                    progress=config.progress, threads=config.threads, overwrite=True)
    try:
        with open(os.path.join(sft_dir, "sft_summary.json")) as fp:
            cached = _sft_settings(json.load(fp)["config"])
    except (OSError, ValueError, KeyError):
        cached = None
    wanted = _sft_settings(dataclasses.asdict(sft))
    if cached != wanted:
        if cached is not None:
            changed = ", ".join(f"{k}={cached.get(k)!r} -> {v!r}" for k, v in wanted.items()
                                if cached.get(k) != v)
            print(f"{sft_dir} was trained with other settings ({changed}): re-running SFT")
        print(f"no init checkpoint given: warm-starting the toy model by SFT ({config.sft_steps} steps) "
              f"into {sft_dir}")
        summary = run_sft(sft)
        print(f"SFT: {summary['train_s']:.0f} s, greedy accuracy {summary['eval_accuracy']:.2f}, "
              f"mean response length {summary['eval_response_length']:.1f} tokens")
    return sft_dir


def _update(model, opt, ro, old_lp, adv, mask, ref_lp, config: GRPOConfig, pad_id, autocast_dtype, gen):
    """`epochs` passes over the rollout batch; one optimizer step per mini-batch."""
    n = len(ro.responses)
    sums = collections.Counter()  # grpo_loss's token counts and sums, loss, gradient norm
    model.train()
    for _ in range(config.epochs):
        order = torch.randperm(n, generator=gen).tolist()
        for s in range(0, n, config.mini_batch_size):
            idx = order[s : s + config.mini_batch_size]
            num_tokens = max(1, sum(len(ro.responses[i]) for i in idx))  # token mean over the mini-batch
            opt.zero_grad(set_to_none=True)
            for m in range(0, len(idx), config.micro_batch_size):
                mi = idx[m : m + config.micro_batch_size]
                lp = sequence_logprobs(model, [ro.prompts[i] for i in mi], [ro.responses[i] for i in mi],
                                       config.temperature, pad_id, autocast_dtype)
                width = lp.shape[1]
                loss, stats = grpo_loss(
                    lp, old_lp[mi, :width], adv[mi, :width], mask[mi, :width], eps_low=config.eps_low,
                    eps_high=config.eps_high, beta=config.kl_coef, num_tokens=num_tokens,
                    ref_logp=None if ref_lp is None else ref_lp[mi, :width])
                loss.backward()  # gradients accumulate over micro-batches
                sums.update(stats)
                sums["loss"] += loss.item()  # host sync: fine at this size
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            opt.step()
            sums["grad_norm"] += float(grad_norm)
    tokens, n_opt = max(sums["tokens"], 1.0), config.optimizer_steps_per_step
    return {"loss": sums["loss"] / n_opt, "clip_frac": sums["clip_sum"] / tokens,
            "kl": sums["kl_sum"] / tokens, "ratio_mean": sums["ratio_sum"] / tokens,
            "grad_norm": sums["grad_norm"] / n_opt}


@torch.no_grad()
def _batched_logprobs(model, ro, config, pad_id, autocast_dtype) -> torch.Tensor:
    """No-grad log-probs of the whole rollout batch (reference model, or scorer = 'none')."""
    was = model.training
    model.eval()
    out = torch.zeros(len(ro.responses), max(map(len, ro.responses)), device=next(model.parameters()).device)
    for s in range(0, len(ro.responses), config.micro_batch_size):
        sl = slice(s, s + config.micro_batch_size)
        lp = sequence_logprobs(model, ro.prompts[sl], ro.responses[sl], config.temperature, pad_id,
                               autocast_dtype)
        out[sl, : lp.shape[1]] = lp
    model.train(was)
    return out


def train(config: GRPOConfig, verifier=None, model=None, tokenizer=None) -> dict:
    """Run GRPO (with RePro when ``alpha != 0``); returns the summary also written to ``out/summary.json``.
    ``verifier``: a callable ``(completions, **kwargs) -> list[float]`` to use instead of the config's
    named one; ``model``/``tokenizer``: start from these instead of ``config.init``."""
    if model is not None and tokenizer is None:
        raise ValueError("tokenizer: needed when a model is passed")
    task = get_task(config.task)
    device = resolve_device(config.device)
    run_dir = check_train(config, model_given=model is not None)
    run_dir.claim()
    with cpu_threads(task.cpu_threads if config.threads is None else config.threads, device):
        return _train(config, task, device, verifier, model, tokenizer, run_dir)


def _train(config: GRPOConfig, task, device, verifier, model, tokenizer, run_dir: RunDir) -> dict:
    _seed_everything(config.seed)
    if model is None:
        if needs_warm_start(config):
            run_dir.record("sft")
        model, tokenizer = task.load(warm_start(config))
    _seed_everything(config.seed)
    model.to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    autocast_dtype = torch.bfloat16 if (config.bf16 and device.type == "cuda") else None
    lr = config.lr if config.lr is not None else task.default_lr
    max_new = config.max_new_tokens or task.default_max_new_tokens
    verify = get_verifier(verifier if verifier is not None else config.verifier)
    ref = copy.deepcopy(model).eval().requires_grad_(False) if config.kl_coef > 0 else None

    repro_config = RePROConfig(num_segments=config.num_segments, alpha=config.alpha,
                               temperature=config.temperature, normalize=config.normalize,
                               think_end=task.think_end)
    scorer = None
    if config.scorer != "none":
        scorer = RePROScorer(model, tokenizer, repro_config, backend=config.scorer)
    naive = RePROScorer(model, tokenizer, repro_config, backend="naive") if config.compare_naive else None
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(config.adam_beta1, config.adam_beta2),
                            weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    rng = random.Random(config.seed)
    with open(run_dir.record("config.json"), "w") as fp:
        json.dump({**config.to_dict(), "lr_resolved": lr, "max_new_tokens_resolved": max_new}, fp, indent=2)

    def run_eval() -> dict[str, float]:
        return evaluate(model, tokenizer, task, config.eval_problems, max_new,
                        temperature=None if config.eval_greedy else config.temperature, seed=config.seed)

    evals = {0: run_eval()} if config.eval_problems else {}
    rows = []
    with (open(run_dir.record("metrics.jsonl"), "w") as metrics_fp,
          progress_bar(config.progress, config.steps, f"grpo {task.name} alpha={config.alpha:g}") as bar):
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
                old_lp, mask, process_adv = res.token_logprobs, res.response_mask, res.process_advantages
            else:
                old_lp = _batched_logprobs(model, ro, config, pad_id, autocast_dtype)
                lengths = torch.tensor([len(r) for r in ro.responses], device=old_lp.device)
                mask = torch.arange(old_lp.shape[1], device=old_lp.device) < lengths[:, None]
                process_adv = None
            _sync(device)
            t_score = time.perf_counter() - t0
            row_naive = {}
            if naive is not None:
                t0 = time.perf_counter()
                res_naive = naive.score(ro.prompts, ro.responses, ro.answers, group_ids=ro.group_ids)
                _sync(device)
                row_naive["time_score_naive_s"] = time.perf_counter() - t0
                diff = (res_naive.process_advantages - res.process_advantages).abs()
                row_naive["naive_max_abs_diff"] = float(diff.max()) if diff.numel() else 0.0

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
            row = {
                "step": step, "reward_mean": float(np.mean(rewards)), "accuracy": float(np.mean(correct)),
                "response_length": float(np.mean([len(r) for r in ro.responses])),
                "truncated_frac": float(np.mean(ro.truncated)),
                "time_rollout_s": t_rollout, "time_score_s": t_score, "time_update_s": t_update,
                **row_naive, **upd, "lr": lr,
            }
            if scorer is not None:
                row["segments_per_rollout"] = float(np.mean([len(p) - 1 for p in res.points]))
                # J(P_m) - J(0): how much the last scored prefix lowers the answer's NLL
                row["j_gain_mean"] = float(np.mean([float(nl[0] - nl[-1]) for nl in res.nll]))
                row["process_adv_abs_mean"] = float(res.process_advantages[res.response_mask].abs().mean())
            row.update(task.rollout_metrics(ro.texts))
            due = step == config.steps or (config.eval_every and step % config.eval_every == 0)
            if config.eval_problems and due:
                evals[step] = run_eval()
                row["eval_accuracy"] = evals[step]["accuracy"]
                row["eval_response_length"] = evals[step]["response_length"]
            metrics_fp.write(json.dumps(row) + "\n")
            metrics_fp.flush()
            rows.append(row)
            if config.save_every and step % config.save_every == 0:
                save_checkpoint(model, tokenizer, run_dir.record(f"checkpoint-{step}"))
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward_mean']:.2f}", len=f"{row['response_length']:.0f}",
                            score_s=f"{t_score:.2f}")
    save_checkpoint(model, tokenizer, run_dir.record("final"))
    summary = {"steps": config.steps, "alpha": config.alpha, "scorer": config.scorer, "seed": config.seed,
               "eval": {str(k): v for k, v in evals.items()}}
    for key in ("time_rollout_s", "time_score_s", "time_update_s", "time_score_naive_s"):
        if key in rows[-1]:  # the naive scorer's time only with compare_naive
            summary[key] = sum(r[key] for r in rows)
    with open(run_dir.record("summary.json"), "w") as fp:
        json.dump(summary, fp, indent=2)
    if config.plots:
        summary["plots"] = plot_run(rows, run_dir.record("plots"))
    return summary
