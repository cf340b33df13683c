"""`repro_fast.config`: `RePROConfig` defaults are the paper's (SPEC §7), every field is validated on
construction with a message naming ``RePROConfig.<field>``, the closed intervals' edges are valid,
`authors_code` / `replace` build validated copies, and the shared argument checkers return the value
or raise TypeError / ValueError naming the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest

from repro_fast.config import (
    MAX_SEGMENTS,
    RePROConfig,
    check_choice,
    check_group_ids,
    check_int,
    check_real,
    check_sequence,
    check_type,
)


def test_defaults_are_the_papers():
    c = RePROConfig()
    assert (c.num_segments, c.stability_weight, c.alpha, c.ema_decay, c.temperature, c.normalize) == \
        (20, 0.1, 0.1, 0.99, 1.0, "group")
    assert (c.answer_template, c.think_end, c.boundary_suffixes) == ("\\boxed{{{answer}}}", "</think>",
                                                                  ("\n\n", ".\n", "?\n"))
    assert (c.answer_add_special_tokens, c.boundary_mode, c.think_end_mode, c.stability_form) == \
        (False, "text", "text", "paper")


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("num_segments", 0, ValueError),
        ("num_segments", -3, ValueError),
        ("num_segments", 2.5, TypeError),
        ("stability_weight", -0.1, ValueError),
        ("stability_weight", 1.5, ValueError),
        ("ema_decay", -0.01, ValueError),
        ("ema_decay", 1.01, ValueError),
        ("temperature", 0.0, ValueError),
        ("temperature", -1.0, ValueError),
        ("temperature", float("nan"), ValueError),
        ("normalize", "global", ValueError),
        ("normalize", None, TypeError),
        ("answer_template", "no placeholder", ValueError),
        ("boundary_suffixes", "\n\n", TypeError),
        ("think_end", "", ValueError),
    ],
)
def test_config_out_of_range(field, value, error):
    with pytest.raises(error, match=field):
        RePROConfig(**{field: value})


def test_config_edges_are_valid():
    # closed intervals: w, d in [0, 1]; k = 1; think_end None disables the marker
    RePROConfig(num_segments=1, stability_weight=0.0, ema_decay=0.0)
    RePROConfig(stability_weight=1.0, ema_decay=1.0, think_end=None, temperature=1e-3)


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("boundary_suffixes", None, TypeError),
        ("boundary_suffixes", "\n\n", TypeError),
        ("temperature", 1e-300, ValueError),
        ("temperature", 10**400, ValueError),
        ("temperature", float("nan"), ValueError),
        ("num_segments", 10**12, ValueError),
        ("num_segments", 0, ValueError),
    ],
)
def test_config_errors_name_the_field(field, value, error):
    with pytest.raises(error, match=f"RePROConfig.{field}"):
        RePROConfig(**{field: value})


def test_authors_code_and_replace_build_validated_copies():
    a = RePROConfig.authors_code(num_segments=3)
    assert (a.answer_add_special_tokens, a.boundary_mode, a.think_end_mode, a.stability_form,
            a.stability_weight, a.num_segments) == (True, "token_id", "token_id", "authors_code", 0.0, 3)
    b = RePROConfig(boundary_suffixes=["\n"]).replace(temperature=0.5)
    assert b.temperature == 0.5 and b.boundary_suffixes == ("\n",)  # a list is stored as a tuple
    with pytest.raises(ValueError, match="RePROConfig.num_segments"):
        a.replace(num_segments=MAX_SEGMENTS + 1)
    with pytest.raises(ValueError, match="RePROConfig.answer_template: not a valid format string"):
        RePROConfig(answer_template="{answer} {0}")


def test_checkers_return_the_value_or_name_the_argument():
    assert check_type(3, "x", int, "an int") == 3
    with pytest.raises(TypeError, match="x: expected an int, got str"):
        check_type("3", "x", int, "an int")
    assert check_choice("a", "mode", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="mode: expected one of"):
        check_choice("c", "mode", ("a", "b"))
    assert check_int(np.int32(4), "k", 1, 5) == 4 and type(check_int(np.int32(4), "k", 1)) is int
    for bad, error in ((True, TypeError), (2.0, TypeError), (0, ValueError), (6, ValueError)):
        with pytest.raises(error, match="k: expected an int"):
            check_int(bad, "k", 1, 5)
    assert check_real(np.float32(0.5), "w", 0.0, 1.0) == 0.5
    for bad, error in ((False, TypeError), ("1", TypeError), (math.nan, ValueError), (10**400, ValueError),
                       (1.5, ValueError)):
        with pytest.raises(error, match="w: expected a"):
            check_real(bad, "w", 0.0, 1.0)
    assert check_sequence([1, 2], "rewards", 2) == [1, 2]
    with pytest.raises(TypeError, match="rewards: expected a list"):
        check_sequence("ab", "rewards")
    with pytest.raises(ValueError, match="rewards: expected 3 entries"):
        check_sequence([1, 2], "rewards", 3)
    check_group_ids(None, 4)
    check_group_ids(["a", 1, (2, 3)], 3)
    with pytest.raises(TypeError, match="group_ids\\[1\\]: expected a hashable id"):
        check_group_ids(["a", ["b"]], 2)
