"""A minimal GRPO trainer with RePro process advantages built in (see `repro_fast.grpo.loop`)::

    summary = train(GRPOConfig(task="toy", steps=30, alpha=0.1, out="runs/toy"))
"""

from repro_fast.grpo.config import ConfigError, GRPOConfig, load_config
from repro_fast.grpo.loop import train
from repro_fast.grpo.loss import grpo_loss, k3_kl, sequence_logprobs
from repro_fast.grpo.sft import SFTConfig, run_sft
from repro_fast.grpo.verify import boxed_verifier

__all__ = [
    "ConfigError", "GRPOConfig", "load_config", "train", "grpo_loss", "k3_kl", "sequence_logprobs",
    "SFTConfig", "run_sft", "boxed_verifier",
]
