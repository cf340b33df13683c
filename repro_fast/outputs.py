"""Where commands write: output paths checked before any work starts, so that no command writes
over a user's file (or over its own input) unless the user asked for it with ``--overwrite``."""

from __future__ import annotations

import dataclasses
import fcntl
import fnmatch
import json
import os
import shutil
import stat
import time


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
    _check_not_dangling(out, name)
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
# over, --overwrite or not. A folder may come from someone else (a shared drive, an archive), so
# its manifest is input: an entry is deleted only if it names something inside the folder. While
# a run writes its folder it holds an exclusive lock on it (LOCK, an flock), so that a second run
# on the same folder is refused at once instead of mixing its files with the first one's.

MANIFEST = ".repro-fast-run.json"
LOCK = ".repro-fast-run.lock"  # exists only while a run holds it (or after a run was killed)
BOOKKEEPING = (MANIFEST, MANIFEST + ".tmp", LOCK)  # not outputs: never listed, never a manifest entry
LOCK_WAIT_S = 0.5  # how long a claim retries a held lock: a concurrent check holds it for microseconds


def _is_plain_file(path: str) -> bool:
    """True when ``path`` is a regular file itself (not a symlink, folder, FIFO, ...)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_manifest(folder: str) -> dict | None:
    """The manifest of the run in ``folder``: ``{"command": str, "created": [...]}``; None if none
    (or not a regular file, or not such an object). Its entries are unchecked: `manifest_entries`."""
    path = os.path.join(folder, MANIFEST)
    if not _is_plain_file(path):  # a symlink or FIFO there is not a manifest (and is never read)
        return None
    try:
        with open(path, encoding="utf-8") as fp:
            data = json.load(fp)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("command"), str) \
            or not isinstance(data.get("created"), list):
        return None
    return data


def _bad_entry(folder: str, entry) -> str | None:
    """Why the manifest entry ``entry`` of ``folder`` may not be deleted; None when it may."""
    if not isinstance(entry, str):
        return f"which is not a name (expected a string, got {type(entry).__name__})"
    if not entry or "\0" in entry:
        return "which is not a name"
    if os.path.isabs(entry):
        return "an absolute path"
    parts = entry.replace(os.altsep or os.sep, os.sep).split(os.sep)
    if any(part in ("", ".", "..") for part in parts):
        return "which is not a plain relative path (it has a '.', '..' or empty part)"
    if entry in BOOKKEEPING:
        return "the run folder's own bookkeeping file"
    path = os.path.join(folder, entry)
    if not is_inside(path, folder):  # a symlink on the way (or the entry itself) points out
        return f"which resolves outside the folder (to {os.path.realpath(path)!r}, through a symlink)"
    return None


def manifest_entries(folder: str, manifest: dict, name: str = "out") -> list[str]:
    """The ``created`` entries of ``manifest`` (``folder``'s), each checked to name something inside
    ``folder``: a relative path of plain names (no absolute path, ``.``, ``..`` or empty part) that
    does not resolve outside it through a symlink. Any other entry: a `UsageError` naming the
    manifest and the entry, raised before anything is deleted."""
    for entry in manifest["created"]:
        if (problem := _bad_entry(folder, entry)) is not None:
            raise UsageError(f"{name}: the manifest {os.path.join(folder, MANIFEST)!r} lists {entry!r}, "
                             f"{problem}; a run deletes only entries inside its own folder, so nothing was "
                             f"deleted: fix or remove the manifest, or choose a new --{name}")
    return list(manifest["created"])


def _cannot_unlink(parent: str, path: str) -> str | None:
    """Why ``path`` (an entry of the folder ``parent``) cannot be unlinked; None when it can."""
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"folder {parent!r} is not writable"
    try:
        parent_stat, owner = os.stat(parent), os.lstat(path).st_uid
    except OSError:  # gone meanwhile: nothing to delete
        return None
    if parent_stat.st_mode & stat.S_ISVTX and os.geteuid() not in (0, parent_stat.st_uid, owner):
        return f"folder {parent!r} is sticky and {path!r} belongs to another user"
    return None


def _cannot_delete(path: str) -> str | None:
    """Without touching the disk: why ``path`` (a file, symlink or folder tree) cannot be deleted
    whole; None when it can (permissions as `os.access` sees them)."""
    if problem := _cannot_unlink(os.path.dirname(path), path):
        return problem
    if not os.path.isdir(path) or os.path.islink(path):
        return None
    errors = []
    for folder, dirs, files in os.walk(path, onerror=errors.append):  # symlinks are not followed
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):  # list it, then unlink what it holds
            return f"folder {folder!r} is not writable"
        for child in dirs + files:
            if problem := _cannot_unlink(folder, os.path.join(folder, child)):
                return problem
    if errors:
        return f"{errors[0].filename!r}: {errors[0].strerror}"
    return None


def _remove(path: str) -> None:
    """Delete ``path``: a folder tree, or a file or symlink (never what a symlink points to)."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


class _FolderLock:
    """An exclusive flock on a run folder's LOCK file, held by this process until `release` (the
    file is then deleted). Every `RunDir` of this process on the folder shares it (`users`)."""

    def __init__(self, fd: int, path: str):
        self.fd, self.path, self.pid, self.users = fd, path, os.getpid(), 0

    def release(self) -> None:
        """Delete the lock file (if it is still this lock's) and drop the lock."""
        if self.fd < 0 or self.pid != os.getpid():  # a forked child never releases its parent's lock
            return
        try:
            mine, there = os.fstat(self.fd), os.stat(self.path, follow_symlinks=False)
            if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
                os.remove(self.path)  # deleted while still locked: a waiter re-checks the inode
        except OSError:
            pass
        os.close(self.fd)  # drops the flock
        self.fd = -1

    def __del__(self):
        try:
            self.release()
        except Exception:  # at interpreter exit the modules may be gone; the kernel frees the lock then
            pass


_HELD: dict[tuple[int, int], _FolderLock] = {}  # the locks this process holds, by the folder's (dev, inode)


def _folder_key(folder: str) -> tuple[int, int]:
    st = os.stat(folder)
    return st.st_dev, st.st_ino


def _holder(fd: int) -> str:
    """What the lock file says of the run holding it (written by `_lock_folder`), or ''."""
    try:
        return os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _busy(folder: str, name: str, holder: str) -> UsageError:
    """The error of a run refused because another one holds the folder's lock."""
    by = f" ({holder})" if holder else ""
    return UsageError(f"{name}: folder {folder!r} is being written by another run{by}: two runs would "
                      f"mix their files; wait for it to end, or choose another --{name}")


def _lock_folder(folder: str, command: str, name: str) -> _FolderLock:
    """Take the exclusive lock on the run folder ``folder`` (which exists), or raise a `UsageError`
    when another process holds it. A lock this process holds already is shared: runs in one process
    follow each other (a `train` that failed in a notebook may be rerun there)."""
    key = _folder_key(folder)
    held = _HELD.get(key)
    if held is not None and held.fd >= 0 and held.pid == os.getpid():
        return held
    path = os.path.join(folder, LOCK)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        flags = os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK  # never through a symlink, never stuck on a FIFO
        try:
            try:
                fd = os.open(path, os.O_RDWR | flags, 0o644)
            except PermissionError:  # a lock file another user's run left: locking needs no write access
                fd = os.open(path, os.O_RDONLY | flags, 0o644)
        except OSError as exc:
            raise UsageError(f"{name}: cannot create the lock file {path!r}: {exc.strerror or exc}; "
                             f"choose another --{name}") from None
        mine = os.fstat(fd)
        if not stat.S_ISREG(mine.st_mode):
            os.close(fd)
            raise UsageError(f"{name}: {path!r} is not a regular file (the lock file of a run folder); "
                             f"remove it or choose another --{name}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            raise _busy(folder, name, holder) from None
        except OSError as exc:
            os.close(fd)
            raise UsageError(f"{name}: cannot lock folder {folder!r} ({path!r}: {exc.strerror or exc}); "
                             f"choose an --{name} on a file system with file locks") from None
        try:
            there = os.stat(path, follow_symlinks=False)
        except OSError:
            there = None
        if there is None or (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
            os.close(fd)  # its holder deleted it as it ended, before we locked: lock the new one
            continue
        if mine.st_nlink == 1:  # this name is its only one: writing into it changes no other file
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()}, `repro-fast {command}`\n".encode(), 0)
            except OSError:  # opened read-only: the refusal of a second run just names no pid
                pass
        lock = _HELD[key] = _FolderLock(fd, path)
        return lock


def _check_not_locked(folder: str, name: str) -> None:
    """Without changing anything: a `UsageError` when another process holds ``folder``'s lock (a run
    is writing it), so that the message says so rather than what that run's half-written files are."""
    try:
        held = _HELD.get(_folder_key(folder))
    except OSError:
        return
    if held is not None and held.fd >= 0 and held.pid == os.getpid():
        return
    try:
        fd = os.open(os.path.join(folder, LOCK), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:  # none (no run holds it), or not a plain file: `claim` says so
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a probe: `claim` retries one it collides with
    except BlockingIOError:
        raise _busy(folder, name, _holder(fd)) from None
    except OSError:
        pass
    finally:
        os.close(fd)


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


def _check_not_dangling(out: str, name: str) -> None:
    """A symlink ``out`` whose target does not exist: a `UsageError` that says so."""
    if os.path.islink(out) and not os.path.exists(out):
        raise UsageError(f"{name}: {out!r} is a symbolic link to {os.readlink(out)!r}, which does not "
                         f"exist; create that folder, or choose another --{name}")


@dataclasses.dataclass
class RunDir:
    """An output folder checked by `check_run_dir` (nothing written yet); `claim` makes it this run's:
    it locks the folder for as long as this object lives (or until `close`), checks it again under
    the lock, deletes the earlier run's replaceable entries and writes the manifest."""

    path: str
    command: str
    replace: list[str] = dataclasses.field(default_factory=list)  # an earlier run's entries, deleted by claim
    created: list[str] = dataclasses.field(default_factory=list)  # this run's: kept ones, then recorded ones
    # the check's settings (`check_run_dir`), so that `claim` can repeat it under the lock
    overwrite: bool = False
    writes: tuple[str, ...] = ("*",)
    keep: tuple[str, ...] = ()
    name: str = "out"
    flag: str | None = "--overwrite"
    _lock: _FolderLock | None = dataclasses.field(default=None, repr=False, compare=False)

    def check(self) -> RunDir:
        """Check, without touching the disk, that this run may write its outputs into the folder (see
        `check_run_dir`); sets ``replace`` and ``created`` from what is there now."""
        out, name, command = self.path, self.name, self.command
        _check_not_dangling(out, name)
        if os.path.lexists(out) and not os.path.isdir(out):
            raise UsageError(f"{name}: {out!r} is a file, not a folder")
        self.replace, self.created = [], []
        if not os.path.exists(out):
            _check_can_create(out, name)
            return self
        if not os.access(out, os.W_OK | os.X_OK):
            raise UsageError(f"{name}: folder {out!r} is not writable")
        _check_not_locked(out, name)
        entries = sorted(e for e in os.listdir(out)
                         if not (e in BOOKKEEPING and _is_plain_file(os.path.join(out, e))))
        manifest = read_manifest(out)
        earlier = None
        if manifest and manifest["command"] == command:
            earlier = manifest_entries(out, manifest, name)  # input: checked before it deletes anything
        if not entries:
            return self
        listing = ", ".join(entries[:6]) + (", ..." if len(entries) > 6 else "")
        run, flag = f"`repro-fast {command}` run", self.flag
        if earlier is None:
            other = f"; it holds a `repro-fast {manifest['command']}` run" if manifest else ""
            only = f" ({flag} replaces only the files of an earlier {run})" if flag else ""
            raise UsageError(f"{name}: folder {out!r} is not empty ({listing}{other}) and holds no earlier "
                             f"{run}{only}; choose a new or empty --{name}")
        if not self.overwrite:
            raise UsageError(f"{name}: folder {out!r} is not empty ({listing}): it holds an earlier {run}; "
                             f"choose a new --{name}, or pass {flag} to replace that run's files")
        theirs = [e for e in entries if e not in earlier]
        if clash := [e for e in theirs if any(fnmatch.fnmatchcase(e, pattern) for pattern in self.writes)]:
            raise UsageError(f"{name}: folder {out!r} holds {', '.join(clash[:6])}, which the earlier {run} "
                             "did not create and this run could write over; move it away or choose a new "
                             f"--{name}")
        ours = list(dict.fromkeys(e for e in earlier if os.path.lexists(os.path.join(out, e))))
        self.replace = [e for e in ours if e not in self.keep]
        self.created = [e for e in ours if e in self.keep]
        for entry in self.replace:  # every one deletable, or none is deleted
            if problem := _cannot_delete(os.path.join(out, entry)):
                raise UsageError(f"{name}: cannot replace the earlier {run}'s {entry!r} in {out!r}: "
                                 f"{problem}; nothing was deleted: fix its permissions, or choose a new "
                                 f"--{name}")
        return self

    def claim(self) -> RunDir:
        """Create the folder and lock it (a `UsageError` if another run holds it), check it again under
        the lock (another run may have written it since `check`), delete the earlier run's replaceable
        entries, write the manifest."""
        make_out_dir(self.path, self.name)
        lock = _lock_folder(self.path, self.command, self.name)
        lock.users += 1
        self.close()
        self._lock = lock
        try:
            self.check()
            deleted = []
            for entry in self.replace:
                try:
                    _remove(os.path.join(self.path, entry))
                except OSError as exc:  # checked deletable; changed since, or immutable
                    done = f"already deleted: {', '.join(deleted)}" if deleted else "nothing was deleted"
                    raise UsageError(f"{self.name}: cannot delete the earlier run's {entry!r} in "
                                     f"{self.path!r}: {exc.strerror or exc} ({done})") from None
                deleted.append(entry)
            self._write()
        except BaseException:
            self.close()  # a refused run holds no lock, even while its traceback is kept
            raise
        return self

    def record(self, *entries: str) -> str:
        """Note ``entries`` (names in the folder) as this run's, before writing them; the first one's path."""
        self.created += [e for e in entries if e not in self.created]
        self._write()
        return os.path.join(self.path, entries[0]) if entries else self.path

    def close(self) -> None:
        """Release this run's lock on the folder (when no other `RunDir` of this process holds it too);
        also done when the object is garbage-collected or the process ends."""
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.users -= 1
            if lock.users <= 0:
                for key, held in list(_HELD.items()):
                    if held is lock:
                        del _HELD[key]
                lock.release()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # at interpreter exit the modules may be gone; the kernel frees the lock then
            pass

    def _write(self) -> None:
        tmp = os.path.join(self.path, MANIFEST + ".tmp")
        if os.path.lexists(tmp):  # a crash's leftover, or a planted symlink: never written through
            os.remove(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as fp:
            json.dump({"command": self.command, "created": self.created}, fp, indent=1)
        os.replace(tmp, os.path.join(self.path, MANIFEST))  # a crash never leaves half a manifest


def check_run_dir(out: str, command: str, *, overwrite: bool, writes: tuple[str, ...] = ("*",),
                  keep: tuple[str, ...] = (), name: str = "out", flag: str | None = "--overwrite") -> RunDir:
    """Check, without touching the disk, that a ``command`` run may write its outputs into ``out``.

    Allowed: a folder that does not exist yet or is empty; with ``overwrite``, a folder holding an
    earlier run of the same ``command`` (its manifest), whose entries are then replaced, except
    ``keep`` (e.g. a cache the run checks itself). Refused (a `UsageError` naming ``name``): a file
    or a dangling symlink; an earlier run without ``overwrite``; a non-empty folder without a
    manifest of ``command``; a manifest entry that is not a relative path inside ``out``
    (`manifest_entries`); an entry the earlier run did not create whose name matches ``writes``
    (glob patterns of the names the run may write; ``"*"``: all, so the folder must hold nothing
    else); an entry to replace that cannot be deleted (permissions), so that none is. ``flag``: the
    option that sets ``overwrite`` (None: the command always replaces its own earlier run).
    `RunDir.claim` locks the folder and repeats this check under the lock.
    """
    return RunDir(out, command, overwrite=overwrite, writes=tuple(writes), keep=tuple(keep), name=name,
                  flag=flag).check()
