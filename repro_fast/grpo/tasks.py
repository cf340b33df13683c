"""Tasks: where prompts, ground-truth answers, the model and the tokenizer come from.

- ``toy``: synthetic multi-step arithmetic ("Compute 4 + 3 - 2 + 5."), a word-level byte-level
  tokenizer built in code, and a ~1M-parameter Llama warm-started by SFT (`repro_fast.grpo.sft`).
  A response is chain-of-thought steps separated by blank lines, then ``</think>`` and the boxed
  answer::

      4 + 3 = 7

      Wait, let me check 4 + 3 again.      <- only in some SFT traces: the overthinking

      4 + 3 = 7

      7 - 2 = 5
      </think>\\boxed{5}<eos>

  Choice (issue 5): the toy task keeps RePro's default ``think_end="</think>"``. ``F`` is then the
  prefix that ends with ``</think>``, ``J(F)`` is the log-prob of ``\\boxed{5}`` right where the
  policy writes it, and nothing after the marker is scored.
- ``gsm8k``: the 100 real GSM8K problems of `repro_fast.offline.gsm8k_problems` (first 80 for
  training, last 20 held out) with SmolLM2-135M-Instruct (`repro_fast.offline.load_smollm2`).
  SmolLM2 writes no ``</think>``, so this task sets ``think_end=None``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

TOY_MAX_VALUE = 19  # every number in a toy problem, step and answer is in [0, TOY_MAX_VALUE]
TOY_VOCAB_NUMBERS = 50  # the tokenizer knows the numbers 0..49
TOY_WORDS = ("Compute", "Wait", "let", "me", "check", "again", "So", "the", "answer", "is")
TOY_PUNCT = ("+", "-", "=", ".", ",", "?", ":")
TOY_SPECIALS = ("<pad>", "<eos>", "<unk>")


@dataclass(frozen=True)
class Problem:
    """One prompt: its text (before the chat template, if any) and the ground-truth answer."""

    question: str
    answer: str


# ------------------------------------------------------------------------------------------
# Toy arithmetic
# ------------------------------------------------------------------------------------------


def toy_problem(rng: random.Random, min_ops: int = 2, max_ops: int = 3) -> tuple[Problem, list[tuple[int, str, int, int]]]:
    """A random problem and its steps ``(a, op, b, result)``; values stay in [0, TOY_MAX_VALUE]."""
    value = rng.randint(1, 9)
    start = value
    steps = []
    for _ in range(rng.randint(min_ops, max_ops)):
        b = rng.randint(1, 9)
        op = "-" if (rng.random() < 0.5 and value - b >= 0) or value + b > TOY_MAX_VALUE else "+"
        result = value + b if op == "+" else value - b
        steps.append((value, op, b, result))
        value = result
    expr = " ".join([str(start)] + [f"{op} {b}" for _, op, b, _ in steps])
    return Problem(f"Compute {expr}.\n", str(value)), steps


def toy_response(steps, rng: random.Random | None = None, check_prob: float = 0.0, max_checks: int = 2) -> str:
    """The chain of thought of a toy problem. With probability ``check_prob`` it carries 1 to
    ``max_checks`` redundant re-checking segments ("Wait, let me check a + b again." followed by
    the same step once more): the overthinking RePro should remove."""
    blocks = [[f"{a} {op} {b} = {r}"] for a, op, b, r in steps]
    if rng is not None and check_prob > 0 and rng.random() < check_prob:
        for _ in range(rng.randint(1, max_checks)):
            i = rng.randrange(len(steps))
            a, op, b, r = steps[i]
            blocks[i] += [f"Wait, let me check {a} {op} {b} again.", f"{a} {op} {b} = {r}"]
    lines = [line for block in blocks for line in block]
    return "\n\n".join(lines) + f"\n</think>\\boxed{{{steps[-1][3]}}}"


def build_toy_tokenizer():
    """A word-level tokenizer in GPT-2's byte-level alphabet, built in code (no files).

    Pieces: numbers 0..49, a few words and punctuation, each with and without a leading space;
    ``"\\n"``, ``"\\n\\n"``, ``" "``, ``"</think>"``, ``"\\boxed{"``, ``"}"``. Decoding concatenates
    the pieces, so ``decode(encode(text)) == text`` for any text made of them ("\\n\\n" intact),
    and RePro's planner recognizes it as byte-level (fast path).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from repro_fast.segments import _byte_level_alphabet

    to_piece = {b: ch for ch, b in _byte_level_alphabet().items()}

    def piece(text: str) -> str:
        return "".join(to_piece[b] for b in text.encode("utf-8"))

    words = [str(i) for i in range(TOY_VOCAB_NUMBERS)] + list(TOY_WORDS) + list(TOY_PUNCT)
    surface = list(TOY_SPECIALS) + ["\n\n", "\n", " ", "</think>", "\\boxed{", "}"]
    surface += words + [" " + w for w in words]
    vocab = {}
    for s in surface:
        vocab.setdefault(s if s in TOY_SPECIALS else piece(s), len(vocab))
    pattern = r"\n\n|\n|</think>|\\boxed\{|\}| ?[0-9]+| ?[A-Za-z]+| ?[^\sA-Za-z0-9]| "
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    return fast


