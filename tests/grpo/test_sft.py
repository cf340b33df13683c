"""`repro_fast.grpo.sft`: the supervised warm start. SFTConfig refuses bad settings by name; the
checkpoint to start from must exist, hold a config.json and lie outside --out; the batches mask the
prompt and the padding out of the loss and end each response with EOS; the evaluation leaves the
caller's random stream alone and draws the same samples each time; the CPU thread count is restored;
and a short toy run lowers its loss, then writes the checkpoint, its summary and its manifest."""

from __future__ import annotations

import json
import random

import pytest
import torch

from repro_fast.grpo import sft
from repro_fast.grpo.config import ConfigError
from repro_fast.grpo.sft import SFTConfig, check_init, cpu_threads, evaluate, resolve_device, run_sft
from repro_fast.grpo.tasks import ToyTask, load_checkpoint
from repro_fast.outputs import MANIFEST


@pytest.mark.parametrize("kwargs, message", [
    (dict(task="toys"), "toy"),
    (dict(steps=0), "steps"),
    (dict(batch_size=-1), "batch_size"),
    (dict(lr="fast"), "lr"),
    (dict(device="tpu"), "device"),
])
def test_bad_settings_are_named(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SFTConfig(**kwargs)


def test_check_init(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="does not exist"):
        check_init(str(tmp_path / "missing"), str(out))
    (tmp_path / "ckpt").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        check_init(str(tmp_path / "ckpt"), str(out))
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    check_init(str(tmp_path / "ckpt"), str(out))  # a checkpoint folder outside out
    with pytest.raises(ConfigError, match="is --out"):
        check_init(str(tmp_path / "ckpt"), str(tmp_path / "ckpt"))
    (out / "ckpt").mkdir(parents=True)
    (out / "ckpt" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="is inside --out"):
        check_init(str(out / "ckpt"), str(out))


def test_resolve_device_and_threads(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    with pytest.raises(ConfigError, match="no CUDA device"):
        resolve_device("cuda")
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    with cpu_threads(want, torch.device("cpu")):
        assert torch.get_num_threads() == want
    assert torch.get_num_threads() == before
    with cpu_threads(0, torch.device("cpu")):  # 0: torch's own setting
        assert torch.get_num_threads() == before


def test_batches_train_on_the_response_and_eos_only():
    task = ToyTask()
    _, tok = task.fresh(0)
    examples = task.sft_examples(random.Random(0), 3)
    ids, mask, labels = sft._batch(tok, task, examples, "cpu")
    for row, (problem, response) in enumerate(examples):
        q = task.encode_prompt(tok, problem)
        y = tok.encode(response, add_special_tokens=False) + [tok.eos_token_id]
        n = len(q) + len(y)
        assert ids[row, :n].tolist() == q + y and mask[row].tolist() == [1] * n + [0] * (ids.shape[1] - n)
        assert labels[row].tolist() == [-100] * len(q) + y + [-100] * (ids.shape[1] - n)


def test_evaluate_repeats_its_draws_and_leaves_the_callers_stream():
    task = ToyTask()
    model, tok = task.fresh(0)
    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    first = evaluate(model, tok, task, 4, max_new_tokens=8, temperature=1.0, seed=3)
    assert torch.equal(torch.rand(3), expected_next), "the caller's random stream moved"
    assert evaluate(model, tok, task, 4, max_new_tokens=8, temperature=1.0, seed=3) == first
    assert 0.0 <= first["accuracy"] <= 1.0 and 1 <= first["response_length"] <= 8
    assert "rechecks_per_rollout" in first  # the task's own rollout metrics


def test_short_toy_run_learns_and_writes_its_checkpoint(tmp_path):
    out = tmp_path / "sft"
    summary = run_sft(SFTConfig(out=str(out), steps=8, batch_size=8, warmup=2, eval_problems=2,
                                progress=False, seed=1))
    saved = json.loads((out / "sft_summary.json").read_text())
    assert saved["steps"] == 8 and saved["final_loss"] == summary["final_loss"]
    fresh_loss = _toy_loss(*ToyTask().fresh(1))
    model, tok = load_checkpoint(str(out))
    assert _toy_loss(model, tok) < fresh_loss, "eight steps of SFT lower the loss on the SFT data"
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["command"] == "sft" and "config.json" in manifest["created"]
    assert "sft_summary.json" in manifest["created"]


def _toy_loss(model, tok) -> float:
    task = ToyTask()
    ids, mask, labels = sft._batch(tok, task, task.sft_examples(random.Random(123), 16), "cpu")
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
