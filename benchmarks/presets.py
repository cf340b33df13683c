"""The benchmark presets: a model, a tokenizer and trajectories, composed from `inputs` (text,
tokenizer, trajectories), `models` (architectures, random weights) and `baselines` (the rows
the fast scorer is measured against). `get_preset(name)` builds one; benchmarks/README.md says
what each holds.

* ``cpu``: `models.cpu_model_config` (fp32, CPU), 8 synthetic CoTs, prompt 128, response 1024.
* ``real``: SmolLM2-135M-Instruct (offline GGUF, fp32, CPU), 16 GSM8K reference solutions.
* ``long``: ``cpu``'s model and tokenizer, 8 GSM8K re-check CoTs of 2-4k tokens.
* ``gpu``: `models.qwen25_1p5b_config` (random, bf16, CUDA), 16 synthetic, prompt 256, response 8192.
* ``gpu_real``: SmolLM2-135M's architecture (random, bf16, CUDA), 64 of ``real``'s trajectories.
* ``gpu_long``: Qwen2.5-1.5B's architecture (random, bf16, CUDA), 16 re-check CoTs of 4-8k tokens.

k, the token budget and the answer template are the package's defaults (`inputs.DEFAULTS`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from repro_fast import RePROScorer

import baselines
import inputs
from inputs import DEFAULTS
from models import GPU_LOGIT_SCALE, architecture_of, build_model, cpu_model_config, qwen25_1p5b_config


@dataclass
class Preset:
    name: str
    description: str
    model: Any
    tokenizer: Any
    prompts: list[list[int]]
    responses: list[list[int]]
    answers: list[str]
    group_ids: list[int] | None
    num_segments: int
    token_budget: int
    device: str
    dtype: torch.dtype
    config_overrides: dict = field(default_factory=dict)

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def synchronize(self) -> None:
        if self.is_cuda:
            torch.cuda.synchronize()

    @torch.inference_mode()
    def warm_libraries(self) -> None:
        """A tiny forward + head, so one-time library set-up (thread pools, BLAS/oneDNN
        buffers, CUDA context) is part of setup, not of any provider's peak memory."""
        q, y = self.prompts[0][:8], self.responses[0][:8]
        baselines.plain_logprob_forward(self.model, [q], [y], token_budget=self.token_budget)
        self.synchronize()

    def make_config(self, num_segments: int | None = None):
        return DEFAULTS.replace(
            num_segments=self.num_segments if num_segments is None else num_segments,
            token_budget=self.token_budget, **self.config_overrides,
        )

    def make_scorer(self, backend: str, num_segments: int | None = None, kernels: str | None = None):
        """The fast scorer, or the naive baseline (``backend="naive"``), on this preset."""
        return RePROScorer(self.model, self.tokenizer, self.make_config(num_segments),
                           backend=backend, kernels=kernels)

    def score(self, scorer):
        with torch.inference_mode():
            return scorer.score(self.prompts, self.responses, self.answers, self.group_ids)

    def answer_ids(self) -> list[list[int]]:
        return inputs.answer_ids(self.tokenizer, self.answers, self.make_config().answer_template)

    def plain_forward(self):
        return baselines.plain_logprob_forward(self.model, self.prompts, self.responses,
                                               token_budget=self.token_budget)

    def hf_forward(self):
        return baselines.hf_logprob_forward(self.model, self.prompts, self.responses,
                                            token_budget=self.token_budget)

    def paper_cost(self, points=None):
        return baselines.paper_code_cost(self.model, self.prompts, self.responses, self.answer_ids(),
                                         num_segments=self.num_segments, token_budget=self.token_budget,
                                         points=points)

    def mean_point_position(self, result) -> float:
        """Mean ``P_j / n`` over the selected starts (``0 < P_j < F``): where the points sit."""
        fr = [p / len(y) for pts, y, f in zip(result.points, self.responses, result.think_end)
              for p in pts[1:] if p < f]
        return sum(fr) / len(fr) if fr else float("nan")

    def summary(self) -> str:
        n = len(self.prompts)
        lq, ly = [len(q) for q in self.prompts], [len(y) for y in self.responses]
        return (f"{self.name}: {self.description}; {n} trajectories, prompt "
                f"{min(lq)}-{max(lq)}, response {min(ly)}-{max(ly)} tokens, "
                f"k={self.num_segments}, token budget {self.token_budget}")


