"""What a user installs: LICENSE is the Apache-2.0 text pyproject.toml declares; .gitignore ignores no
tracked file; the sdist is built from an explicit list that covers every tracked file the package,
the C++ planner, the examples and the docs need (and lists nothing that is not there); the wheel
carries examples/ as package data, and `repro-fast examples` writes exactly the tracked example files."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import tomllib

from repro_fast import cli

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def tracked() -> list[str]:
    """The repository's files as a commit would hold them: tracked or new and not ignored, and present
    (in a fresh clone: git ls-files), as POSIX paths."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True)
    return sorted({p for p in out.stdout.decode().split("\0") if p and (ROOT / p).is_file()})


def test_license_is_apache_2():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    assert PYPROJECT["project"]["license"] == {"text": "Apache-2.0"}


def test_gitignore_ignores_no_tracked_file():
    out = subprocess.run(["git", "ls-files", "-ci", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout == "", f".gitignore matches tracked files: {out.stdout.split()}"


def glob_regex(pattern: str) -> re.Pattern:
    """A root-anchored glob as scikit-build-core's sdist.include reads these ones: ``**/`` any folders,
    ``*`` any name part."""
    out = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*", "[^/]*")
    return re.compile(out + "$")


def test_glob_regex():
    assert glob_regex("repro_fast/**/*.py").match("repro_fast/cli.py")
    assert glob_regex("repro_fast/**/*.py").match("repro_fast/grpo/loop.py")
    assert not glob_regex("repro_fast/**/*.py").match("repro_fast/_C.so")
    assert not glob_regex("csrc/*.cpp").match("csrc/sub/x.cpp")


def test_sdist_is_an_explicit_list_that_covers_the_build():
    sdist = PYPROJECT["tool"]["scikit-build"]["sdist"]
    assert sdist["inclusion-mode"] == "explicit"  # an untracked file of the working tree never slips in
    patterns = [glob_regex(p) for p in sdist["include"]]
    files = tracked()
    needed = [f for f in files if f.split("/")[0] in ("repro_fast", "csrc", "examples", "docs")
              or f in ("pyproject.toml", "README.md", "LICENSE", "SPEC.md")]
    assert not [f for f in needed if not any(p.match(f) for p in patterns)], "tracked files the sdist misses"
    dead = [p.pattern for p in patterns if not any(p.match(f) for f in files)]
    assert not dead, f"include patterns that match no tracked file: {dead}"


def test_wheel_carries_the_examples():
    packages = PYPROJECT["tool"]["scikit-build"]["wheel"]["packages"]
    assert packages == {"repro_fast": "repro_fast", "repro_fast/examples": "examples"}
    assert sorted(cli.EXAMPLE_FILES) == sorted(f.removeprefix("examples/") for f in tracked()
                                               if f.startswith("examples/"))
    assert cli.examples_dir() in (ROOT / "examples", ROOT / "repro_fast" / "examples")
