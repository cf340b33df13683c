"""Benchmark presets for `RePROScorer.score()` and the baselines it is measured against.

Everything here is built offline and seeded: a random Qwen2-style model, a byte-level BPE
tokenizer trained in seconds on synthetic chain-of-thought text, and trajectories made of that
text. Nothing is downloaded.

Presets (see `get_preset`):

* ``cpu``: Qwen2-style model, hidden 256, 4 layers, 4 heads / 2 KV heads, intermediate 688,
  fp32; trained BPE tokenizer of 4096 tokens (model vocab = tokenizer vocab); 8 trajectories,
  prompt 128 tokens, response 1024 tokens, k = 20, answers like ``"42"``.
* ``gpu``: the Qwen2.5-1.5B configuration written out (hidden 1536, 28 layers, 12 heads,
  2 KV heads, intermediate 8960, vocab 151936, rope_theta 1e6, tied embeddings), random
  weights, bf16, on CUDA; 16 trajectories, prompt 256, response 8192, k = 20. Tokenizer: the
  same 4096-token BPE tokenizer. Its ids are all < 151936, the text rule only needs
  ``decode``, and a model vocabulary larger than the tokenizer's is what real Qwen2.5
  checkpoints have too (151936 rows for 151665 tokens), so the scorer must handle it anyway.
  The LM head still has the full 151936 rows, which is what the head cost depends on.

Baselines (same inputs, same token budget):

* `plain_logprob_forward`: one forward over ``[q, y]`` through the decoder in micro-batches,
  then the head via ``repro_fast.ops.fused_logprob_entropy`` (the head the fast scorer uses),
  returning the response log-probs: the forward any RL trainer already pays for.
* `paper_code_cost`: what the authors' code does per rollout (SPEC §8): ``k + 2`` full forwards,
  one per scored prefix ``[q, y[:P_j], a]``, each row right-padded to the full
  ``|q| + n + |a|`` (fixed-shape batches), logits of the whole sequence materialized in fp32 and
  log-softmaxed over the whole response region. For context only.

And `token_count_bound`: tokens the naive path processes / tokens the fast path processes,
counted from the scored points of a real result.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

GENERATOR_VERSION = "cot-v1"  # bump when the synthetic text generator changes (cache key)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
DEFAULT_ANSWER_TEMPLATE = "\\boxed{{{answer}}}"
DEFAULT_BOUNDARY_SUFFIXES = ("\n\n", ".\n", "?\n")


# --------------------------------------------------------------------------------------------
# Optional imports from the package under construction
# --------------------------------------------------------------------------------------------

def import_repro():
    """The `repro_fast` package, or raise ImportError with the reason."""
    import repro_fast  # noqa: F401  (ImportError propagates with its own message)

    return repro_fast


def scorer_available() -> tuple[bool, str]:
    """(True, "") when `repro_fast.RePROScorer` can be imported, else (False, reason)."""
    try:
        repro = import_repro()
        getattr(repro, "RePROScorer")
        getattr(repro, "RePROConfig")
    except Exception as exc:  # ImportError, AttributeError, anything raised at import
        return False, f"repro_fast.RePROScorer not importable: {type(exc).__name__}: {exc}"
    return True, ""


def _local_logprob_entropy(hidden, weight, targets, temperature=1.0, chunk_rows=4096):
    """Chunked torch head: fp32 log-prob of `targets` and entropy, [M] each.

    Fallback only, used while `repro_fast.ops` cannot be imported; same signature as
    `repro_fast.ops.logprob_entropy_torch`.
    """
    m = hidden.shape[0]
    logprobs = torch.empty(m, dtype=torch.float32, device=hidden.device)
    entropy = torch.empty(m, dtype=torch.float32, device=hidden.device)
    for s in range(0, m, chunk_rows):
        e = min(m, s + chunk_rows)
        logits = (hidden[s:e] @ weight.t()).float()
        if temperature != 1.0:
            logits = logits / temperature
        logp = torch.log_softmax(logits, dim=-1)
        logprobs[s:e] = logp.gather(1, targets[s:e, None].long()).squeeze(1)
        entropy[s:e] = -(logp.exp() * logp).sum(-1)
        del logits, logp
    return logprobs, entropy


def get_head() -> tuple[Callable, str]:
    """(head function, its name): `repro_fast.ops.fused_logprob_entropy` when importable."""
    try:
        from repro_fast.ops import fused_logprob_entropy

        return fused_logprob_entropy, "repro_fast.ops.fused_logprob_entropy"
    except Exception:
        return _local_logprob_entropy, "local chunked torch head (repro_fast.ops not importable)"


# --------------------------------------------------------------------------------------------
# Synthetic chain-of-thought text
# --------------------------------------------------------------------------------------------

_NAMES = ["Tom", "Anna", "Ravi", "Mei", "Lucas", "Sara", "Omar", "Ines", "Kofi", "Yuki",
          "Pedro", "Lena", "Ahmed", "Chloe", "Ivan", "Nadia", "Grace", "Hugo", "Priya", "Mateo",
          "Zara", "Felix", "Amara", "Jonas", "Leila", "Diego", "Hana", "Oscar", "Elif", "Noah",
          "Maya", "Tariq", "Sofia", "Arjun", "Clara", "Emeka", "Ingrid", "Kenji", "Lucia", "Rosa"]
_ITEMS = [("apple", "apples"), ("book", "books"), ("marble", "marbles"), ("cookie", "cookies"),
          ("pencil", "pencils"), ("sticker", "stickers"), ("card", "cards"), ("coin", "coins"),
          ("shell", "shells"), ("flower", "flowers"), ("ticket", "tickets"), ("box", "boxes"),
          ("orange", "oranges"), ("stamp", "stamps"), ("balloon", "balloons"), ("puzzle", "puzzles"),
          ("candle", "candles"), ("bottle", "bottles"), ("feather", "feathers"), ("rock", "rocks"),
          ("crayon", "crayons"), ("button", "buttons"), ("cupcake", "cupcakes"), ("notebook", "notebooks"),
          ("lemon", "lemons"), ("toy car", "toy cars"), ("sandwich", "sandwiches"), ("plant", "plants"),
          ("magnet", "magnets"), ("ribbon", "ribbons"), ("photo", "photos"), ("badge", "badges")]
_OPENERS = ["Let me start by figuring out", "First, I need to work out", "Okay, so the question asks",
            "Let's see. I want to find", "Alright, I should compute", "To solve this, I will find"]
_CHECKS = ["Wait, let me check {expr} again.", "Wait, let me check that step again.",
           "Hmm, wait. Let me recompute {expr} again.", "Wait, let me check the numbers again."]
_CONFIRMS = ["Yes, that is right.", "That matches.", "Okay, that still holds.", "Good, no mistake there."]
_FILLERS = [
    "Note: show every intermediate result, and double-check each arithmetic step.",
    "The store is open every day of the week, and prices do not change during the day.",
    "Assume nobody loses or finds any items unless the problem says so.",
    "All quantities are whole numbers, and nothing is shared unless stated.",
    "Remember that giving items away reduces the count, and buying increases it.",
]


@dataclass
class Problem:
    question: str
    steps: list[str]  # reasoning paragraphs, joined by "\n\n"
    answer: int


def _make_problem(rng: random.Random) -> Problem:
    name = rng.choice(_NAMES)
    friend = rng.choice([n for n in _NAMES if n != name])
    sing, plur = rng.choice(_ITEMS)
    value = rng.randint(5, 400)
    question = [f"{name} has {value} {plur}."]
    steps = [f"{rng.choice(_OPENERS)} how many {plur} {name} ends up with.",
             f"{name} starts with {value} {plur}."]
    for _ in range(rng.randint(3, 6)):
        op = rng.choice(["buy", "give", "double", "share", "price"])
        if op == "buy":
            x = rng.randint(2, 250)
            question.append(f"Then {name} buys {x} more {plur}.")
            new = value + x
            body = f"After buying {x} more, {name} has {value} + {x} = {new} {plur}"
            expr = f"{value} + {x}"
        elif op == "give" and value > 2:
            x = rng.randint(1, value - 1)
            question.append(f"{name} gives {x} {plur} to {friend}.")
            new = value - x
            body = f"Giving {x} to {friend} leaves {value} - {x} = {new} {plur}"
            expr = f"{value} - {x}"
        elif op == "double" and value < 5000:
            question.append(f"Next, the number of {plur} doubles.")
            new = value * 2
            body = f"Doubling gives {value} * 2 = {new} {plur}"
            expr = f"{value} * 2"
        elif op == "share" and any(value % d == 0 for d in (2, 3, 4, 5, 6)):
            d = rng.choice([d for d in (2, 3, 4, 5, 6) if value % d == 0])
            question.append(f"{name} splits the {plur} into {d} equal piles and keeps one pile.")
            new = value // d
            body = f"Splitting into {d} equal piles gives {value} / {d} = {new} {plur} per pile"
            expr = f"{value} / {d}"
        else:
            x = rng.randint(2, 19)
            question.append(f"Each {sing} is worth {x} coins, and {name} counts the coins.")
            new = value * x
            body = f"At {x} coins each, that is {value} * {x} = {new} coins"
            expr = f"{value} * {x}"
        # Sentences inside one step end with ".\n" (a boundary) or ". " (no boundary).
        sep = rng.choice([".\n", ". ", ".\n"])
        para = body + sep + f"So now the count is {new}."
        if rng.random() < 0.45:
            para += "\n\n" + rng.choice(_CHECKS).format(expr=expr) + " " + \
                f"{expr} = {new}.\n" + rng.choice(_CONFIRMS)
        steps.append(para)
        value = new
    question.append(f"How many does {name} have at the end?")
    steps.append(f"So the final answer is \\boxed{{{value}}}.")
    return Problem(" ".join(question), steps, value)


def _cot_text(problem: Problem) -> str:
    return "\n\n".join(problem.steps)


def synthetic_corpus(num_problems: int = 6000, seed: int = 1234) -> list[str]:
    """Seeded synthetic text for tokenizer training: questions, chats, chains of thought."""
    rng = random.Random(seed)
    texts = []
    for _ in range(num_problems):
        p = _make_problem(rng)
        texts.append(_chat_prompt_text(p.question, rng.choice(_FILLERS)))
        texts.append(_cot_text(p))
    texts.extend(_FILLERS)
    return texts


def _chat_prompt_text(question: str, filler: str) -> str:
    return (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        f"{question} {filler} Please reason step by step, and put your final answer within "
        "\\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    )


# --------------------------------------------------------------------------------------------
# Tokenizer (trained in seconds, cached on disk)
# --------------------------------------------------------------------------------------------

def cache_dir() -> str:
    path = os.environ.get("REPRO_FAST_BENCH_CACHE") or os.path.join(
        tempfile.gettempdir(), "repro_fast_bench_cache"
    )
    os.makedirs(path, exist_ok=True)
    return path


def train_tokenizer(vocab_size: int = 4096, corpus_problems: int = 6000, seed: int = 1234):
    """A byte-level BPE `PreTrainedTokenizerFast` of `vocab_size` tokens, cached by settings."""
    import tokenizers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    key = repr((GENERATOR_VERSION, vocab_size, corpus_problems, seed, SPECIAL_TOKENS,
                tokenizers.__version__))
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir(), f"bpe-{vocab_size}-{digest}.json")
    if not os.path.exists(path):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(synthetic_corpus(corpus_problems, seed), trainer=trainer)
        tmp = f"{path}.{os.getpid()}.tmp"
        tok.save(tmp)
        os.replace(tmp, path)  # atomic: parallel workers may race here
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=path,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    return tokenizer


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------

def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def make_trajectories(tokenizer, num: int, prompt_len: int, response_len: int, seed: int):
    """`num` (prompt ids, response ids, answer str), each prompt exactly `prompt_len` tokens
    and each response exactly `response_len` tokens of synthetic chain of thought."""
    rng = random.Random(seed)
    prompts, responses, answers = [], [], []
    for _ in range(num):
        problem = _make_problem(rng)
        # Prompt: chat header + question + filler text (trimmed) + assistant header.
        head = _encode(tokenizer, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                                  f"<|im_start|>user\n{problem.question}")
        tail = _encode(tokenizer, " Please reason step by step, and put your final answer "
                                  "within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n")
        room = prompt_len - len(head) - len(tail)
        if room < 0:
            raise ValueError(f"prompt_len={prompt_len} is too short for the chat template")
        filler: list[int] = []
        while len(filler) < room:
            filler += _encode(tokenizer, " " + rng.choice(_FILLERS))
        prompts.append(head + filler[:room] + tail)
        # Response: this problem's chain of thought, then more verification text until long
        # enough; truncated to exactly response_len tokens. No "</think>" anywhere.
        text = _cot_text(problem)
        while True:
            ids = _encode(tokenizer, text)
            if len(ids) >= response_len:
                break
            extra = _make_problem(rng)
            text += ("\n\nHmm, let me verify this with a similar case.\n\n" + _cot_text(extra)
                     + f"\n\nBack to the original question: the count is {problem.answer}.")
        responses.append(ids[:response_len])
        answers.append(str(problem.answer))
    return prompts, responses, answers


def count_boundary_candidates(tokenizer, response: Sequence[int],
                              suffixes: Sequence[str] = DEFAULT_BOUNDARY_SUFFIXES) -> int:
    """Segment starts of SPEC §3 (no think end), counted the slow, obvious way."""
    texts = [tokenizer.decode([t], skip_special_tokens=False, clean_up_tokenization_spaces=False)
             for t in response]
    count, prefix = 0, ""
    for i, t in enumerate(texts):
        if i >= 1 and prefix.endswith(tuple(suffixes)) and t.strip() != "":
            count += 1
        prefix += t
    return count


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

def cpu_model_config(vocab_size: int):
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False, rms_norm_eps=1e-6, use_sliding_window=False,
        pad_token_id=0, bos_token_id=None, eos_token_id=None,
    )


def qwen25_1p5b_config():
    """Qwen2.5-1.5B's architecture, written out (random weights are used with it)."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
        num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True, rms_norm_eps=1e-6, hidden_act="silu",
        use_sliding_window=False, sliding_window=None, max_window_layers=28,
        bos_token_id=151643, eos_token_id=151645, pad_token_id=None,
    )


