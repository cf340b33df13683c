"""A minimal GRPO loop with RePro process advantages built in. One step (`_Trainer.step`): rollout,
outcome reward, RePro scoring (whose token log-probs are the PPO old log-probs), advantages (GRPO,
REINFORCE++ or RLOO, plus alpha times RePro's: `repro_fast.grpo.estimators`), PPO-clip update. Around
the steps (`_train`): the warm start, evaluations, metrics.jsonl, checkpoints, the summary and plots.
Left out to stay readable: vLLM, multi-GPU, sequence packing, a learning-rate schedule, DAPO's
dynamic sampling, entropy bonus, value model, checkpoint resume (``init`` starts a new run from a
checkpoint)."""

from __future__ import annotations

import collections
import contextlib
import copy
import dataclasses
import json
import os
import random
import time

import numpy as np
import torch

from repro_fast.grpo.config import GRPOConfig
from repro_fast.grpo.estimators import advantages
from repro_fast.grpo.loss import grpo_loss, sequence_logprobs
from repro_fast.grpo.plots import plot_run
from repro_fast.grpo.rollout import Rollouts, rollout
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


@contextlib.contextmanager
def _timed(times: dict, key: str, device: torch.device):
    """Store the seconds the block took in ``times[key]`` (the device's queue drained first)."""
    _sync(device)
    t0 = time.perf_counter()
    yield
    _sync(device)
    times[key] = time.perf_counter() - t0


@dataclasses.dataclass
class _StepBatch:
    """One step's rollout batch as the update reads it: ``[N, T]`` tensors on the policy's device."""

    rollouts: Rollouts
    old_logprobs: torch.Tensor  # the sampling policy's log-probs (PPO's old), 0 on padding
    advantages: torch.Tensor
    mask: torch.Tensor  # True on response tokens
    ref_logprobs: torch.Tensor | None  # the frozen initial policy's, when the KL is a loss term


