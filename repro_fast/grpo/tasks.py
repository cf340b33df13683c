"""Tasks: where prompts, answers, model and tokenizer come from. ``toy``: synthetic arithmetic, a
tokenizer built in code, a ~0.5M-parameter Llama warm-started by SFT. ``gsm8k``: 100 offline GSM8K
problems (80 train, 20 held out) with SmolLM2-135M-Instruct, which writes no ``</think>``.
``gsm8k_variants``: trains on seeded reasoning-gym variants instead, so it never runs out of problems."""

from __future__ import annotations

import difflib
import os
import random
from dataclasses import dataclass

import torch

from repro_fast.offline import GSM8KProblem, gsm8k_problems, load_smollm2

TOY_MAX_VALUE = 19  # every number in a toy problem, step and answer is in [0, TOY_MAX_VALUE]
TOY_VOCAB_NUMBERS = 50  # the tokenizer knows the numbers 0..49
TOY_WORDS = ("Compute", "Wait", "let", "me", "check", "again", "So", "the", "answer", "is")
TOY_PUNCT = ("+", "-", "=", ".", ",", "?", ":")
TOY_SPECIALS = ("<pad>", "<eos>", "<unk>")
ToyStep = tuple[int, str, int, int]  # a, op, b, a op b


@dataclass(frozen=True)
class Problem:
    """One prompt: its text (before the chat template, if any) and the ground-truth answer."""

    question: str
    answer: str


def toy_problem(rng: random.Random, min_ops: int = 2, max_ops: int = 3) -> tuple[Problem, list[ToyStep]]:
    """A random problem ("Compute 4 + 3 - 2.") and its steps; every value is in [0, TOY_MAX_VALUE]."""
    start = value = rng.randint(1, 9)
    steps = []
    for _ in range(rng.randint(min_ops, max_ops)):
        b = rng.randint(1, 9)
        op = "-" if (rng.random() < 0.5 and value - b >= 0) or value + b > TOY_MAX_VALUE else "+"
        result = value + b if op == "+" else value - b
        steps.append((value, op, b, result))
        value = result
    expr = " ".join([str(start)] + [f"{op} {b}" for _, op, b, _ in steps])
    return Problem(f"Compute {expr}.\n", str(value)), steps


def toy_response(steps: list[ToyStep], rng: random.Random | None = None, check_prob: float = 0.0,
                 max_checks: int = 2) -> str:
    """The chain of thought of a toy problem: one step per paragraph, then ``</think>\\boxed{5}``.
    With probability ``check_prob`` it carries 1 to ``max_checks`` redundant re-checks ("Wait, let
    me check a + b again." and the step once more): the overthinking RePro should remove."""
    blocks = [[f"{a} {op} {b} = {r}"] for a, op, b, r in steps]
    if rng is not None and check_prob > 0 and rng.random() < check_prob:
        for _ in range(rng.randint(1, max_checks)):
            i = rng.randrange(len(steps))
            a, op, b, _ = steps[i]
            blocks[i] += [f"Wait, let me check {a} {op} {b} again.", blocks[i][0]]
    return "\n\n".join(line for block in blocks for line in block) + f"\n</think>\\boxed{{{steps[-1][3]}}}"


def build_toy_tokenizer():
    """A word-level tokenizer in GPT-2's byte-level alphabet, built in code: numbers, a few words and
    punctuation (each with and without a leading space), newlines, ``</think>``, ``\\boxed{``, ``}``.
    ``decode(encode(text)) == text`` for any text made of them, and RePro's planner sees a
    byte-level tokenizer (fast path)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from repro_fast.segments import _byte_level_alphabet

    to_piece = {b: ch for ch, b in _byte_level_alphabet().items()}
    words = [str(i) for i in range(TOY_VOCAB_NUMBERS)] + list(TOY_WORDS) + list(TOY_PUNCT)
    surface = list(TOY_SPECIALS) + ["\n\n", "\n", " ", "</think>", "\\boxed{", "}"]
    surface += words + [" " + w for w in words]
    vocab = {}
    for s in surface:
        vocab.setdefault(s if s in TOY_SPECIALS else "".join(to_piece[b] for b in s.encode()), len(vocab))
    pattern = r"\n\n|\n|</think>|\\boxed\{|\}| ?[0-9]+| ?[A-Za-z]+| ?[^\sA-Za-z0-9]| "
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>")


def build_toy_model(vocab_size: int, seed: int = 0, hidden: int = 96, layers: int = 4):
    """A tiny Llama (about 0.5M parameters) with random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=3 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, tie_word_embeddings=True,
        pad_token_id=0, eos_token_id=1, bos_token_id=1,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


class Task:
    """What the trainer needs from a task. Subclasses set the class attributes and define
    ``train_problems(rng, n)`` and ``eval_problems(n)`` (lists of `Problem`), ``load(init)`` and
    ``fresh(seed)`` (``(model, tokenizer)`` from the checkpoint folder ``init`` or the task's default,
    and the SFT starting point), and ``sft_examples(rng, n)`` (``(problem, response text)`` pairs)."""

    name = ""
    think_end: str | None = "</think>"
    default_lr = 1e-4
    default_max_new_tokens = 128
    cpu_threads: int | None = None  # torch intra-op threads on CPU (None: torch's default)

    def encode_prompt(self, tokenizer, problem: Problem) -> list[int]:
        """The prompt's token ids as the policy sees them (plain text here; chat tasks override)."""
        return tokenizer.encode(problem.question, add_special_tokens=False)

    def rollout_metrics(self, texts: list[str]) -> dict[str, float]:
        """Task-specific figures of a rollout batch, logged with each step."""
        return {}


