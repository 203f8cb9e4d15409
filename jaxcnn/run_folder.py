"""Safe writing of run directories: one writer at a time, and nothing replaced before its successor has an epoch.

Every process that writes a run ``PARENT/NAME`` (a new training, ``--overwrite``, ``--resume``) first
takes an exclusive OS lock on ``PARENT/.NAME.lock``. The OS releases it when the process ends in any
way, SIGKILL included, so a lock is never stale; a second writer is refused with the holder's process
id. A new run is written into a hidden staging folder beside ``NAME`` and moved into place only once
its first epoch is saved, so a crash, Ctrl-C or NaN in epoch 1 leaves an old run (or nothing) exactly
as it was. Leftovers of a writer killed between the two renames are finished the next time the lock
is taken.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from types import TracebackType

from jaxcnn.errors import JaxcnnError

try:  # POSIX; on Windows the msvcrt branch below takes the same lock
    import fcntl
except ImportError:  # pragma: no cover - exercised only on Windows
    fcntl = None  # type: ignore[assignment]


RUN_FORMAT = "jaxcnn.run/1"
"""The format key of a run's ``config.json``."""


class RunError(JaxcnnError):
    """A run directory that cannot be created, resumed or loaded; the message says what to do."""


class RunBusyError(RunError):
    """Another process is writing the same run directory."""


def absolute(run_dir: Path) -> Path:
    """The run directory as an absolute path without ``.`` or ``..``, so ``--out .`` has a name and a parent."""
    return Path(os.path.abspath(run_dir))


def lock_path(run_dir: Path) -> Path:
    """Where the lock of ``run_dir`` lives: beside it, so it stays put while the run is staged or replaced."""
    run_dir = absolute(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


def _staging_prefix(run_dir: Path) -> str:
    return f".{run_dir.name}.staging-"


def _replaced_prefix(run_dir: Path) -> str:
    return f".{run_dir.name}.replaced-"


class RunLock:
    """An exclusive lock on one run directory, held by this process until :meth:`release` (or its exit)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = absolute(run_dir)
        self.path = lock_path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock, or raise RunBusyError naming the process that holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise RunError(
                f"{err.filename or self.path}: cannot write the run ({err.strerror}); choose a writable --out. "
                "Nothing that existed before was changed"
            ) from None
        if not _try_lock(fd):
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 1000).decode("utf-8", "replace").strip() or "a process that is just starting"
            os.close(fd)
            raise RunBusyError(
                f"{self.run_dir}: another jaxcnn process is writing this run ({holder}). Wait for it to finish or "
                "stop it, then try again; nothing was changed"
            )
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        holder = f"process {os.getpid()} on {socket.gethostname()}, since {started}: {' '.join(sys.argv)[:300]}"
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, holder.encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the lock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    import msvcrt  # pragma: no cover

    try:  # pragma: no cover
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError:  # pragma: no cover
        return False
    return True  # pragma: no cover


def finish_interrupted_writes(run_dir: Path) -> list[str]:
    """Tidy what a writer of ``run_dir`` killed mid-way left beside it; call only while holding its lock.

    A staging folder never became the run: it is removed. A replaced run whose successor is in place
    is removed; one whose successor never arrived (a kill between the two renames) is put back.
    Returns one line per action, for the user.
    """
    run_dir = absolute(run_dir)
    notes: list[str] = []
    if not run_dir.parent.is_dir():
        return notes
    for leftover in _beside(run_dir, _staging_prefix(run_dir)):
        shutil.rmtree(leftover, ignore_errors=True)
        notes.append(f"removed {leftover}, the unfinished first epoch of a run that was stopped")
    for leftover in _beside(run_dir, _replaced_prefix(run_dir)):
        if run_dir.exists():
            shutil.rmtree(leftover, ignore_errors=True)
            notes.append(f"removed {leftover}, a run already replaced by --overwrite")
        else:
            os.replace(leftover, run_dir)
            notes.append(f"put back {run_dir}: an --overwrite of it was stopped before the new run was in place")
    return notes


def _beside(run_dir: Path, prefix: str) -> list[Path]:
    """Entries next to ``run_dir`` whose names start with ``prefix`` (compared as text: a run may be named ``[a]``)."""
    return sorted(p for p in run_dir.parent.iterdir() if p.name.startswith(prefix))


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a jaxcnn run (or a run's staging folder): its ``config.json`` has the run format."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("format") == RUN_FORMAT


def enclosing_run(path: Path) -> Path | None:
    """The run folder that ``path`` is inside of (at any depth), or None."""
    for folder in absolute(path).parents:
        if is_run_folder(folder):
            return folder
    return None


def is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


class StagedRun:
    """A new run written in a hidden folder beside ``run_dir`` until :meth:`publish` moves it into place.

    Hold the run's lock for the whole life of this object.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = absolute(run_dir)
        self.staging = self.run_dir.parent / f"{_staging_prefix(self.run_dir)}{os.getpid()}"
        self.published = False

    def create(self) -> Path:
        """Create the (empty) staging folder and return it."""
        shutil.rmtree(self.staging, ignore_errors=True)
        self.staging.mkdir(parents=True)
        return self.staging

    def publish(self) -> None:
        """Move the staged run to ``run_dir``; an old run there is renamed aside first and deleted last."""
        replaced = None
        if self.run_dir.exists() and not is_empty_folder(self.run_dir):
            if not (self.run_dir / "config.json").is_file():
                self.published = True  # keep the staging folder: it is the only copy of the new run
                raise RunError(
                    f"{self.run_dir}: files that are not a jaxcnn run appeared there during training; they were "
                    f"left alone, and the new run is kept in {self.staging}"
                )
            replaced = self.run_dir.parent / f"{_replaced_prefix(self.run_dir)}{os.getpid()}"
            os.replace(self.run_dir, replaced)
        elif self.run_dir.exists():
            self.run_dir.rmdir()  # an empty folder the user made for the run
        os.replace(self.staging, self.run_dir)
        self.published = True
        if replaced is not None:
            shutil.rmtree(replaced, ignore_errors=True)

    def discard(self) -> None:
        """Remove the staging folder (the run never reached its first saved epoch)."""
        if not self.published:
            shutil.rmtree(self.staging, ignore_errors=True)
