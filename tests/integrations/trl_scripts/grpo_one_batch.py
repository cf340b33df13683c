"""One `RePROGRPOTrainer` step on fixed completions, for tests/integrations/test_trl.py's process-count test.

Run as ``python grpo_one_batch.py OUT.json TOKENIZER_DIR`` (one process) or under
``accelerate launch --cpu --num_processes 2`` (two). The global batch is 3 prompts x 4
completions = 12 rows; with two processes each holds 6, so the middle group (rows 4-7) spans
both. Completions are a fixed function of the global row index (a `rollout_func`), so both runs
score the same trajectories. Rank 0 writes every row, in global order, to OUT.json.
"""

import json
import os
import re
import sys

TESTS = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, TESTS)  # tests/: conftest, reference

import torch  # noqa: E402
from accelerate.utils import gather_object  # noqa: E402
from conftest import make_tiny_model  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import GPT2TokenizerFast  # noqa: E402
from trl import GRPOConfig  # noqa: E402

from repro_fast import RePROConfig  # noqa: E402
from repro_fast.integrations.trl import RePROGRPOTrainer  # noqa: E402

ROWS, GROUP = 12, 4
STEPS = ["First we read the two numbers.", "Then we add them up.", "Let me check the sum again.",
         "Hmm, recount it once more.", "So the total is clear."]


def completion(row: int, answer: str) -> str:
    steps = [STEPS[(row + j) % len(STEPS)] for j in range(1 + (row * 7) % 4)]
    final = answer if row % 3 else str(int(answer) + 1)  # every third row is wrong
    return "\n\n".join(steps) + f"\n\nThe answer is \\boxed{{{final}}}."


def main(out_path: str, tokenizer_dir: str) -> None:
    tok = GPT2TokenizerFast.from_pretrained(tokenizer_dir)
    data = [
        {"prompt": f"What is {a} plus {b}?\n", "answer": str(a + b)} for a, b in ((3, 4), (12, 9), (25, 17))
    ]
    answer_of = {d["prompt"]: d["answer"] for d in data}

    def rollout(prompts, trainer):
        offset = trainer.accelerator.process_index * len(prompts)
        return {
            "prompt_ids": [tok(p)["input_ids"] for p in prompts],
            "completion_ids": [tok(completion(offset + j, answer_of[p]))["input_ids"] + [tok.eos_token_id]
                               for j, p in enumerate(prompts)],
            "logprobs": None,
        }

    def correct(completions, answer, **kwargs):
        return [float(re.findall(r"\\boxed\{(\d+)\}", c)[-1] == a) for c, a in zip(completions, answer)]

    world = int(os.environ.get("WORLD_SIZE", "1"))
    args = GRPOConfig(
        output_dir=os.path.join(os.path.dirname(out_path), f"run{world}"),
        per_device_train_batch_size=ROWS // world,
        num_generations=GROUP,
        max_completion_length=64,
        max_steps=1,
        bf16=False,
        use_cpu=True,
        seed=0,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )
    trainer = RePROGRPOTrainer(
        make_tiny_model("llama", seed=0), correct, args=args, train_dataset=Dataset.from_list(data),
        processing_class=tok, rollout_func=rollout, repro_config=RePROConfig(num_segments=3, alpha=0.5),
    )
    trainer.train()
    last = trainer.repro_last
    result = last.result
    rows = []
    for b in range(len(result)):
        n = int(result.response_mask[b].sum())
        rows.append({
            "rank": trainer.accelerator.process_index,
            "prompt": tok.decode(last.prompt_ids[b][last.prompt_mask[b].bool()]),
            "completion": tok.decode(last.completion_ids[b][last.completion_mask[b].bool()]),
            "points": list(result.points[b]), "rewards": result.rewards[b].tolist(),
            "outcome": float(last.outcome_advantages[b]),
            "process": last.process_advantages[b, :n].tolist(),
            "advantages": last.advantages[b, :n].tolist(),
        })
    rows = gather_object(rows)
    if trainer.accelerator.is_main_process:
        with open(out_path, "w") as fp:
            json.dump({"world": world, "rows": rows}, fp)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1], sys.argv[2])
