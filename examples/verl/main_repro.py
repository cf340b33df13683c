"""verl's ``main_ppo`` (v1 trainer) with RePro process advantages. NOT RUN in this repository's CI
(it needs GPUs and vLLM); the two steps it wires in are tested on CPU by tests/integrations/test_verl.py.

What changes against ``python -m verl.trainer.main_ppo``:
- the actor worker is ``RePROWorker`` (``ActorRolloutRefWorker`` + ``compute_repro_rewards``);
- the trainer is ``RePROSyncTrainer`` (verl's sync v1 trainer + RePro: scoring after the old
  log-probs, ``advantages += alpha * process_advantages`` after verl's estimator), registered as
  ``trainer.v1.trainer_mode=repro_sync``;
- ``actor_rollout_ref.repro`` (RePROConfig fields) and ``algorithm.repro`` (alpha, normalize).
Run it through run_gsm8k_qwen2.5_1.5b.sh (it puts this folder on PYTHONPATH for the Ray workers).
"""

import ray
from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.engine_workers import ActorRolloutRefWorker

from repro_fast.integrations.verl import RePROTrainerMixin, RePROWorkerMixin


class RePROWorker(RePROWorkerMixin, ActorRolloutRefWorker):
    pass


@register_trainer("repro_sync")
class RePROSyncTrainer(RePROTrainerMixin, PPOTrainerSync):
    def _init_resource_pool_mgr(self):
        super()._init_resource_pool_mgr()
        # verl maps the actor role to its own worker class: swap in ours (same constructor);
        # a separate reference-policy worker keeps verl's.
        for role, cls in list(self.role_worker_mapping.items()):
            actor = getattr(cls, "__ray_actor_class__", None) is ActorRolloutRefWorker
            if actor and role.name != "RefPolicy":
                self.role_worker_mapping[role] = ray.remote(RePROWorker)


@ray.remote
class RePROTaskRunner(TaskRunnerV1.__ray_actor_class__):
    """verl's v1 task runner, in a process that has imported this module (the trainer registry)."""


if __name__ == "__main__":
    import hydra

    @hydra.main(config_path="pkg://verl.trainer.config", config_name="ppo_trainer", version_base=None)
    def main(config):
        run_ppo(config, task_runner_class=RePROTaskRunner)

    main()