def load_checkpoint(path: str):
    """``(model, tokenizer)`` saved by `save_checkpoint` (or any Hugging Face model folder)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not os.path.isdir(path):
        raise FileNotFoundError(f"init: checkpoint folder {path!r} does not exist; "
                                "run `repro-fast sft` first or pass --init DIR")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(path)


def save_checkpoint(model, tokenizer, path: str) -> None:
    """Save ``model`` and ``tokenizer`` into the folder ``path`` (read back by `load_checkpoint`)."""
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


class ToyTask(Task):
    """Synthetic arithmetic with a 0.5M-parameter model (CPU minutes); half its SFT traces carry
    redundant "Wait, let me check ..." segments, the overthinking RePro should remove."""

    name = "toy"
    default_lr = 5e-5
    default_max_new_tokens = 96
    # A 0.5M-parameter model gains nothing from a second thread, and on a shared CPU two
    # spinning OpenMP threads can make each step 10x slower.
    cpu_threads = 1
    eval_seed = 10_000
    min_ops, max_ops = 2, 3  # operations per problem
    check_prob = 0.5  # share of SFT traces with redundant re-checks

    def train_problems(self, rng, n):
        return [toy_problem(rng, self.min_ops, self.max_ops)[0] for _ in range(n)]

    def eval_problems(self, n):
        return self.train_problems(random.Random(self.eval_seed), n)

    def load(self, init):
        return load_checkpoint(init)  # the trainer warm-starts the toy model by SFT when init is None

    def fresh(self, seed: int = 0):
        tokenizer = build_toy_tokenizer()
        return build_toy_model(len(tokenizer), seed), tokenizer

    def rollout_metrics(self, texts):
        # the overthinking RePro should remove: redundant "Wait, let me check ..." segments
        rechecks = sum(t.count("Wait, let me check") for t in texts)
        return {"rechecks_per_rollout": rechecks / max(1, len(texts))}

    def sft_examples(self, rng, n):
        out = []
        for _ in range(n):
            problem, steps = toy_problem(rng, self.min_ops, self.max_ops)
            out.append((problem, toy_response(steps, rng, self.check_prob)))
        return out


GSM8K_SUFFIX = "\nReason step by step, one step per paragraph, and put your final answer within \\boxed{}."


def _gsm8k_prompt(problem: GSM8KProblem) -> Problem:
    return Problem(problem.question + GSM8K_SUFFIX, problem.answer)


class GSM8KTask(Task):
    """Real GSM8K test problems (80 to train, the rest held out) with SmolLM2-135M-Instruct."""

    name = "gsm8k"
    think_end = None
    default_lr = 1e-6
    default_max_new_tokens = 256
    n_train = 80

    def _train_pool(self) -> list[GSM8KProblem]:
        return gsm8k_problems()[: self.n_train]

    def train_problems(self, rng, n):
        return [problem for problem, _ in self.sft_examples(rng, n)]

    def eval_problems(self, n):
        return [_gsm8k_prompt(p) for p in gsm8k_problems()[self.n_train :][:n]]

    def load(self, init):
        # trainable: SmolLM2 without the GGUF flags that would refuse save_pretrained (checkpoints)
        model, tokenizer = load_checkpoint(init) if init is not None else load_smollm2(trainable=True)
        model.eval()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer

    def fresh(self, seed: int = 0):
        return self.load(None)

    def encode_prompt(self, tokenizer, problem):
        chat = [{"role": "user", "content": problem.question}]
        return list(tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True,
                                                  return_dict=False))

    def sft_examples(self, rng, n):
        pool = self._train_pool()
        chosen = [rng.choice(pool) for _ in range(n)]
        return [(_gsm8k_prompt(p), p.chain_of_thought(think_end=None)) for p in chosen]


class GSM8KVariantsTask(GSM8KTask):
    """GSM8K with reasoning-gym variants for training; evaluation on the real held-out problems."""

    name = "gsm8k_variants"
    pool_size = 2000  # variants generated once per task object (seeded); sampled from per step

    def __init__(self, seed: int = 0):
        self.seed = seed
        self._pool = None

    def _train_pool(self) -> list[GSM8KProblem]:
        if self._pool is None:
            try:
                import reasoning_gym
            except ModuleNotFoundError:
                raise ModuleNotFoundError("task gsm8k_variants needs reasoning-gym: "
                                          "pip install reasoning-gym") from None
            data = reasoning_gym.create_dataset("gsm_symbolic", size=self.pool_size, seed=self.seed)
            # answer_cot: GSM8K's format, the solution steps, then "#### answer"
            self._pool = [GSM8KProblem(item["question"], item["metadata"]["answer_cot"].rpartition("####")[0],
                                       str(item["answer"]).strip()) for item in data]
        return self._pool

    def variants(self) -> list[tuple[Problem, str]]:
        """(problem, reference chain of thought) pairs from reasoning-gym's gsm_symbolic."""
        return [(_gsm8k_prompt(p), p.chain_of_thought(think_end=None)) for p in self._train_pool()]


TASKS = {"toy": ToyTask, "gsm8k": GSM8KTask, "gsm8k_variants": GSM8KVariantsTask}


def get_task(name: str) -> Task:
    """A new task object by name; a ValueError names the closest valid one."""
    if name not in TASKS:
        close = difflib.get_close_matches(str(name), TASKS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"task: unknown task {name!r}{hint}; choose one of {sorted(TASKS)}")
    return TASKS[name]()
