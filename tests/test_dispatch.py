"""`repro_fast.dispatch`: which implementation runs. Kernels: ``auto`` is Triton for CUDA tensors and
torch otherwise, ``triton`` on CPU tensors needs the interpreter, ``REPRO_FAST_KERNELS`` sets the
default; planner: ``auto`` is C++ when `repro_fast._C` imports, ``REPRO_FAST_PLANNER`` sets the
default, and a missing extension falls back to Python with a warning (an error when ``cpp`` was
asked for); bad values name the argument or the environment variable."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

from repro_fast import RePROConfig, dispatch

ENV = dispatch.PLANNER_ENV


@pytest.fixture
def fresh_switch(monkeypatch):
    """Forget the extension's import result, before and after the test."""
    monkeypatch.setattr(dispatch, "_extension", dispatch._UNSET)
    monkeypatch.delenv(ENV, raising=False)
    yield
    dispatch._extension = dispatch._UNSET


def test_resolve_planner(cpp, fresh_switch, monkeypatch):
    assert dispatch.resolve_planner("auto") == "cpp"
    assert dispatch.resolve_planner("python") == "python"
    monkeypatch.setenv(ENV, " CPP ")  # the environment sets the default; case and spaces do not matter
    assert dispatch.resolve_planner(None) == "cpp"
    monkeypatch.setenv(ENV, "python")
    assert dispatch.resolve_planner(None) == "python"
    assert dispatch.resolve_planner("cpp") == "cpp"  # an explicit argument wins
    monkeypatch.setenv(ENV, "rust")
    with pytest.raises(ValueError, match=ENV):
        dispatch.resolve_planner(None)
    with pytest.raises(ValueError, match="planner"):
        dispatch.resolve_planner("rust")


def test_fallback_warns_when_extension_missing(gpt2_tokenizer, tiny_llama, fresh_switch, monkeypatch):
    from repro_fast import RePROScorer

    monkeypatch.setitem(sys.modules, "repro_fast._C", None)  # makes `import repro_fast._C` fail
    with pytest.warns(RuntimeWarning, match="C\\+\\+ planner.*not available"):
        scorer = RePROScorer(tiny_llama, gpt2_tokenizer, RePROConfig())
    assert scorer.use_cpp_planner is False
    with pytest.raises(ImportError, match="planner='cpp'"):
        RePROScorer(tiny_llama, gpt2_tokenizer, RePROConfig(), planner="cpp")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an explicit choice of Python does not warn
        RePROScorer(tiny_llama, gpt2_tokenizer, RePROConfig(), planner="python")


def test_resolve_kernels(monkeypatch):
    monkeypatch.delenv(dispatch.KERNELS_ENV, raising=False)
    assert dispatch.resolve_kernels(None, torch.device("cpu")) == "torch"  # auto
    assert dispatch.resolve_kernels("auto", torch.device("cuda")) == "triton"
    assert dispatch.resolve_kernels("auto", "cuda") == "triton"  # a device name works too
    assert dispatch.resolve_kernels("torch", torch.device("cuda")) == "torch"
    monkeypatch.setenv(dispatch.KERNELS_ENV, " Torch ")  # the environment sets the default
    assert dispatch.resolve_kernels(None, torch.device("cuda")) == "torch"
    monkeypatch.setenv(dispatch.KERNELS_ENV, "cuda")
    with pytest.raises(ValueError, match=dispatch.KERNELS_ENV):
        dispatch.resolve_kernels(None, torch.device("cpu"))
    with pytest.raises(ValueError, match="kernels: expected one of"):
        dispatch.resolve_kernels("fast", torch.device("cpu"))


def test_triton_on_cpu_tensors_needs_the_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not dispatch.triton_interpret()
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        dispatch.resolve_kernels("triton", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.triton_interpret()
    assert dispatch.resolve_kernels("triton", torch.device("cpu")) == "triton"


@pytest.mark.parametrize("value, expected", [(None, 32), ("", 32), (" 8 ", 8), ("1", 1)])
def test_head_programs_per_sm(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("REPRO_FAST_HEAD_PROGRAMS_PER_SM", raising=False)
    else:
        monkeypatch.setenv("REPRO_FAST_HEAD_PROGRAMS_PER_SM", value)
    assert dispatch.head_programs_per_sm(32) == expected


@pytest.mark.parametrize("value", ["0", "-2", "two", "1.5"])
def test_head_programs_per_sm_refuses_bad_values(monkeypatch, value):
    monkeypatch.setenv("REPRO_FAST_HEAD_PROGRAMS_PER_SM", value)
    with pytest.raises(ValueError, match="REPRO_FAST_HEAD_PROGRAMS_PER_SM: expected an int >= 1"):
        dispatch.head_programs_per_sm(32)


def test_cpp_extension_is_imported_once(cpp, fresh_switch, monkeypatch):
    assert dispatch.cpp_extension() is cpp
    monkeypatch.setitem(sys.modules, "repro_fast._C", None)  # a later import would fail now
    assert dispatch.cpp_extension() is cpp, "the first import's result is kept"