def build_model(config, device: str, dtype: torch.dtype, seed: int, logit_scale: float = 1.0):
    """A random causal LM of `config`'s architecture built directly on `device` in `dtype`, in
    eval mode.

    ``logit_scale``: multiply the final norm's weight. A random model at the usual 0.02
    initialization gives near-uniform softmaxes, so every entropy is about ``log V`` and, in
    bf16, many tie; SPEC §4's tie rule then takes the earliest candidates and all points crowd
    at the start of the CoT (the first H200 run: a token-count bound of 5.07x instead of ~10x).
    Larger logits spread the entropies over positions, so the points spread over the CoT as on a
    trained model (the tables report the mean ``P_j / n``)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed_all(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation="sdpa")
    if logit_scale != 1.0:
        with torch.no_grad():
            model.get_decoder().norm.weight.mul_(logit_scale)
    model.eval()
    model.requires_grad_(False)
    return model


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------

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
        plain_logprob_forward(self.model, [q], [y], token_budget=self.token_budget)
        self.synchronize()

    def make_config(self, num_segments: int | None = None):
        repro = import_repro()
        return repro.RePROConfig(
            num_segments=self.num_segments if num_segments is None else num_segments,
            token_budget=self.token_budget, **self.config_overrides,
        )

    def make_scorer(self, backend: str, num_segments: int | None = None, kernels: str | None = None):
        repro = import_repro()
        return repro.RePROScorer(self.model, self.tokenizer, self.make_config(num_segments),
                                 backend=backend, kernels=kernels)

    def score(self, scorer):
        with torch.inference_mode():
            return scorer.score(self.prompts, self.responses, self.answers, self.group_ids)

    def answer_ids(self) -> list[list[int]]:
        template = self.config_overrides.get("answer_template", DEFAULT_ANSWER_TEMPLATE)
        return [_encode(self.tokenizer, template.format(answer=g)) for g in self.answers]

    def plain_forward(self):
        return plain_logprob_forward(self.model, self.prompts, self.responses,
                                     token_budget=self.token_budget)

    def hf_forward(self):
        return hf_logprob_forward(self.model, self.prompts, self.responses, token_budget=self.token_budget)

    def mean_point_position(self, result) -> float:
        """Mean ``P_j / n`` over the selected starts (``0 < P_j < F``): where the points sit."""
        fr = [p / len(y) for pts, y, f in zip(result.points, self.responses, result.think_end)
              for p in pts[1:] if p < f]
        return sum(fr) / len(fr) if fr else float("nan")

    def paper_cost(self, points=None):
        return paper_code_cost(self.model, self.prompts, self.responses, self.answer_ids(),
                               num_segments=self.num_segments, token_budget=self.token_budget,
                               points=points)

    def summary(self) -> str:
        n = len(self.prompts)
        lq, ly = [len(q) for q in self.prompts], [len(y) for y in self.responses]
        return (f"{self.name}: {self.description}; {n} trajectories, prompt "
                f"{min(lq)}-{max(lq)}, response {min(ly)}-{max(ly)} tokens, "
                f"k={self.num_segments}, token budget {self.token_budget}")


# Settings of each preset; the model factory is applied on top of them.
PRESET_SETTINGS = {
    "cpu": dict(num_trajectories=8, prompt_len=128, response_len=1024, vocab_size=4096,
                num_segments=20, token_budget=16384, seed=0, group_size=4,
                device="cpu", dtype=torch.float32,
                description="Qwen2-style random model (hidden 256, 4 layers, 4/2 heads, "
                            "intermediate 688, vocab 4096), fp32, CPU"),
    "gpu": dict(num_trajectories=16, prompt_len=256, response_len=8192, vocab_size=4096,
                num_segments=20, token_budget=16384, seed=0, group_size=8,
                device="cuda", dtype=torch.bfloat16,
                description="Qwen2.5-1.5B architecture (hidden 1536, 28 layers, 12/2 heads, "
                            "intermediate 8960, vocab 151936), random weights, bf16, CUDA; "
                            "4096-token BPE tokenizer"),
}


def make_inputs(name: str, **overrides) -> dict:
    """A preset's tokenizer and trajectories, without building its model (cheap)."""
    s = dict(PRESET_SETTINGS[name], **overrides)
    tokenizer = train_tokenizer(vocab_size=s["vocab_size"])
    prompts, responses, answers = make_trajectories(
        tokenizer, s["num_trajectories"], s["prompt_len"], s["response_len"], seed=s["seed"])
    answer_ids = [_encode(tokenizer, DEFAULT_ANSWER_TEMPLATE.format(answer=g)) for g in answers]
    summary = (f"{s['description']}; {s['num_trajectories']} trajectories, prompt "
               f"{s['prompt_len']}, response {s['response_len']}, k={s['num_segments']}, "
               f"token budget {s['token_budget']}")
    return dict(s, tokenizer=tokenizer, prompts=prompts, responses=responses, answers=answers,
                answer_ids=answer_ids, summary=summary,
                group_ids=[i // s["group_size"] for i in range(s["num_trajectories"])])


# See `build_model`: logits of a random model at the usual initialization are near zero.
GPU_LOGIT_SCALE = 4.0  # logit std about 3 at hidden 1536 (0.02 * sqrt(1536) * 4)


def _make_preset(name: str, model_config, **overrides) -> Preset:
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
    return _make_preset("cpu", cpu_model_config, **overrides)


def make_gpu_preset(**overrides) -> Preset:
    """The GPU preset (`PRESET_SETTINGS["gpu"]`): Qwen2.5-1.5B architecture on CUDA, bf16."""
    if not torch.cuda.is_available():
        raise RuntimeError("the gpu preset needs a CUDA device")
    return _make_preset("gpu", qwen25_1p5b_config(), **overrides)


def gsm8k_trajectories(tokenizer, num: int, offset: int = 0, long_cot: tuple[int, int] | None = None, seed: int = 0):
    """Real GSM8K problems as trajectories: chat-templated prompt, the reference solution as the
    CoT (one step per paragraph, then ``</think>`` and the boxed answer), the answer string.

    ``long_cot=(lo, hi)``: a reasoning-model-like CoT of ``lo``-``hi`` tokens instead: the
    problem's solution, then re-check paragraphs that repeat steps of it and of other problems'
    solutions ("Wait, let me re-check ..."), each step its own paragraph, until the length is
    reached; the last paragraphs confirm the answer."""
    from repro_fast.offline import gsm8k_problems

    problems = gsm8k_problems()
    rng = random.Random(seed)
    prompts, responses, answers = [], [], []
    for i in range(num):
        p = problems[(offset + i) % len(problems)]
        chat = [{"role": "user", "content": p.question + " Please reason step by step, and put your "
                 "final answer within \\boxed{}."}]
        if getattr(tokenizer, "chat_template", None):
            prompts.append(list(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)))
        else:
            prompts.append(_encode(tokenizer, _chat_prompt_text(chat[0]["content"], "")))
        text = p.chain_of_thought()
        if long_cot is not None:
            target = rng.randint(*long_cot)
            steps = [s for s in p.solution.splitlines() if s.strip()]
            paras = list(steps)
            while len(_encode(tokenizer, "\n\n".join(paras))) < target:
                other = problems[rng.randrange(len(problems))]
                pool = steps if rng.random() < 0.6 else [s for s in other.solution.splitlines() if s.strip()]
                paras.append(f"Wait, let me re-check this step: {rng.choice(pool).strip()}")
                paras.append(rng.choice(["Yes, that is right.", "That matches what I had.", "Okay, that still holds."]))
            ids = _encode(tokenizer, "\n\n".join(paras))[:target]
            text = tokenizer.decode(ids) + f"\n</think>\n\nThe answer is \\boxed{{{p.answer}}}."
        responses.append(_encode(tokenizer, text))
        answers.append(p.answer)
    return prompts, responses, answers


def make_real_preset(num_segments: int = 20, num_trajectories: int = 16, **_) -> Preset:
    """SmolLM2-135M-Instruct (the real model, fp32, CPU) scoring 16 real GSM8K reference
    solutions as chains of thought (chat-templated prompts), k = 20."""
    from repro_fast.offline import load_smollm2

    model, tok = load_smollm2()
    prompts, responses, answers = gsm8k_trajectories(tok, num_trajectories)
    return Preset(name="real", description="SmolLM2-135M-Instruct (offline GGUF, de-quantized), fp32, CPU; "
                  "real GSM8K reference solutions as CoTs", model=model, tokenizer=tok, prompts=prompts,
                  responses=responses, answers=answers, group_ids=[i // 4 for i in range(num_trajectories)],
                  num_segments=num_segments, token_budget=16384, device="cpu", dtype=torch.float32)


def make_long_preset(num_segments: int = 20, num_trajectories: int = 8, response_len=(2048, 4096), **_) -> Preset:
    """The CPU preset's model and tokenizer on reasoning-model-like CoTs of 2-4k tokens with
    30-100 paragraph boundaries (GSM8K solutions with re-check paragraphs)."""
    inp = make_inputs("cpu")
    tok = inp["tokenizer"]
    model = build_model(cpu_model_config(len(tok)), "cpu", torch.float32, 0)
    prompts, responses, answers = gsm8k_trajectories(tok, num_trajectories, offset=20,
                                                     long_cot=tuple(response_len) if not isinstance(response_len, int) else (response_len, response_len))
    return Preset(name="long", description="the cpu preset's random Qwen2-style model, fp32, CPU; GSM8K "
                  "solutions with re-check paragraphs as long CoTs", model=model, tokenizer=tok,
                  prompts=prompts, responses=responses, answers=answers,
                  group_ids=[i // 4 for i in range(num_trajectories)], num_segments=num_segments,
                  token_budget=16384, device="cpu", dtype=torch.float32)


def _gpu_random(name: str, config, trajectories) -> Preset:
    if not torch.cuda.is_available():
        raise RuntimeError(f"the {name} preset needs a CUDA device")
    tok = trajectories[0]
    model = build_model(config, "cuda", torch.bfloat16, 0, logit_scale=GPU_LOGIT_SCALE)
    prompts, responses, answers = trajectories[1:]
    return Preset(name=name, description=f"random-weight {type(config).__name__} on CUDA, bf16", model=model,
                  tokenizer=tok, prompts=prompts, responses=responses, answers=answers,
                  group_ids=[i // 8 for i in range(len(prompts))], num_segments=20, token_budget=16384,
                  device="cuda", dtype=torch.bfloat16)


def make_gpu_real_preset(**_) -> Preset:
    """`real`'s GSM8K trajectories (64 of them) on a random-weight model of SmolLM2-135M's configuration."""
    from repro_fast.offline import load_smollm2

    model, tok = load_smollm2()
    config = model.config
    if hasattr(config, "quantization_config"):  # the GGUF source, not a property of the architecture
        del config.quantization_config
    return _gpu_random("gpu_real", config, (tok, *gsm8k_trajectories(tok, 64)))


def make_gpu_long_preset(**_) -> Preset:
    """`long`'s CoTs (16 x 4-8k tokens) on a random-weight Qwen2.5-1.5B configuration."""
    tok = make_inputs("cpu")["tokenizer"]
    cfg = qwen25_1p5b_config()
    cfg.vocab_size = len(tok)
    return _gpu_random("gpu_long", cfg, (tok, *gsm8k_trajectories(tok, 16, long_cot=(4096, 8192))))


PRESETS = {"cpu": make_cpu_preset, "gpu": make_gpu_preset, "real": make_real_preset, "long": make_long_preset,
           "gpu_real": make_gpu_real_preset, "gpu_long": make_gpu_long_preset}


def get_preset(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name](**overrides)


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------

def _micro_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Consecutive row groups whose padded size (rows x longest row) stays within the budget
    (a row longer than the budget goes alone)."""
    groups: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i, n in enumerate(lengths):
        new_max = max(cur_max, n)
        if cur and new_max * (len(cur) + 1) > token_budget:
            groups.append(cur)
            cur, new_max = [], n
        cur.append(i)
        cur_max = new_max
    if cur:
        groups.append(cur)
    return groups


def _pad_batch(rows: list[list[int]], device, pad_to: int | None = None):
    width = max(len(r) for r in rows) if pad_to is None else pad_to
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    need_mask = any(len(r) != width for r in rows)
    return ids.to(device), (mask.to(device) if need_mask else None)


@torch.inference_mode()
def plain_logprob_forward(model, prompts, responses, *, token_budget: int = 16384,
                          temperature: float = 1.0, head: Callable | None = None):
    """Response log-probs from one forward over each ``[q, y]`` (micro-batched under the token
    budget) plus the fused head: the forward an RL trainer already pays for.

    Returns a list of fp32 tensors, ``len(y)`` values each.
    """
    head = head or get_head()[0]
    device = next(model.parameters()).device
    decoder = model.get_decoder()
    weight = model.get_output_embeddings().weight
    rows = [list(map(int, q)) + list(map(int, y)) for q, y in zip(prompts, responses)]
    out: list[torch.Tensor | None] = [None] * len(rows)
    for group in _micro_batches([len(r) for r in rows], token_budget):
        ids, mask = _pad_batch([rows[i] for i in group], device)
        hidden = decoder(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        pieces, targets = [], []
        for j, i in enumerate(group):
            nq, n = len(prompts[i]), len(responses[i])
            if n == 0:
                continue
            pieces.append(hidden[j, nq - 1: nq - 1 + n])
            targets.append(ids[j, nq: nq + n])
        if not pieces:
            for i in group:
                out[i] = torch.empty(0, dtype=torch.float32, device=device)
            continue
        logprobs, _entropy = head(torch.cat(pieces), weight, torch.cat(targets), temperature)
        offset = 0
        for i in group:
            n = len(responses[i])
            out[i] = logprobs[offset: offset + n]
            offset += n
        del hidden
    return out


@torch.inference_mode()
def hf_logprob_forward(model, prompts, responses, *, token_budget: int = 16384, temperature: float = 1.0):
    """What a trainer (TRL) already runs: prompts left-padded, completions right-padded, one
    Hugging Face forward keeping only the completion logits (``logits_to_keep``), then
    log-softmax and gather. Returns one fp32 tensor per trajectory."""
    device = next(model.parameters()).device
    out: list[torch.Tensor | None] = [None] * len(prompts)
    for group in _micro_batches([len(q) + len(y) for q, y in zip(prompts, responses)], token_budget):
        lq = max(len(prompts[i]) for i in group)
        lc = max(len(responses[i]) for i in group)
        ids = torch.zeros(len(group), lq + lc, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, i in enumerate(group):
            q, y = list(map(int, prompts[i])), list(map(int, responses[i]))
            ids[j, lq - len(q): lq + len(y)] = torch.tensor(q + y, dtype=torch.long)
            mask[j, lq - len(q): lq + len(y)] = 1
        ids, mask = ids.to(device), mask.to(device)
        if lc == 0:
            for i in group:
                out[i] = torch.empty(0, device=device)
            continue
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=lc + 1, use_cache=False).logits[:, :-1]
        logp = torch.log_softmax(logits.float() / temperature, dim=-1).gather(2, ids[:, lq:, None])[..., 0]
        for j, i in enumerate(group):
            out[i] = logp[j, : len(responses[i])]
        del logits, logp
    return out


def default_points(n: int, k: int) -> list[int]:
    """``{0} ∪ k evenly spaced interior points ∪ {n}``: a stand-in plan (no scorer needed)."""
    inner = {round(n * (j + 1) / (k + 1)) for j in range(k)} if n > 1 else set()
    return sorted({0, n} | {p for p in inner if 0 < p < n})


@torch.inference_mode()
def paper_code_cost(model, prompts, responses, answer_ids, *, num_segments: int = 20,
                    token_budget: int = 16384, temperature: float = 1.0, points=None,
                    pad_to_full: bool = False):
    """The authors' code's extra cost (SPEC §8): per rollout, one full forward per scored
    prefix ``[q, y[:P_j], a]`` (``k + 2`` rows: ``P = {0} ∪ k points ∪ {n}``), with no KV reuse;
    each row materializes the fp32 logits of its whole sequence and log-softmaxes the whole
    response region (prefix + answer), then keeps the answer positions. Returns J (mean
    answer log-prob) per row, rollout-major.

    Rows are micro-batched under the token budget, longest first, padded to the longest row
    of their micro-batch (`pad_to_full=True`: to ``|q| + n + |a|``, as fixed-shape batches
    without padding removal would). `points` (per trajectory) may come from a scorer result;
    default: evenly spaced.
    """
    device = next(model.parameters()).device
    rows, widths, meta = [], [], []
    for b, (q, y, a) in enumerate(zip(prompts, responses, answer_ids)):
        q, y, a = list(map(int, q)), list(map(int, y)), list(map(int, a))
        pts = list(points[b]) if points is not None else default_points(len(y), num_segments)
        for p in pts:
            rows.append(q + y[:p] + a)
            widths.append(len(q) + len(y) + len(a) if pad_to_full else len(q) + p + len(a))
            meta.append((len(q), p, len(a)))
    order = sorted(range(len(rows)), key=lambda i: -widths[i])
    results: list[torch.Tensor | None] = [None] * len(rows)
    for group in _micro_batches([widths[i] for i in order], token_budget):
        group = [order[g] for g in group]
        width = max(widths[i] for i in group)
        ids, mask = _pad_batch([rows[i] for i in group], device, pad_to=width)
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
        for j, i in enumerate(group):
            nq, p, na = meta[i]
            end = nq + p + na
            resp_logits = logits[j, nq - 1: end - 1] / temperature
            logp = torch.log_softmax(resp_logits, dim=-1)
            tok_logp = logp.gather(1, ids[j, nq:end, None]).squeeze(1)
            results[i] = tok_logp[p: p + na].mean()
            del resp_logits, logp
        del logits
    return torch.stack(results) if results else torch.empty(0)


# --------------------------------------------------------------------------------------------
# Token counts
# --------------------------------------------------------------------------------------------

def token_count_bound(prompts, responses, answer_ids, points) -> dict:
    """Tokens through the model: naive path vs fast path, from the scored points.

    naive = Σ_b [(|q|+n) + Σ_{j=0..m} (|q| + P_j + |a|)]
    fast  = Σ_b [(|q|+n) + (m+1)(|a| - 1)]
    """
    naive = fast = 0
    for q, y, a, pts in zip(prompts, responses, answer_ids, points):
        nq, n, na = len(q), len(y), len(a)
        pts = [int(p) for p in pts]
        naive += (nq + n) + sum(nq + p + na for p in pts)
        fast += (nq + n) + len(pts) * (na - 1)
    return {"naive_tokens": naive, "fast_tokens": fast,
            "ratio": naive / fast if fast else float("nan")}


def result_points(result) -> list[list[int]]:
    """`points[b]` of a `RePROResult` as plain int lists."""
    return [[int(p) for p in (pts.tolist() if hasattr(pts, "tolist") else pts)]
            for pts in result.points]
