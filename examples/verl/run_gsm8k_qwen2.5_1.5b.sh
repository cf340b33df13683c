#!/usr/bin/env bash
# GRPO + RePro on GSM8K with Qwen2.5-1.5B-Instruct, verl 0.9.1 (v1 trainer, FSDP2, vLLM), one
# node of 8 GPUs. NOT RUN in this repository's CI: it needs GPUs, vLLM and the model and data
# downloads. The two RePro steps it wires in are tested on CPU by tests/integrations/test_verl.py.
#
# Setup (GPU machine): pip install "verl[vllm]==0.9.1" and this package with
#   pip install --no-deps --no-build-isolation -e .
# Data: python -m verl.examples.data_preprocess.gsm8k --local_save_dir ~/data/gsm8k
#   (any preprocessing that puts the answer in reward_model.ground_truth works).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
data=${DATA:-$HOME/data/gsm8k}
model=${MODEL:-Qwen/Qwen2.5-1.5B-Instruct}

python3 "$here/main_repro.py" \
    trainer.use_v1=True \
    trainer.v1.trainer_mode=repro_sync \
    algorithm.adv_estimator=grpo \
    algorithm.use_kl_in_reward=False \
    +algorithm.repro.alpha=0.1 \
    +algorithm.repro.normalize=group \
    +actor_rollout_ref.repro.num_segments=20 \
    +actor_rollout_ref.repro.temperature=1.0 \
    data.train_files="$data/train.parquet" \
    data.val_files="$data/test.parquet" \
    data.train_batch_size=256 \
    data.max_prompt_length=512 \
    data.max_response_length=2048 \
    actor_rollout_ref.model.path="$model" \
    actor_rollout_ref.model.use_remove_padding=True \
    actor_rollout_ref.actor.strategy=fsdp2 \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
    actor_rollout_ref.actor.use_kl_loss=True \
    actor_rollout_ref.actor.kl_loss_coef=0.001 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.n=8 \
    actor_rollout_ref.rollout.temperature=1.0 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 \
    actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16 \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.total_epochs=3 \
    trainer.project_name=repro_fast \
    trainer.experiment_name=gsm8k_qwen2.5_1.5b_grpo_repro \
    trainer.logger='["console"]' \
    "$@"