def build_toy_model(vocab_size: int, seed: int = 0, hidden: int = 96, layers: int = 4):
    """A tiny Llama (about 0.5M parameters) with random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


class Task:
    """What the trainer needs from a task. Subclasses fill in the class attributes."""

    name = ""
    think_end: str | None = "</think>"
    default_lr = 1e-4
    default_max_new_tokens = 128
    cpu_threads: int | None = None  # torch intra-op threads on CPU (None: torch's default)

    def train_problems(self, rng: random.Random, n: int) -> list[Problem]:
        raise NotImplementedError

    def eval_problems(self, n: int) -> list[Problem]:
        raise NotImplementedError

    def load(self, init: str | None):
        """``(model, tokenizer)``: from the checkpoint directory ``init``, or the task default."""
        raise NotImplementedError

    def encode_prompt(self, tokenizer, problem: Problem) -> list[int]:
        return tokenizer.encode(problem.question, add_special_tokens=False)

    def sft_examples(self, rng: random.Random, n: int) -> list[tuple[Problem, str]]:
        """``(problem, response text)`` pairs for the SFT warm start."""
        raise NotImplementedError

    def rollout_metrics(self, texts: list[str]) -> dict[str, float]:
        """Task-specific figures of a rollout batch, logged with each step."""
        return {}


def load_checkpoint(path: str):
    """``(model, tokenizer)`` saved by `save_checkpoint` (or any Hugging Face model folder)."""
    import os

    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not os.path.isdir(path):
        raise FileNotFoundError(f"init: checkpoint folder {path!r} does not exist; run `repro-fast sft` first or pass --init DIR")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def save_checkpoint(model, tokenizer, path: str) -> None:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


class ToyTask(Task):
    name = "toy"
    think_end = "</think>"
    default_lr = 5e-5
    default_max_new_tokens = 96
    # A 0.5M-parameter model gains nothing from a second thread, and on a shared CPU two
    # spinning OpenMP threads can make each step 10x slower.
    cpu_threads = 1
    eval_seed = 10_000

    def __init__(self, min_ops: int = 2, max_ops: int = 3, check_prob: float = 0.5):
        self.min_ops, self.max_ops, self.check_prob = min_ops, max_ops, check_prob

    def train_problems(self, rng, n):
        return [toy_problem(rng, self.min_ops, self.max_ops)[0] for _ in range(n)]

    def eval_problems(self, n):
        rng = random.Random(self.eval_seed)
        return [toy_problem(rng, self.min_ops, self.max_ops)[0] for _ in range(n)]

    def load(self, init):
        if init is None:
            raise ValueError("the toy task needs a warm-started model: pass init (a folder from `repro-fast sft`)")
        return load_checkpoint(init)

    def fresh(self, seed: int = 0):
        """A random-weight model and the toy tokenizer (the SFT starting point)."""
        tokenizer = build_toy_tokenizer()
        return build_toy_model(len(tokenizer), seed), tokenizer

    def rollout_metrics(self, texts):
        # the overthinking RePro should remove: redundant "Wait, let me check ..." segments
        return {"rechecks_per_rollout": sum(t.count("Wait, let me check") for t in texts) / max(1, len(texts))}

    def sft_examples(self, rng, n):
        out = []
        for _ in range(n):
            problem, steps = toy_problem(rng, self.min_ops, self.max_ops)
            out.append((problem, toy_response(steps, rng, self.check_prob)))
        return out


GSM8K_SUFFIX = "\nReason step by step, one step per paragraph, and put your final answer within \\boxed{}."


class GSM8KTask(Task):
    name = "gsm8k"
    think_end = None
    default_lr = 1e-6
    default_max_new_tokens = 256
    n_train = 80

    def _problems(self):
        from repro_fast.offline import gsm8k_problems

        return gsm8k_problems()

    def train_problems(self, rng, n):
        pool = self._problems()[: self.n_train]
        return [Problem(p.question + GSM8K_SUFFIX, p.answer) for p in (rng.choice(pool) for _ in range(n))]

    def eval_problems(self, n):
        pool = self._problems()[self.n_train :]
        return [Problem(p.question + GSM8K_SUFFIX, p.answer) for p in pool[:n]]

    def load(self, init):
        if init is not None:
            model, tokenizer = load_checkpoint(init)
        else:
            from repro_fast.offline import load_smollm2

            model, tokenizer = load_smollm2()
            # The GGUF weights are de-quantized to fp32 on load, so this is a plain model; drop
            # the GGUF marker that would refuse save_pretrained (checkpoints).
            if getattr(model, "hf_quantizer", None) is not None:
                model.hf_quantizer = None
            if getattr(model.config, "quantization_config", None) is not None:
                del model.config.quantization_config
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    def fresh(self, seed: int = 0):
        return self.load(None)

    def encode_prompt(self, tokenizer, problem):
        return list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": problem.question}],
                add_generation_prompt=True, tokenize=True, return_dict=False,
            )
        )

    def sft_examples(self, rng, n):
        pool = self._problems()[: self.n_train]
        out = []
        for _ in range(n):
            p = rng.choice(pool)
            out.append((Problem(p.question + GSM8K_SUFFIX, p.answer), p.chain_of_thought(think_end=None)))
        return out


TASKS = {"toy": ToyTask, "gsm8k": GSM8KTask}


def get_task(name: str) -> Task:
    if name not in TASKS:
        import difflib

        close = difflib.get_close_matches(str(name), TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"task: unknown task {name!r}{hint}; choose one of {sorted(TASKS)}")
    return TASKS[name]()