class _Trainer:
    """The policy, its optimizer and scorers, and one GRPO step (`step`); the run's bookkeeping is
    `_train`'s."""

    def __init__(self, config: GRPOConfig, task, device: torch.device, model, tokenizer, verifier) -> None:
        self.config, self.task, self.device = config, task, device
        self.model, self.tokenizer = model, tokenizer
        self.autocast_dtype = torch.bfloat16 if (config.bf16 and device.type == "cuda") else None
        self.lr = config.lr if config.lr is not None else task.default_lr
        self.max_new_tokens = config.max_new_tokens or task.default_max_new_tokens
        self.verify = get_verifier(verifier if verifier is not None else config.verifier)
        self.ref = copy.deepcopy(model).eval().requires_grad_(False) if config.kl_coef > 0 else None
        # REINFORCE++ puts the KL into its token rewards, the others into the loss (GRPOConfig.kl_coef)
        self.kl_in_reward = config.estimator == "reinforce_plus_plus"
        self.scorer = None if config.scorer == "none" else \
            RePROScorer(model, tokenizer, config.repro, backend=config.scorer)
        self.naive = RePROScorer(model, tokenizer, config.repro, backend="naive") \
            if config.compare_naive else None
        self.opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=config.weight_decay,
                                     betas=(config.adam_beta1, config.adam_beta2))
        self.gen = torch.Generator().manual_seed(config.seed)  # mini-batch order
        self.rng = random.Random(config.seed)  # problem order

    def evaluate(self) -> dict[str, float]:
        """The held-out evaluation (`repro_fast.grpo.sft.evaluate`) with the run's settings."""
        c = self.config
        return evaluate(self.model, self.tokenizer, self.task, c.eval_problems, self.max_new_tokens,
                        temperature=None if c.eval_greedy else c.temperature, seed=c.seed)

    def step(self, step: int) -> dict:
        """One GRPO step: rollout, rewards, scoring, advantages, update. Returns its metrics row."""
        c, times = self.config, {}
        problems = self.task.train_problems(self.rng, c.prompts_per_step)
        prompt_ids = [self.task.encode_prompt(self.tokenizer, p) for p in problems]
        torch.manual_seed(c.seed * 1_000_003 + step)  # sampling: repeatable per step
        with _timed(times, "time_rollout_s", self.device):
            ro = rollout(self.model, self.tokenizer, prompt_ids, [p.answer for p in problems], c.group_size,
                         c.temperature, self.max_new_tokens)
        questions = [p.question for p in problems for _ in range(c.group_size)]
        rewards = [float(r) for r in self.verify(ro.texts, answers=ro.answers, prompts=questions)]
        if len(rewards) != len(ro.texts):
            raise ValueError(f"verifier: returned {len(rewards)} rewards for {len(ro.texts)} completions")
        with _timed(times, "time_score_s", self.device):
            res, old_lp, mask = self._score(ro)
        row_naive = self._compare_naive(ro, res, times) if self.naive is not None else {}
        ref_lp = self._batched_logprobs(self.ref, ro) if self.ref is not None else None
        kl = (old_lp - ref_lp) if ref_lp is not None and self.kl_in_reward else None  # k1, verl's "kl"
        process = res.process_advantages if res is not None and c.alpha != 0 else None
        adv = advantages(c.estimator, rewards, ro.group_ids, mask, process_advantages=process, alpha=c.alpha,
                         kl=kl, kl_coef=c.kl_coef if kl is not None else 0.0).to(self.device)
        batch = _StepBatch(ro, old_lp, adv, mask, None if self.kl_in_reward else ref_lp)
        with _timed(times, "time_update_s", self.device):
            upd = self._update(batch)
        if kl is not None:  # no KL loss term: report the reward's KL instead
            upd["kl"] = float(kl[mask].mean())
        return self._metrics(step, ro, rewards, res, {**times, **row_naive, **upd})

    def _score(self, ro: Rollouts) -> tuple:
        """``(RePro's result or None with scorer = 'none', old log-probs, response mask)``: RePro's phase 1
        gives the old log-probs; without a scorer, a no-grad forward does."""
        if self.scorer is not None:
            res = self.scorer.score(ro.prompts, ro.responses, ro.answers, group_ids=ro.group_ids)
            return res, res.token_logprobs, res.response_mask
        old_lp = self._batched_logprobs(self.model, ro)
        lengths = torch.tensor([len(r) for r in ro.responses], device=old_lp.device)
        return None, old_lp, torch.arange(old_lp.shape[1], device=old_lp.device) < lengths[:, None]

    def _metrics(self, step: int, ro: Rollouts, rewards: list[float], res, measured: dict) -> dict:
        """The step's row of metrics.jsonl: the rollouts' rewards, accuracy and length, ``measured`` (times,
        update statistics), RePro's segment statistics and the task's rollout metrics."""
        correct = boxed_verifier(ro.texts, answers=ro.answers)
        row = {"step": step, "reward_mean": float(np.mean(rewards)), "accuracy": float(np.mean(correct)),
               "response_length": float(np.mean([len(r) for r in ro.responses])),
               "truncated_frac": float(np.mean(ro.truncated)), **measured, "lr": self.lr}
        if res is not None:
            row["segments_per_rollout"] = float(np.mean([len(p) - 1 for p in res.points]))
            # J(P_m) - J(0): how much the last scored prefix lowers the answer's NLL
            row["j_gain_mean"] = float(np.mean([float(nl[0] - nl[-1]) for nl in res.nll]))
            row["process_adv_abs_mean"] = float(res.process_advantages[res.response_mask].abs().mean())
        row.update(self.task.rollout_metrics(ro.texts))
        return row

    def _compare_naive(self, ro: Rollouts, res, times: dict) -> dict:
        """compare_naive: the naive backend on the same rollouts, timed, and its largest difference."""
        with _timed(times, "time_score_naive_s", self.device):
            res_naive = self.naive.score(ro.prompts, ro.responses, ro.answers, group_ids=ro.group_ids)
        diff = (res_naive.process_advantages - res.process_advantages).abs()
        return {"naive_max_abs_diff": float(diff.max()) if diff.numel() else 0.0}

    def _update(self, batch: _StepBatch) -> dict:
        """`epochs` passes over the rollout batch; one optimizer step per mini-batch."""
        c, ro = self.config, batch.rollouts
        n = len(ro.responses)
        sums = collections.Counter()  # grpo_loss's token counts and sums, loss, gradient norm
        self.model.train()
        for _ in range(c.epochs):
            order = torch.randperm(n, generator=self.gen).tolist()
            for s in range(0, n, c.mini_batch_size):
                idx = order[s : s + c.mini_batch_size]
                num_tokens = max(1, sum(len(ro.responses[i]) for i in idx))  # token mean over the mini-batch
                self.opt.zero_grad(set_to_none=True)
                for m in range(0, len(idx), c.micro_batch_size):
                    mi = idx[m : m + c.micro_batch_size]
                    lp = sequence_logprobs(self.model, [ro.prompts[i] for i in mi],
                                           [ro.responses[i] for i in mi], c.temperature, self.autocast_dtype)
                    cols = slice(0, lp.shape[1])
                    ref = batch.ref_logprobs
                    loss, stats = grpo_loss(
                        lp, batch.old_logprobs[mi, cols], batch.advantages[mi, cols], batch.mask[mi, cols],
                        eps_low=c.eps_low, eps_high=c.eps_high, beta=c.kl_coef if ref is not None else 0.0,
                        num_tokens=num_tokens, ref_logp=None if ref is None else ref[mi, cols])
                    loss.backward()  # gradients accumulate over micro-batches
                    sums.update(stats)
                    sums["loss"] += loss.item()  # host sync: fine at this size
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.max_grad_norm)
                self.opt.step()
                sums["grad_norm"] += float(grad_norm)
        tokens, n_opt = max(sums["tokens"], 1.0), c.optimizer_steps_per_step
        return {"loss": sums["loss"] / n_opt, "clip_frac": sums["clip_sum"] / tokens,
                "kl": sums["kl_sum"] / tokens, "ratio_mean": sums["ratio_sum"] / tokens,
                "grad_norm": sums["grad_norm"] / n_opt}

    @torch.no_grad()
    def _batched_logprobs(self, model, ro: Rollouts) -> torch.Tensor:
        """No-grad log-probs of the whole rollout batch (reference model, or scorer = 'none')."""
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        out = torch.zeros(len(ro.responses), max(map(len, ro.responses)), device=device)
        for s in range(0, len(ro.responses), self.config.micro_batch_size):
            sl = slice(s, s + self.config.micro_batch_size)
            lp = sequence_logprobs(model, ro.prompts[sl], ro.responses[sl], self.config.temperature,
                                   self.autocast_dtype)
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
    """The run around the steps: warm start, config.json, evaluations, metrics.jsonl, checkpoints,
    summary.json and plots."""
    _seed_everything(config.seed)
    if model is None:
        if needs_warm_start(config):
            run_dir.record("sft")
        model, tokenizer = task.load(warm_start(config))
    _seed_everything(config.seed)
    model.to(device)
    trainer = _Trainer(config, task, device, model, tokenizer, verifier)
    with open(run_dir.record("config.json"), "w") as fp:
        resolved = {"lr_resolved": trainer.lr, "max_new_tokens_resolved": trainer.max_new_tokens}
        json.dump({**config.to_dict(), **resolved}, fp, indent=2)

    evals = {0: trainer.evaluate()} if config.eval_problems else {}
    rows = []
    with (open(run_dir.record("metrics.jsonl"), "w") as metrics_fp,
          progress_bar(config.progress, config.steps,
                       f"{config.estimator} {task.name} alpha={config.alpha:g}") as bar):
        for step in range(1, config.steps + 1):
            row = trainer.step(step)
            due = step == config.steps or (config.eval_every and step % config.eval_every == 0)
            if config.eval_problems and due:
                evals[step] = trainer.evaluate()
                row["eval_accuracy"] = evals[step]["accuracy"]
                row["eval_response_length"] = evals[step]["response_length"]
            metrics_fp.write(json.dumps(row) + "\n")
            metrics_fp.flush()
            rows.append(row)
            if config.save_every and step % config.save_every == 0:
                save_checkpoint(model, tokenizer, run_dir.record(f"checkpoint-{step}"))
            bar.update(1)
            bar.set_postfix(reward=f"{row['reward_mean']:.2f}", len=f"{row['response_length']:.0f}",
                            score_s=f"{row['time_score_s']:.2f}")
    save_checkpoint(model, tokenizer, run_dir.record("final"))
    summary = {"steps": config.steps, "alpha": config.alpha, "estimator": config.estimator,
               "scorer": config.scorer, "seed": config.seed, "eval": {str(k): v for k, v in evals.items()}}
    for key in ("time_rollout_s", "time_score_s", "time_update_s", "time_score_naive_s"):
        if key in rows[-1]:  # the naive scorer's time only with compare_naive
            summary[key] = sum(r[key] for r in rows)
    with open(run_dir.record("summary.json"), "w") as fp:
        json.dump(summary, fp, indent=2)
    if config.plots:
        summary["plots"] = plot_run(rows, run_dir.record("plots"))
    return summary
