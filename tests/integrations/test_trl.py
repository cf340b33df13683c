"""`repro_fast.integrations.trl.RePROGRPOTrainer` on TRL's real `GRPOTrainer` (CPU, tiny models).

Every run trains a tiny random Llama (GPT-2's BPE) for real: TRL samples the completions (a
sequence bias on the ``"\\n\\n"`` token makes them contain RePro segments), computes its outcome
advantage and loss, and steps the optimizer. Probes record what TRL hands around; the checks are
against independent computations (TRL's formula for the outcome advantage, tests/reference.py's
float64 normalization and reward-to-go, a naive-backend re-score, TRL's own log-prob forward).
Also: soft-capped and logit-scaled heads training two bf16 steps, and a LoRA config on
``embed_tokens`` (the trainer scores through the adapter); which forward is taken for TRL's
old-log-prob pass, checked against TRL's own call sites; passes the scorer refuses (GPT-2's dropout,
a batch longer than a sliding window) scored by its own eval-mode forward; models the fast backend
cannot score (a tiny Mistral with a sliding window of 8, a tiny NemotronH hybrid) trained with the
naive one. A missing or unsupported trl fails these tests; nothing is skipped.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import logging
import os
import socket
import subprocess
import sys

import peft  # the dev extra installs it: a missing peft fails here, never skips
import pytest
import reference as R
import torch
from conftest import GPT2_VOCAB, make_scaled_head_model, make_tiny_model

# Plain imports: a missing or unsupported trl must fail these tests, never skip them.
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from repro_fast import RePROConfig, RePROScorer
from repro_fast.integrations.trl import PHASE1_SOURCES, SUPPORTED_TRL, RePROGRPOTrainer, _BatchState

NEWLINES = 628  # GPT-2's "\n\n"
G = 4  # completions per prompt
SCRIPT = os.path.join(os.path.dirname(__file__), "trl_scripts", "grpo_one_batch.py")


def length_reward(completions, **kwargs):
    """A deterministic outcome reward that varies inside a group."""
    return [float(len(c) % 7) for c in completions]


def outcome_like_trl(rewards: list[float], group: int) -> list[float]:
    """TRL 1.16's GRPO outcome advantage (scale_rewards="group"): (R - mean) / (std_ddof1 + 1e-4)."""
    out = []
    for start in range(0, len(rewards), group):
        r = torch.tensor(rewards[start: start + group], dtype=torch.float64)
        out += ((r - r.mean()) / (r.std() + 1e-4)).tolist()
    return out


def probed(base):
    """`base` with recorders around the hooks TRL calls."""

    class Probe(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.batches, self.loss_inputs, self.old_logps, self.calls = [], [], [], []

        def _generate_and_score_completions(self, inputs):
            output = super()._generate_and_score_completions(inputs)
            self.batches.append(
                dict(
                    inputs=inputs,
                    output=dict(output),
                    last=getattr(self, "repro_last", None),
                    weights=copy.deepcopy(self.model.state_dict()),
                )
            )
            return output

        def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, **kw):
            caller, self.taken = sys._getframe(1), False  # the TRL line that calls it
            out = super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, **kw
            )
            self.calls.append((caller.f_code.co_name, caller.f_lineno, self.taken))
            if not torch.is_grad_enabled():  # old log-probs or reference: also run TRL's own forward
                own = GRPOTrainer._get_per_token_logps_and_entropies(
                    self, model, input_ids, attention_mask, logits_to_keep, **kw)[0]
                self.old_logps.append((out[0], own, attention_mask[:, -logits_to_keep:].bool()))
            return out

        def _old_logps_as_phase1(self, *args, **kwargs):  # RePROGRPOTrainer took the call for it
            self.taken = True
            return super()._old_logps_as_phase1(*args, **kwargs)

        def _compute_loss(self, model, inputs):
            self.loss_inputs.append(
                {
                    k: inputs[k]
                    for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask", "advantages")
                }
            )
            return super()._compute_loss(model, inputs)

    return Probe


