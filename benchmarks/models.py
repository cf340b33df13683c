"""The presets' models: architectures written out, and random-weight causal LMs built from them.

* `cpu_model_config`: the small Qwen2-style model of the ``cpu`` and ``long`` presets.
* `qwen25_1p5b_config`: Qwen2.5-1.5B's architecture (``gpu``, ``gpu_long``).
* `architecture_of`: a loaded model's config without the GGUF quantization entry (``gpu_real``).
* `build_model`: random weights of a config, directly on the device, in eval mode.
"""

from __future__ import annotations

import torch

# See `build_model`: logits of a random model at the usual initialization are near zero.
GPU_LOGIT_SCALE = 4.0  # logit std about 3 at hidden 1536 (0.02 * sqrt(1536) * 4)


def cpu_model_config(vocab_size: int):
    """Qwen2-style: hidden 256, 4 layers, 4 heads / 2 KV heads, intermediate 688."""
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


def architecture_of(model):
    """``model.config`` without its GGUF ``quantization_config`` (the source file's, not the
    architecture's): what a random-weight copy is built from."""
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config


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