# Settings of the synthetic presets; the model factory is applied on top of them.
PRESET_SETTINGS = {
    "cpu": dict(num_trajectories=8, prompt_len=128, response_len=1024, vocab_size=4096,
                num_segments=DEFAULTS.num_segments, token_budget=DEFAULTS.token_budget, seed=0,
                group_size=4, device="cpu", dtype=torch.float32,
                description="Qwen2-style random model (hidden 256, 4 layers, 4/2 heads, "
                            "intermediate 688, vocab 4096), fp32, CPU"),
    "gpu": dict(num_trajectories=16, prompt_len=256, response_len=8192, vocab_size=4096,
                num_segments=DEFAULTS.num_segments, token_budget=DEFAULTS.token_budget, seed=0,
                group_size=8, device="cuda", dtype=torch.bfloat16,
                description="Qwen2.5-1.5B architecture (hidden 1536, 28 layers, 12/2 heads, "
                            "intermediate 8960, vocab 151936), random weights, bf16, CUDA; "
                            "4096-token BPE tokenizer"),
}


def make_inputs(name: str, **overrides) -> dict:
    """A synthetic preset's settings, tokenizer and trajectories, without its model (cheap)."""
    s = dict(PRESET_SETTINGS[name], **overrides)
    tokenizer = inputs.train_tokenizer(vocab_size=s["vocab_size"])
    prompts, responses, answers = inputs.make_trajectories(
        tokenizer, s["num_trajectories"], s["prompt_len"], s["response_len"], seed=s["seed"])
    summary = (f"{s['description']}; {s['num_trajectories']} trajectories, prompt "
               f"{s['prompt_len']}, response {s['response_len']}, k={s['num_segments']}, "
               f"token budget {s['token_budget']}")
    return dict(s, tokenizer=tokenizer, prompts=prompts, responses=responses, answers=answers,
                answer_ids=inputs.answer_ids(tokenizer, answers), summary=summary,
                group_ids=[i // s["group_size"] for i in range(s["num_trajectories"])])


def _groups(n: int, size: int) -> list[int]:
    return [i // size for i in range(n)]


def _need_cuda(name: str) -> None:
    if not torch.cuda.is_available():
        raise RuntimeError(f"the {name} preset needs a CUDA device")


def _synthetic(name: str, model_config, **overrides) -> Preset:
    inp = make_inputs(name, **overrides)
    cfg = model_config(len(inp["tokenizer"])) if callable(model_config) else model_config
    model = build_model(cfg, inp["device"], inp["dtype"], inp["seed"],
                        logit_scale=GPU_LOGIT_SCALE if inp["device"].startswith("cuda") else 1.0)
    return Preset(name=name, description=inp["description"], model=model,
                  tokenizer=inp["tokenizer"], prompts=inp["prompts"],
                  responses=inp["responses"], answers=inp["answers"],
                  group_ids=inp["group_ids"], num_segments=inp["num_segments"],
                  token_budget=inp["token_budget"], device=inp["device"], dtype=inp["dtype"])


def make_cpu_preset(**overrides) -> Preset:
    """The CPU preset (`PRESET_SETTINGS["cpu"]`); keyword overrides, e.g. ``num_segments=5``."""
    return _synthetic("cpu", cpu_model_config, **overrides)


def make_gpu_preset(**overrides) -> Preset:
    """The GPU preset (`PRESET_SETTINGS["gpu"]`): Qwen2.5-1.5B architecture on CUDA, bf16."""
    _need_cuda("gpu")
    return _synthetic("gpu", qwen25_1p5b_config(), **overrides)


def make_real_preset(num_segments: int = DEFAULTS.num_segments, num_trajectories: int = 16, **_) -> Preset:
    """SmolLM2-135M-Instruct (the real model, fp32, CPU) scoring 16 real GSM8K reference
    solutions as chains of thought (chat-templated prompts)."""
    from repro_fast.offline import load_smollm2

    model, tok = load_smollm2()
    prompts, responses, answers = inputs.gsm8k_trajectories(tok, num_trajectories)
    return Preset(name="real", description="SmolLM2-135M-Instruct (offline GGUF, de-quantized), fp32, CPU; "
                  "real GSM8K reference solutions as CoTs", model=model, tokenizer=tok, prompts=prompts,
                  responses=responses, answers=answers, group_ids=_groups(num_trajectories, 4),
                  num_segments=num_segments, token_budget=DEFAULTS.token_budget, device="cpu",
                  dtype=torch.float32)


def make_long_preset(num_segments: int = DEFAULTS.num_segments, num_trajectories: int = 8,
                     response_len=(2048, 4096), **_) -> Preset:
    """The CPU preset's model and tokenizer on reasoning-model-like CoTs of 2-4k tokens with
    90-170 paragraph boundaries (GSM8K solutions with re-check paragraphs)."""
    tok = inputs.train_tokenizer(vocab_size=PRESET_SETTINGS["cpu"]["vocab_size"])
    model = build_model(cpu_model_config(len(tok)), "cpu", torch.float32, 0)
    lengths = (response_len, response_len) if isinstance(response_len, int) else tuple(response_len)
    prompts, responses, answers = inputs.gsm8k_trajectories(tok, num_trajectories, offset=20,
                                                            long_cot=lengths)
    return Preset(name="long", description="the cpu preset's random Qwen2-style model, fp32, CPU; GSM8K "
                  "solutions with re-check paragraphs as long CoTs", model=model, tokenizer=tok,
                  prompts=prompts, responses=responses, answers=answers,
                  group_ids=_groups(num_trajectories, 4), num_segments=num_segments,
                  token_budget=DEFAULTS.token_budget, device="cpu", dtype=torch.float32)


def _gpu_random(name: str, config, tok, prompts, responses, answers) -> Preset:
    """A random-weight model of ``config`` on CUDA in bf16, scoring the given trajectories."""
    _need_cuda(name)
    model = build_model(config, "cuda", torch.bfloat16, 0, logit_scale=GPU_LOGIT_SCALE)
    return Preset(name=name, description=f"random-weight {type(config).__name__} on CUDA, bf16", model=model,
                  tokenizer=tok, prompts=prompts, responses=responses, answers=answers,
                  group_ids=_groups(len(prompts), 8), num_segments=DEFAULTS.num_segments,
                  token_budget=DEFAULTS.token_budget, device="cuda", dtype=torch.bfloat16)


def make_gpu_real_preset(**_) -> Preset:
    """`real`'s GSM8K trajectories (64 of them) on a random-weight model of SmolLM2-135M's configuration."""
    from repro_fast.offline import load_smollm2

    model, tok = load_smollm2()
    return _gpu_random("gpu_real", architecture_of(model), tok, *inputs.gsm8k_trajectories(tok, 64))


def make_gpu_long_preset(**_) -> Preset:
    """`long`'s CoTs (16 x 4-8k tokens) on a random-weight Qwen2.5-1.5B configuration."""
    tok = inputs.train_tokenizer(vocab_size=PRESET_SETTINGS["cpu"]["vocab_size"])
    cfg = qwen25_1p5b_config()
    cfg.vocab_size = len(tok)
    return _gpu_random("gpu_long", cfg, tok, *inputs.gsm8k_trajectories(tok, 16, long_cot=(4096, 8192)))


PRESETS = {"cpu": make_cpu_preset, "gpu": make_gpu_preset, "real": make_real_preset,
           "long": make_long_preset, "gpu_real": make_gpu_real_preset, "gpu_long": make_gpu_long_preset}


def get_preset(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name](**overrides)