def build(cls, tokenizer, out_dir, *, steps=2, model=None, repro_config=None, peft_config=None, preamble="",
          **args):
    """A trainer of ``cls`` on 8 arithmetic prompts (each after ``preamble``) x G completions of up
    to 16 tokens (fp32, CPU; ``args`` override the GRPOConfig), on ``model`` (default: the tiny Llama)."""
    data = [{"prompt": f"{preamble}Question {i}: what is {i} plus {i + 3}?\n", "answer": str(2 * i + 3)}
            for i in range(8)]
    config = GRPOConfig(**{
        "output_dir": str(out_dir), "per_device_train_batch_size": 2 * G, "num_generations": G,
        "max_completion_length": 16, "max_steps": steps, "learning_rate": 1e-3, "bf16": False,
        "use_cpu": True, "seed": 0, "report_to": "none", "save_strategy": "no", "logging_steps": 1,
        "disable_tqdm": True, "generation_kwargs": {"sequence_bias": [[[NEWLINES], 6.0]]}, **args})
    kwargs = {} if repro_config is None else {"repro_config": repro_config}
    if peft_config is not None:
        kwargs["peft_config"] = peft_config
    model = make_tiny_model("llama") if model is None else model
    return cls(model.train(), length_reward, args=config, train_dataset=Dataset.from_list(data),
               processing_class=tokenizer, **kwargs)


def train(cls, tokenizer, out_dir, **kwargs):
    """`build`, then train; returns the trainer and the weights it started from."""
    trainer = build(cls, tokenizer, out_dir, **kwargs)
    initial = copy.deepcopy(trainer.model.state_dict())
    trainer.train()
    return trainer, initial


def unpadded(ids, mask):
    return [row[m.bool()].tolist() for row, m in zip(ids, mask)]


