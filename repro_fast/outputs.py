"""Where commands write: output paths checked before any work starts, so that no command writes
over a user's file (or over its own input) unless the user asked for it with ``--overwrite``."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import shutil


class UsageError(ValueError):
    """A bad argument, setting or path: the command line prints it and exits with status 2."""


def same_path(a: str, b: str) -> bool:
    """True when ``a`` and ``b`` name the same file (``./sub/../x`` and ``x``, symlinks, hard links)."""
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def is_inside(path: str, folder: str) -> bool:
    """True when ``path`` lies somewhere below ``folder`` (symlinks resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path != folder and path.startswith(folder.rstrip(os.sep) + os.sep)


def check_output_file(path: str, *, name: str = "out", inputs: tuple[str, ...] = (),
                      overwrite: bool = False) -> None:
    """Check, before any work, that the file ``path`` may be written.

    Refused (a `UsageError` naming ``name``): a path equal to one of ``inputs``; an existing folder;
    an existing file unless ``overwrite``; a parent folder that exists but is not writable.
    """
    for source in inputs:
        if source is not None and same_path(path, source):
            raise UsageError(f"{name}: {path!r} is the input file {source!r}; choose another output path")
    if os.path.isdir(path):
        raise UsageError(f"{name}: {path!r} is a folder; expected a file path")
    if os.path.exists(path) and not overwrite:
        raise UsageError(f"{name}: {path!r} exists; pass --overwrite to replace it, or choose another path")
    _check_can_create(path, name, what="file")


def make_out_dir(out: str, name: str = "out") -> None:
    """Create the folder ``out`` now, or raise a `UsageError` that says why it cannot be."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"{name}: {out!r} is a file, not a folder")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{name}: cannot create folder {out!r}: {exc.strerror or exc}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"{name}: folder {out!r} is not writable")


# --- run folders ---------------------------------------------------------------------------------
# A command that writes a folder of outputs (train, sft, study, demo) keeps a manifest in it: the
# command's name and every entry it created there. A later run of the same command may then
# replace exactly those entries, and nothing else: a user's own file is never deleted or written
# over, --overwrite or not.

MANIFEST = ".repro-fast-run.json"


def read_manifest(folder: str) -> dict | None:
    """The manifest of the run in ``folder``: ``{"command": str, "created": [names]}``; None if none."""
    try:
        with open(os.path.join(folder, MANIFEST), encoding="utf-8") as fp:
            data = json.load(fp)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("created"), list):
        return None
    return data


def _check_can_create(out: str, name: str, what: str = "folder") -> None:
    """Without touching the disk: ``out`` (a ``what``, file or folder, not there yet) can be
    created: its nearest existing ancestor is a writable folder."""
    existing = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{name}: cannot create {what} {out!r}: Not a directory ({existing!r} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{name}: cannot create {what} {out!r}: folder {existing!r} is not writable")


@dataclasses.dataclass
class RunDir:
    """An output folder checked by `check_run_dir` (nothing written yet); `claim` makes it this run's."""

    path: str
    command: str
    replace: list[str]  # entries of an earlier run of the same command, deleted by `claim`
    created: list[str]  # entries this run owns (kept ones of the earlier run, then `record`ed ones)

    def claim(self) -> RunDir:
        """Create the folder, delete the earlier run's replaceable entries, write the manifest."""
        make_out_dir(self.path)
        for entry in self.replace:
            path = os.path.join(self.path, entry)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
        self._write()
        return self

    def record(self, *entries: str) -> str:
        """Note ``entries`` (names in the folder) as this run's, before writing them; the first one's path."""
        self.created += [e for e in entries if e not in self.created]
        self._write()
        return os.path.join(self.path, entries[0]) if entries else self.path

    def _write(self) -> None:
        tmp = os.path.join(self.path, MANIFEST + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fp:
            json.dump({"command": self.command, "created": self.created}, fp, indent=1)
        os.replace(tmp, os.path.join(self.path, MANIFEST))  # a crash never leaves half a manifest


def check_run_dir(out: str, command: str, *, overwrite: bool, writes: tuple[str, ...] = ("*",),
                  keep: tuple[str, ...] = (), name: str = "out", flag: str | None = "--overwrite") -> RunDir:
    """Check, without touching the disk, that a ``command`` run may write its outputs into ``out``.

    Allowed: a folder that does not exist yet or is empty; with ``overwrite``, a folder holding an
    earlier run of the same ``command`` (its manifest), whose entries are then replaced, except
    ``keep`` (e.g. a cache the run checks itself). Refused (a `UsageError` naming ``name``): a file;
    an earlier run without ``overwrite``; a non-empty folder without a manifest of ``command``; an
    entry the earlier run did not create whose name matches ``writes`` (glob patterns of the names
    the run may write; ``"*"``: all, so the folder must hold nothing else). ``flag``: the option
    that sets ``overwrite`` (None: the command always replaces its own earlier run).
    """
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UsageError(f"{name}: {out!r} is a file, not a folder")
    if not os.path.exists(out):
        _check_can_create(out, name)
        return RunDir(out, command, replace=[], created=[])
    if not os.access(out, os.W_OK | os.X_OK):
        raise UsageError(f"{name}: folder {out!r} is not writable")
    entries = sorted(e for e in os.listdir(out) if e not in (MANIFEST, MANIFEST + ".tmp"))
    manifest = read_manifest(out)
    earlier = manifest["created"] if manifest and manifest.get("command") == command else None
    if not entries:
        return RunDir(out, command, replace=[], created=[])
    listing = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
    run = f"`repro-fast {command}` run"
    if earlier is None:
        other = f"; it holds a `repro-fast {manifest.get('command')}` run" if manifest else ""
        only = f" ({flag} replaces only the files of an earlier {run})" if flag else ""
        raise UsageError(f"{name}: folder {out!r} is not empty ({listing}{other}) and holds no earlier "
                         f"{run}{only}; choose a new or empty --{name}")
    if not overwrite:
        raise UsageError(f"{name}: folder {out!r} is not empty ({listing}): it holds an earlier {run}; "
                         f"choose a new --{name}, or pass {flag} to replace that run's files")
    theirs = [e for e in entries if e not in earlier]
    if clash := [e for e in theirs if any(fnmatch.fnmatchcase(e, pattern) for pattern in writes)]:
        raise UsageError(f"{name}: folder {out!r} holds {', '.join(clash[:6])}, which the earlier {run} "
                         "did not create and this run could write over; move it away or choose a new "
                         f"--{name}")
    ours = [e for e in earlier if os.path.lexists(os.path.join(out, e))]
    return RunDir(out, command, replace=[e for e in ours if e not in keep],
                  created=[e for e in ours if e in keep])
