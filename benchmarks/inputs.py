"""What the presets score: synthetic chain-of-thought text, the byte-level BPE tokenizer trained on
it, and trajectories (prompt ids, response ids, answer string). Seeded and offline.

* `make_trajectories`: synthetic arithmetic word problems, prompts and responses cut to exact
  token lengths (the ``cpu`` and ``gpu`` presets).
* `gsm8k_trajectories`: real GSM8K reference solutions as CoTs (``real``), or long re-check CoTs
  built from them (``long``).
* `train_tokenizer`: the 4096-token BPE tokenizer, trained in seconds and cached on disk.

Answers, the think-end marker and the boundary rule are the package's defaults (`DEFAULTS`).
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from repro_fast import RePROConfig
from repro_fast.inspector import encode_prompt
from repro_fast.scoring_demo import INSTRUCTION
from repro_fast.segments import Planner

DEFAULTS = RePROConfig()  # the paper's settings: k, answer template, think end, boundary suffixes

GENERATOR_VERSION = "cot-v1"  # bump when the synthetic text generator changes (cache key)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_SYSTEM = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
_ASSISTANT = "<|im_end|>\n<|im_start|>assistant\n"


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of ``text``, no special tokens added."""
    return tokenizer.encode(text, add_special_tokens=False)


def answer_ids(tokenizer, answers: Sequence[str],
               template: str = DEFAULTS.answer_template) -> list[list[int]]:
    """Each answer rendered by ``template`` and encoded, as the scorer encodes it."""
    return [encode(tokenizer, template.format(answer=a)) for a in answers]


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
          ("crayon", "crayons"), ("button", "buttons"), ("cupcake", "cupcakes"),
          ("notebook", "notebooks"), ("lemon", "lemons"), ("toy car", "toy cars"),
          ("sandwich", "sandwiches"), ("plant", "plants"), ("magnet", "magnets"),
          ("ribbon", "ribbons"), ("photo", "photos"), ("badge", "badges")]
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


def make_problem(rng: random.Random) -> Problem:
    """A multi-step arithmetic word problem and its worked solution, some steps re-checked."""
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
    steps.append(f"So the final answer is \\boxed{{{value}}}.")  # corpus text (cache-keyed)
    return Problem(" ".join(question), steps, value)


def cot_text(problem: Problem) -> str:
    return "\n\n".join(problem.steps)


def chat_prompt_text(question: str, filler: str) -> str:
    """The synthetic tokenizer's chat layout (it has no chat template) around one user turn."""
    return f"{_SYSTEM}{question} {filler}{INSTRUCTION}{_ASSISTANT}"


def synthetic_corpus(num_problems: int = 6000, seed: int = 1234) -> list[str]:
    """Seeded synthetic text for tokenizer training: questions, chats, chains of thought."""
    rng = random.Random(seed)
    texts = []
    for _ in range(num_problems):
        p = make_problem(rng)
        texts.append(chat_prompt_text(p.question, rng.choice(_FILLERS)))
        texts.append(cot_text(p))
    texts.extend(_FILLERS)
    return texts


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
    return PreTrainedTokenizerFast(
        tokenizer_file=path,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )


# --------------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------------

def make_trajectories(tokenizer, num: int, prompt_len: int, response_len: int, seed: int):
    """`num` (prompt ids, response ids, answer str), each prompt exactly `prompt_len` tokens
    and each response exactly `response_len` tokens of synthetic chain of thought."""
    rng = random.Random(seed)
    prompts, responses, answers = [], [], []
    for _ in range(num):
        problem = make_problem(rng)
        # Prompt: chat header + question + filler text (trimmed) + assistant header.
        head = encode(tokenizer, f"{_SYSTEM}{problem.question}")
        tail = encode(tokenizer, f"{INSTRUCTION}{_ASSISTANT}")
        room = prompt_len - len(head) - len(tail)
        if room < 0:
            raise ValueError(f"prompt_len={prompt_len} is too short for the chat template")
        filler: list[int] = []
        while len(filler) < room:
            filler += encode(tokenizer, " " + rng.choice(_FILLERS))
        prompts.append(head + filler[:room] + tail)
        # Response: this problem's chain of thought, then more verification text until long
        # enough; truncated to exactly response_len tokens. No think end anywhere.
        text = cot_text(problem)
        while True:
            ids = encode(tokenizer, text)
            if len(ids) >= response_len:
                break
            extra = make_problem(rng)
            text += ("\n\nHmm, let me verify this with a similar case.\n\n" + cot_text(extra)
                     + f"\n\nBack to the original question: the count is {problem.answer}.")
        responses.append(ids[:response_len])
        answers.append(str(problem.answer))
    return prompts, responses, answers


def gsm8k_trajectories(tokenizer, num: int, offset: int = 0, long_cot: tuple[int, int] | None = None,
                       seed: int = 0):
    """Real GSM8K problems as trajectories: chat-templated prompt, the reference solution as the
    CoT (one step per paragraph, then the think end and the boxed answer), the answer string.

    A tokenizer without a chat template (the synthetic one) gets `chat_prompt_text` around the
    question and instruction (which then holds the instruction twice, as the presets always had).

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
        user = p.question + INSTRUCTION
        if getattr(tokenizer, "chat_template", None):
            prompts.append(encode_prompt(tokenizer, user))
        else:
            prompts.append(encode(tokenizer, chat_prompt_text(user, "")))
        text = p.chain_of_thought(DEFAULTS.think_end)
        if long_cot is not None:
            target = rng.randint(*long_cot)
            steps = [s for s in p.solution.splitlines() if s.strip()]
            paras = list(steps)
            while len(encode(tokenizer, "\n\n".join(paras))) < target:
                other = problems[rng.randrange(len(problems))]
                pool = steps if rng.random() < 0.6 else [s for s in other.solution.splitlines() if s.strip()]
                paras.append(f"Wait, let me re-check this step: {rng.choice(pool).strip()}")
                paras.append(rng.choice(["Yes, that is right.", "That matches what I had.",
                                         "Okay, that still holds."]))
            ids = encode(tokenizer, "\n\n".join(paras))[:target]
            boxed = DEFAULTS.answer_template.format(answer=p.answer)
            text = tokenizer.decode(ids) + f"\n{DEFAULTS.think_end}\n\nThe answer is {boxed}."
        responses.append(encode(tokenizer, text))
        answers.append(p.answer)
    return prompts, responses, answers


def count_candidates(tokenizer, response: Sequence[int], config: RePROConfig = DEFAULTS) -> int:
    """SPEC §3 segment starts of one response, ignoring any think end (the package's planner)."""
    return len(Planner(tokenizer, config.replace(think_end=None)).plan(list(response)).candidates)