def check_advantages(trainer, tokenizer, alpha, atol, rescore=True):
    """Per generation batch: advantages = TRL's outcome advantage + alpha x process advantages,
    on the trajectories TRL sampled, and `_compute_loss` got exactly those rows."""
    naive = naive_model = None
    by_row = {}
    for batch in trainer.batches:
        out, last, inputs = batch["output"], batch["last"], batch["inputs"]
        prompts = unpadded(out["prompt_ids"], out["prompt_mask"])
        completions = unpadded(out["completion_ids"], out["completion_mask"])
        answers = [x["answer"] for x in inputs]
        groups = [i // G for i in range(len(prompts))]
        assert last.group_ids == groups

        # The outcome part is TRL's, recomputed from the reward function on TRL's completions.
        texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
        outcome = torch.tensor(outcome_like_trl(length_reward(texts), G), dtype=torch.float32)
        torch.testing.assert_close(last.outcome_advantages, outcome, atol=1e-5, rtol=0)

        # The scorer saw TRL's trajectories with the right answers: a naive re-score at the same
        # weights (fp32 only: under bf16 the two backends may pick different near-tied points).
        result = last.result
        if rescore:
            if naive is None:
                naive_model = make_tiny_model("llama")
                naive = RePROScorer(naive_model, tokenizer, trainer.repro_config, backend="naive")
            naive_model.load_state_dict(batch["weights"])
            ref = naive.score(prompts, completions, answers, group_ids=groups)
            assert result.points == ref.points
            for b in range(len(prompts)):
                torch.testing.assert_close(
                    result.rewards[b].float(), ref.rewards[b].float(), atol=1e-4, rtol=0
                )

        # The process part: SPEC §6 in float64 (tests/reference.py) from the raw rewards and points.
        norm = R.normalize_rewards(
            [r.tolist() for r in result.rewards], groups, trainer.repro_config.normalize
        )
        width = out["completion_ids"].size(1)
        for b, (c, pts) in enumerate(zip(completions, result.points)):
            expected = torch.zeros(width, dtype=torch.float64)
            expected[: len(c)] = torch.tensor(R.reward_to_go(len(c), pts, norm[b]), dtype=torch.float64)
            expected = outcome[b].double() + alpha * expected
            torch.testing.assert_close(out["advantages"][b].double(), expected, atol=atol, rtol=0)
            by_row[(tuple(prompts[b]), tuple(c))] = out["advantages"][b]
    # Every row `_compute_loss` received (TRL shuffles and splits the batch) is one of those rows.
    for inputs in trainer.loss_inputs:
        assert inputs["advantages"].shape == inputs["completion_ids"].shape
        rows = zip(unpadded(inputs["prompt_ids"], inputs["prompt_mask"]),
                   unpadded(inputs["completion_ids"], inputs["completion_mask"]), inputs["advantages"])
        for p, c, adv in rows:
            assert torch.equal(adv, by_row[(tuple(p), tuple(c))])
    return by_row


def logged(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


def sources(trainer):
    """Per logged generation batch, the phase-1 source whose ``repro/phase1_*`` metric is not 0
    and its value; the three metrics of a batch sum to 1."""
    out = []
    for h in trainer.state.log_history:
        shares = {s: h[f"repro/phase1_{s}"] for s in PHASE1_SOURCES if f"repro/phase1_{s}" in h}
        if shares:
            assert set(shares) == set(PHASE1_SOURCES) and sum(shares.values()) == 1.0, shares
            out += [(s, v) for s, v in shares.items() if v]
    return out


def test_fp32_two_steps_advantages_and_reused_old_logps(gpt2_tokenizer, tmp_path):
    # steps_per_generation=2 > gradient_accumulation_steps=1: TRL needs old log-probs (the batch
    # is reused for a second step after an update); its own forward for them is RePro's phase 1.
    alpha = 0.3
    trainer, initial = train(probed(RePROGRPOTrainer), gpt2_tokenizer, tmp_path, steps_per_generation=2,
                             repro_config=RePROConfig(alpha=alpha, num_segments=3, think_end=None))
    assert len(trainer.batches) == 1 and len(trainer.loss_inputs) == 2
    rows = check_advantages(trainer, gpt2_tokenizer, alpha, atol=1e-5)
    assert max(len(p) - 1 for p in trainer.batches[0]["last"].result.points) >= 2, (
        "no segments: a weak test"
    )
    assert any(float(adv.std()) > 1e-3 for adv in rows.values()), "process term constant along every row"

    assert trainer.batches[0]["last"].phase1_source == "old_logps"
    assert sources(trainer) == [("old_logps", 1.0)]
    (served, own, mask), = trainer.old_logps
    assert torch.equal(served, own)  # TRL's own forward, bit for bit
    assert torch.equal(served, trainer.batches[0]["last"].result.token_logprobs)

    for key in ("repro/points_per_completion", "repro/mean_score", "repro/scoring_seconds"):
        assert len(logged(trainer, key)) == 1
    assert logged(trainer, "repro/points_per_completion")[0] >= 1.0
    assert all(torch.isfinite(torch.tensor(logged(trainer, "loss"))))
    assert any(not torch.equal(initial[k], v) for k, v in trainer.model.state_dict().items())


def test_bf16_two_steps(gpt2_tokenizer, tmp_path):
    # bf16=True (TRL's default): accelerate runs the model under autocast. TRL's old-log-prob
    # forward is RePro's phase 1 in bf16 too: its log-probs stay TRL's own, bit for bit, and the
    # extend step runs under the same autocast.
    alpha = 0.3
    trainer, initial = train(
        probed(RePROGRPOTrainer),
        gpt2_tokenizer,
        tmp_path,
        bf16=True,
        steps_per_generation=2,
        repro_config=RePROConfig(alpha=alpha, num_segments=3, think_end=None),
    )
    check_advantages(trainer, gpt2_tokenizer, alpha, atol=1e-5, rescore=False)
    assert trainer.batches[0]["last"].phase1_source == "old_logps"
    assert sources(trainer) == [("old_logps", 1.0)]
    (served, own, mask), = trainer.old_logps
    assert torch.equal(served, own)  # TRL's own bf16 forward, bit for bit
    assert torch.equal(served, trainer.batches[0]["last"].result.token_logprobs)
    assert all(torch.isfinite(torch.tensor(logged(trainer, "loss"))))
    assert any(not torch.equal(initial[k], v) for k, v in trainer.model.state_dict().items())
    # The same trajectories through the scorer's own phase 1 under the same autocast, at the
    # weights that sampled them: one policy.
    last = trainer.batches[0]["last"]
    trainer.model.load_state_dict(trainer.batches[0]["weights"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        again = trainer.repro_scorer.score_padded(
            last.prompt_ids,
            last.prompt_mask,
            last.completion_ids,
            last.completion_mask,
            [x["answer"] for x in trainer.batches[0]["inputs"]],
        )
    diff = float((again.token_logprobs - own).abs()[mask].max())
    print(f"bf16: scorer's own phase 1 vs TRL log-probs, max |diff| = {diff:.3g}")
    assert diff <= 0.05, diff  # the same policy under bf16 (measured: 0.016), not another distribution


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_without_old_logps_the_generation_is_phase_1(gpt2_tokenizer, tmp_path, bf16):
    # TRL's defaults (num_iterations=1, generation aligned with the optimizer step): TRL runs no
    # old-log-prob forward, and its transformers generate() is RePro's phase 1.
    alpha = 0.3
    trainer, initial = train(probed(RePROGRPOTrainer), gpt2_tokenizer, tmp_path, bf16=bf16,
                             repro_config=RePROConfig(alpha=alpha, num_segments=3, think_end=None))
    assert trainer.old_logps == []  # TRL ran no old-log-prob forward
    assert sources(trainer) == [("generation", 1.0)] * 2
    assert all(batch["last"].phase1_source == "generation" for batch in trainer.batches)
    # fp32: the naive backend re-scores the same trajectories at the same weights within 1e-4.
    rows = check_advantages(trainer, gpt2_tokenizer, alpha, atol=1e-5, rescore=not bf16)
    assert any(float(adv.std()) > 1e-3 for adv in rows.values()), "process term constant along every row"
    assert all(torch.isfinite(torch.tensor(logged(trainer, "loss"))))
    assert any(not torch.equal(initial[k], v) for k, v in trainer.model.state_dict().items())
    if bf16:  # the scorer's own phase 1 under the same autocast, at the weights that sampled them
        last = trainer.batches[-1]["last"]
        trainer.model.load_state_dict(trainer.batches[-1]["weights"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            again = trainer.repro_scorer.score_padded(
                last.prompt_ids, last.prompt_mask, last.completion_ids, last.completion_mask,
                [x["answer"] for x in trainer.batches[-1]["inputs"]])
        mask = last.completion_mask.bool()
        diff = float((again.token_logprobs - last.result.token_logprobs).abs()[mask].max())
        assert diff <= 0.05, diff  # the same policy under bf16, not another distribution


def test_truncated_completions_masked_by_trl_are_scored_as_empty(gpt2_tokenizer, tmp_path):
    # mask_truncated_completions: TRL zeroes the mask of a completion without EOS; RePro, scoring
    # TRL's generate() as phase 1, scores that completion as empty (as it does TRL's padded batch).
    trainer, _ = train(probed(RePROGRPOTrainer), gpt2_tokenizer, tmp_path, steps=1,
                       mask_truncated_completions=True, max_completion_length=6,
                       repro_config=RePROConfig(num_segments=3, think_end=None))
    (batch,) = trainer.batches
    assert batch["last"].phase1_source == "generation"
    lengths = batch["output"]["completion_mask"].sum(1)
    assert (lengths == 0).any(), "no truncated completion: a weak test"
    assert torch.equal(batch["last"].result.response_mask.sum(1), lengths)
    assert all(p == [0] for p, n in zip(batch["last"].result.points, lengths) if n == 0)


def test_a_generation_without_kv_cache_falls_back_to_the_scorers_own_forward(gpt2_tokenizer, tmp_path):
    trainer, _ = train(probed(RePROGRPOTrainer), gpt2_tokenizer, tmp_path, steps=1,
                       generation_kwargs={"sequence_bias": [[[NEWLINES], 6.0]], "use_cache": False},
                       repro_config=RePROConfig(num_segments=3, think_end=None))
    assert trainer.batches[0]["last"].phase1_source == "own_forward"
    assert sources(trainer) == [("own_forward", 1.0)]  # generate() not recorded: no cache to extend
    check_advantages(trainer, gpt2_tokenizer, 0.1, atol=1e-5)  # scored all the same


def test_alpha_zero_is_plain_grpo(gpt2_tokenizer, tmp_path):
    repro, _ = train(RePROGRPOTrainer, gpt2_tokenizer, tmp_path / "repro",
                     repro_config=RePROConfig(alpha=0.0, num_segments=3))
    plain, initial = train(GRPOTrainer, gpt2_tokenizer, tmp_path / "plain")
    assert logged(repro, "loss") == logged(plain, "loss") and len(logged(plain, "loss")) == 2
    changed = 0
    for name, value in plain.model.state_dict().items():
        assert torch.equal(repro.model.state_dict()[name], value), name
        changed += not torch.equal(initial[name], value)
    assert changed > 0
    assert logged(repro, "repro/points_per_completion")  # it did score


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_give_the_one_process_advantages(gpt2_tokenizer_dir, tmp_path):
    # The same script twice: in this process (one process), then under accelerate (two, gloo).
    spec = importlib.util.spec_from_file_location("grpo_one_batch", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(str(tmp_path / "world1.json"), gpt2_tokenizer_dir)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), SCRIPT, str(tmp_path / "world2.json"), gpt2_tokenizer_dir]
    # No CUDA devices: accelerate then joins the two CPU processes with gloo, even on a GPU machine.
    env = dict(os.environ, OMP_NUM_THREADS="1", TRL_EXPERIMENTAL_SILENCE="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"accelerate launch failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    rows = {}
    for world in (1, 2):
        data = json.loads((tmp_path / f"world{world}.json").read_text())
        assert data["world"] == world
        rows[world] = data["rows"]
    one, two = rows[1], rows[2]
    assert [r["rank"] for r in two] == [0] * 6 + [1] * 6
    for a, b in zip(one, two, strict=True):
        assert (a["prompt"], a["completion"]) == (b["prompt"], b["completion"])
        assert a["outcome"] == pytest.approx(b["outcome"], abs=1e-6)
        assert a["advantages"] == pytest.approx(b["advantages"], abs=1e-5)
    # Rows 4-7 are one group, split over the processes (4-5 on rank 0, 6-7 on rank 1). Normalizing
    # each process's part of it separately would give other process advantages: the test sees that.
    groups = [i // G for i in range(12)]
    split_groups = [(r["rank"], g) for r, g in zip(two, groups)]
    for scope in (groups, split_groups):
        norm = R.normalize_rewards([r["rewards"] for r in two], scope, "group")
        process = [R.reward_to_go(len(r["process"]), r["points"], n) for r, n in zip(two, norm)]
        close = all(p == pytest.approx(r["process"], abs=1e-4) for p, r in zip(process, two))
        assert close == (scope is groups)


def test_errors_name_the_argument(gpt2_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="repro_config.temperature"):
        train(RePROGRPOTrainer, gpt2_tokenizer, tmp_path, steps=0, repro_config=RePROConfig(temperature=0.7))
    with pytest.raises(TypeError, match="repro_config"):
        train(RePROGRPOTrainer, gpt2_tokenizer, tmp_path, steps=0, repro_config={"alpha": 0.1})
    model = make_tiny_model("llama")
    data = Dataset.from_list([{"prompt": "Q?\n", "solution": "1"}] * 4)
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    with pytest.raises(ValueError, match="answer_column.*'answer'"):
        RePROGRPOTrainer(model, length_reward, args=args, train_dataset=data, processing_class=gpt2_tokenizer)
    data = Dataset.from_list([{"prompt": "Q?\n", "answer": "1"}] * 4)
    with pytest.raises(ValueError, match="repro_backend: expected one of"):
        RePROGRPOTrainer(model, length_reward, args=args, train_dataset=data, processing_class=gpt2_tokenizer,
                         repro_backend="fastest")
    # An explicit "fast" is not replaced by the naive backend ("auto" is: the tests below).
    with pytest.raises(ValueError, match="repro_backend: the fast backend cannot score.*sliding window"):
        RePROGRPOTrainer(tiny_sliding_window_model(), length_reward, args=args, train_dataset=data,
                         processing_class=gpt2_tokenizer, repro_backend="fast")


def test_unsupported_trl_version_is_refused(monkeypatch):
    import importlib
    import importlib.metadata

    import repro_fast.integrations.trl as module

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.17.0" if name == "trl" else real(name))
    try:
        with pytest.raises(ImportError, match=r"trl>=1\.16,<1\.17.*found trl 1\.17\.0"):
            importlib.reload(module)
    finally:
        monkeypatch.undo()
        importlib.reload(module)
    assert SUPPORTED_TRL == ">=1.16,<1.17"

# ------------------------------------------------------------------------------------------
# Heads that are not a plain linear layer, and PEFT adapters
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gemma2", "cohere2"])
@pytest.mark.parametrize("phase1", ["generation", "old_logps"])
def test_trl_trains_two_bf16_steps(gpt2_tokenizer, tmp_path, arch, phase1):
    # Phase 1 from TRL's generate() (defaults) or from its old-log-prob forward (steps_per_generation=2).
    data = [{"prompt": f"Question {i}: what is {i} plus 3?\n", "answer": str(i + 3)} for i in range(4)]
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=12, max_steps=2, learning_rate=1e-3, bf16=True, use_cpu=True,
                      seed=0, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True,
                      steps_per_generation=1 if phase1 == "generation" else 2)
    trainer = RePROGRPOTrainer(
        make_scaled_head_model(arch).train(),
        lambda completions, **kw: [float(len(c) % 3) for c in completions],
        args=args,
        train_dataset=Dataset.from_list(data),
        processing_class=gpt2_tokenizer,
    )
    trainer.train()
    scored = [h["repro/scoring_seconds"] for h in trainer.state.log_history if "repro/scoring_seconds" in h]
    batches = 2 if phase1 == "generation" else 1  # steps_per_generation=2: one batch, two steps
    assert len(scored) == batches
    assert sources(trainer) == [(phase1, 1.0)] * batches


def test_trl_trainer_with_a_lora_config_on_embed_tokens(gpt2_tokenizer, tmp_path):
    """Fault: ``RePROGRPOTrainer(peft_config=LoraConfig(target_modules=[..., "embed_tokens"]))``
    failed at construction. Now it trains a step and scores through the adapter."""
    data = [{"prompt": f"Question {i}: what is {i} plus 3?\n", "answer": str(i + 3)} for i in range(4)]
    args = GRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=8, max_steps=1, learning_rate=1e-3, bf16=False, use_cpu=True,
                      seed=0, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True)
    lora = peft.LoraConfig(r=4, target_modules=["embed_tokens", "q_proj"], init_lora_weights=False)
    trainer = RePROGRPOTrainer(
        make_tiny_model("llama").train(),
        lambda completions, **kw: [1.0] * len(completions),
        args=args,
        train_dataset=Dataset.from_list(data),
        processing_class=gpt2_tokenizer,
        peft_config=lora,
    )
    assert isinstance(trainer.model, peft.PeftModel)
    trainer.train()
    assert any("repro/scoring_seconds" in h for h in trainer.state.log_history)


# ------------------------------------------------------------------------------------------
# Which pass is phase 1, and what happens where a recorded pass cannot be
# ------------------------------------------------------------------------------------------


def trl_call_lines(method, marker: str) -> set[int]:
    """The line numbers, in TRL's source, of ``method``'s lines that contain ``marker``."""
    lines, start = inspect.getsourcelines(method)
    return {start + i for i, line in enumerate(lines) if marker in line}


def saved_tiny_llama(path):
    """The tiny Llama loaded from a folder: TRL builds the reference model (beta != 0) from the
    policy's ``name_or_path``, which a model built from a config lacks."""
    from transformers import AutoModelForCausalLM

    make_tiny_model("llama").save_pretrained(path)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


@pytest.mark.parametrize("reference", ["ref_model", "peft"])
def test_the_old_logps_pass_is_recognized_by_where_trl_calls_it(gpt2_tokenizer, tmp_path, reference):
    # beta != 0: while it builds the batch TRL also runs a no-grad reference forward, on its
    # ref_model or (PEFT) on the policy itself with the adapter disabled; then the loss forwards
    # (grad, compute_entropy=True). Only the call on TRL's old-log-prob line may be taken.
    peft_config = peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]) if reference == "peft" else None
    trainer, _ = train(probed(RePROGRPOTrainer), gpt2_tokenizer, tmp_path, beta=0.1, steps_per_generation=2,
                       model=saved_tiny_llama(tmp_path / "m"), peft_config=peft_config,
                       repro_config=RePROConfig(num_segments=3, think_end=None))
    assert (trainer.ref_model is None) == (reference == "peft")
    build_batch = GRPOTrainer._generate_and_score_completions
    old = trl_call_lines(build_batch, "old_per_token_logps, _, _ = self._get_per_token_logps_and_entropies(")
    ref = trl_call_lines(build_batch, "ref_per_token_logps, _, _ = self._get_per_token_logps_and_entropies(")
    loss = trl_call_lines(GRPOTrainer._compute_loss, "= self._get_per_token_logps_and_entropies(")
    assert len(old) == 1 and len(ref) == 2 and len(loss) == 1
    kinds = [("old" if line in old else "ref" if line in ref else "loss" if line in loss else name)
             for name, line, _ in trainer.calls]
    assert kinds == ["old", "ref", "loss", "loss"]  # one batch, two optimizer steps
    assert [taken for *_, taken in trainer.calls] == [True, False, False, False]
    assert trainer.repro_last.phase1_source == "old_logps" and sources(trainer) == [("old_logps", 1.0)]
    assert len(trainer.old_logps) == 2  # the two no-grad forwards, each TRL's own bit for bit
    for served, own, _ in trainer.old_logps:
        assert torch.equal(served, own)
    check_advantages(trainer, gpt2_tokenizer, 0.1, atol=1e-5, rescore=False)


def test_the_old_logps_rule(gpt2_tokenizer, tmp_path):
    # The rule of RePROGRPOTrainer's docstring, case by case, on a trainer whose TRL configuration
    # runs the old-log-prob forward (steps_per_generation=2) and on one that does not (defaults).
    trainer = build(RePROGRPOTrainer, gpt2_tokenizer, tmp_path, steps_per_generation=2)
    policy, other = trainer.model, make_tiny_model("llama")

    def taken(forwards=1, model=policy, grad=False, entropy=False, aux=False, extra=None, on=trainer):
        batch = _BatchState(["7"], [0], trl_forwards=forwards)
        with torch.set_grad_enabled(grad):
            return on._is_old_logps_pass(batch, model, entropy, aux, extra or {"num_images": None})

    assert taken()
    assert not taken(forwards=2)  # the reference forward (PEFT: the policy, adapter off) comes second
    assert not taken(model=other)  # a reference model
    assert not taken(grad=True)  # the loss forward
    assert not taken(entropy=True)  # a loss forward in evaluation (no grad, entropies)
    assert not taken(aux=True)
    assert not taken(extra={"pixel_values": torch.zeros(1)})
    assert not trainer._is_old_logps_pass(None, policy, False, False, {})  # outside a batch
    defaults = build(RePROGRPOTrainer, gpt2_tokenizer, tmp_path / "defaults")
    assert not taken(on=defaults)  # TRL runs no old-log-prob forward here


def rescored_advantages(trainer, batch, make_model):
    """TRL's outcome advantage + alpha x the process advantages of a naive-backend re-score of the
    batch's rows, in eval mode at the weights that sampled them (on a ``make_model()``)."""
    last = batch["last"]
    model = make_model()
    model.load_state_dict(batch["weights"])
    model.eval()
    naive = RePROScorer(model, trainer._tokenizer, trainer.repro_config, backend="naive")
    ref = naive.score_padded(last.prompt_ids, last.prompt_mask, last.completion_ids, last.completion_mask,
                             [x["answer"] for x in batch["inputs"]], group_ids=last.group_ids)
    return last.outcome_advantages[:, None] + trainer.repro_config.alpha * ref.process_advantages


@pytest.mark.parametrize("phase1", ["generation", "old_logps"])
def test_with_dropout_in_effect_the_scorers_eval_forward_is_phase_1(gpt2_tokenizer, tmp_path, caplog, phase1):
    # GPT-2's default config: dropout 0.1; TRL's default disable_dropout=False keeps it, and TRL
    # samples and runs its old-log-prob forward in train mode: neither pass is score()'s.
    alpha = 0.3
    model = make_tiny_model("gpt2").train()
    assert model.config.resid_pdrop == 0.1
    with caplog.at_level(logging.WARNING, logger="repro_fast.integrations.trl"):
        trainer, _ = train(probed(RePROGRPOTrainer), gpt2_tokenizer, tmp_path, model=model,
                           disable_dropout=False, steps_per_generation=1 if phase1 == "generation" else 2,
                           repro_config=RePROConfig(alpha=alpha, num_segments=3, think_end=None))
    batches = 2 if phase1 == "generation" else 1
    assert len(trainer.batches) == batches and len(trainer.loss_inputs) == 2
    assert (trainer.old_logps != []) == (phase1 == "old_logps")  # TRL ran its old-log-prob forward
    assert sources(trainer) == [("own_forward", 1.0)] * batches
    refusals = [r.getMessage() for r in caplog.records if "is not RePro's phase 1" in r.getMessage()]
    assert len(refusals) == 1 and "dropout" in refusals[0], refusals  # once, naming the cause
    for batch in trainer.batches:
        assert batch["last"].phase1_source == "own_forward"
        expected = rescored_advantages(trainer, batch, lambda: make_tiny_model("gpt2"))
        diff = float((batch["output"]["advantages"] - expected).abs().max())
        print(f"dropout, {phase1}: advantages vs a naive eval-mode re-score, max |diff| = {diff:.3g}")
        assert diff <= 1e-4, diff
        assert float(batch["last"].process_advantages.abs().max()) > 0.1, "no process term: a weak test"
    check_advantages(trainer, gpt2_tokenizer, alpha, atol=1e-5, rescore=False)
    assert all(torch.isfinite(torch.tensor(logged(trainer, "loss"))))


def tiny_sliding_window_model(window=8):
    """A tiny Mistral whose sliding window (8) is shorter than a prompt + a 16-token completion."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.MistralConfig(vocab_size=GPT2_VOCAB, hidden_size=32, intermediate_size=64,
                              num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                              sliding_window=window, max_position_embeddings=512, initializer_range=0.25)
    return tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def tiny_hybrid_model():
    """A tiny NemotronH (Mamba-2, attention and MLP layers; TRL's own GRPO suite trains one): its
    cache holds state-space layers, which the answer copies cannot rewind to a prefix."""
    import transformers as tf

    torch.manual_seed(0)
    config = tf.NemotronHConfig(vocab_size=GPT2_VOCAB, hidden_size=32,
                                layers_block_type=["mamba", "attention", "mlp"],
                                num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                intermediate_size=64, ssm_state_size=8, mamba_num_heads=4, mamba_head_dim=16,
                                n_groups=1, chunk_size=16, max_position_embeddings=512, pad_token_id=50256,
                                bos_token_id=50256, eos_token_id=50256)
    return tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)


@pytest.mark.parametrize("kind", ["sliding_window", "hybrid"])
def test_a_model_the_fast_backend_refuses_trains_with_the_naive_one(gpt2_tokenizer, tmp_path, caplog, kind):
    # TRL's defaults (bf16, num_iterations=1: generate() would be phase 1). The fast backend refuses
    # the model when the trainer is built; the naive backend scores every batch; logged once.
    model = tiny_sliding_window_model() if kind == "sliding_window" else tiny_hybrid_model()
    with caplog.at_level(logging.WARNING, logger="repro_fast.integrations.trl"):
        trainer, initial = train(probed(RePROGRPOTrainer), gpt2_tokenizer, tmp_path, model=model, bf16=True,
                                 repro_config=RePROConfig(num_segments=3, think_end=None))
    assert trainer.repro_scorer.backend_name == "naive"
    notes = [r.getMessage() for r in caplog.records if r.name == "repro_fast.integrations.trl"]
    assert len(notes) == 1 and "naive backend" in notes[0], notes
    assert ("sliding window" if kind == "sliding_window" else "recurrent") in notes[0], notes
    assert sources(trainer) == [("own_forward", 1.0)] * 2
    assert max(len(c) for c in unpadded(trainer.batches[0]["output"]["completion_ids"],
                                        trainer.batches[0]["output"]["completion_mask"])) > 8
    assert all(torch.isfinite(torch.tensor(logged(trainer, "loss"))))
    assert any(not torch.equal(initial[k], v) for k, v in trainer.model.state_dict().items())
    check_advantages(trainer, gpt2_tokenizer, 0.1, atol=1e-5, rescore=False)


def test_a_batch_longer_than_the_sliding_window_is_scored_naively(gpt2_tokenizer, tmp_path, caplog):
    # A window of 48 covers max_completion_length (8) + the build-time margin, so the run scores
    # with the fast backend; but these prompts are longer (TRL 1.16 does not bound them): the
    # recorded generate() is refused and the batch is scored by the naive backend, never a crash.
    window, preamble = 48, "Please read the question below carefully, then think step by step. " * 4
    assert len(gpt2_tokenizer.encode(preamble)) + 8 > window
    with caplog.at_level(logging.WARNING, logger="repro_fast.integrations.trl"):
        trainer, _ = train(probed(RePROGRPOTrainer), gpt2_tokenizer, tmp_path, steps=1, preamble=preamble,
                           max_completion_length=8, model=tiny_sliding_window_model(window),
                           repro_config=RePROConfig(num_segments=3, think_end=None))
    assert trainer.repro_scorer.backend_name == "fast"
    notes = [r.getMessage() for r in caplog.records if r.name == "repro_fast.integrations.trl"]
    assert any("generate() is not RePro's phase 1" in n for n in notes), notes
    assert any("scored by the naive backend" in n and "sliding window" in n for n in notes), notes
    (batch,) = trainer.batches
    assert batch["last"].phase1_source == "own_forward" and sources(trainer) == [("own_forward", 1.0)]
    expected = rescored_advantages(trainer, batch, lambda: tiny_sliding_window_model(window))
    assert float((batch["output"]["advantages"] - expected).abs().max()) <= 1e-4


def test_a_sampling_temperature_other_than_repros_is_refused(gpt2_tokenizer, tmp_path):
    # generation_kwargs override GRPOConfig.temperature when TRL samples (TRL 1.16, transformers
    # and vLLM alike): RePro must read the policy TRL samples from.
    refused = r"repro_config.temperature \(1.0\).*generation_kwargs\['temperature'\] \(0.5\)"
    with pytest.raises(ValueError, match=refused):
        build(RePROGRPOTrainer, gpt2_tokenizer, tmp_path, generation_kwargs={"temperature": 0.5})
    trainer = build(RePROGRPOTrainer, gpt2_tokenizer, tmp_path, temperature=0.5,
                    generation_kwargs={"temperature": 0.5}, repro_config=RePROConfig(temperature=0.5))
    assert trainer.generation_config.temperature == 0.5  # what TRL samples at
