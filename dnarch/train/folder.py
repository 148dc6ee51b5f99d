"""A run folder belongs to one run: which folders ``--out`` may take, and an exclusive lock.

Rules (``check_out_dir``): a new or empty folder is taken; a folder holding a dnarch run that saved
a checkpoint or finished is refused unless ``overwrite``; a run stopped before its first checkpoint
has nothing to resume and is replaced (the run's own files are removed first, nobody else's); any
other non-empty folder is refused, whatever ``overwrite`` says. A run is recognised by its
``config.json`` carrying the ``resolved`` section dnarch writes.

``RunLock`` is a lock file (``.dnarch.lock``, holding the owner's host and pid) created atomically
(``O_CREAT | O_EXCL``) before a run writes anything and removed when it ends, so a second process on
the same folder is refused. A lock whose process is gone on this host (killed) is stale and taken over.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from types import TracebackType

LOCK = ".dnarch.lock"
# what a training run writes into its folder (exports and fine-tunes add more, kept by --overwrite)
RUN_FILES = (
    "config.json", "checkpoint.pt", "metrics.csv", "summary.json", "architecture.json", "model.pt",
    "examples.npz", "report", "tensorboard",
)  # fmt: skip
_IGNORED = {LOCK, ".write_test"}


class FolderError(ValueError):
    """A run folder that cannot be used as asked; the message says why and what to do."""


def is_run(path: Path) -> bool:
    """Whether ``path`` holds a dnarch run (its config.json has the ``resolved`` section)."""
    try:
        saved = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and isinstance(saved.get("resolved"), dict)


def check_out_dir(out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Create ``out`` for a new run, or refuse it (``FolderError``) by the rules above."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise FolderError(f"output path {str(path)!r} exists and is not a folder")
    entries = {p.name for p in path.iterdir()} - _IGNORED if path.is_dir() else set()
    if entries:
        if not is_run(path):
            raise FolderError(
                f"{path} is not empty and does not hold a dnarch run; choose a new or empty --out"
            )
        if not overwrite and not replaced_by_default(path):
            if (path / "summary.json").exists():
                raise FolderError(
                    f"{path} already holds a finished run; choose another --out (or add "
                    "--overwrite to replace it)"
                )
            raise FolderError(
                f"{path} holds an unfinished run; continue it with: dnarch train --resume {path} "
                "(or add --overwrite to start a new run there)"
            )
    probe = path / ".write_test"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise FolderError(f"cannot write to output folder {path}: {err.strerror or err}") from err
    return path


def replaced_by_default(path: Path) -> bool:
    """Whether a new run replaces the run in ``path`` without ``overwrite``: it saved no epoch."""
    return not (path / "checkpoint.pt").exists() and not (path / "summary.json").exists()


def clear_run(path: Path) -> None:
    """Remove the files a training run writes (``RUN_FILES``) from ``path``; nothing else."""
    for name in RUN_FILES:
        target = path / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)


def _owner() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _alive(owner: str) -> bool | None:
    """Whether the lock's process runs: True/False on this host, None where it cannot be told."""
    host, _, pid = owner.rpartition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """Exclusive use of a run folder while a run trains and writes it (a context manager).

    Entering creates ``LOCK`` atomically; if it exists and its process still runs, or runs on
    another host, ``FolderError``; if its process is gone, the stale lock is replaced. Exiting
    removes it (only if it is still this process's).
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.path = Path(folder) / LOCK
        self.owner = _owner()

    def __enter__(self) -> RunLock:
        for _ in range(2):  # a stale lock removed once, then taken
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = self.path.read_text().strip()
                except OSError:
                    holder = ""
                if holder == self.owner:  # this process holds it already
                    return self
                if _alive(holder) is False:  # killed: a stale lock
                    self.path.unlink(missing_ok=True)
                    continue
                who = f"pid {holder.rpartition(' ')[2]}" if holder else "another process"
                raise FolderError(
                    f"{self.path.parent} is in use by another dnarch run ({who} on "
                    f"{holder.rpartition(' ')[0] or 'an unknown host'}); if no such run is going, "
                    f"delete {self.path}"
                ) from None
            except OSError as err:
                raise FolderError(
                    f"cannot lock run folder {self.path.parent}: {err.strerror or err}"
                ) from err
            with os.fdopen(fd, "w") as f:
                f.write(self.owner)
            return self
        raise FolderError(f"cannot lock run folder {self.path.parent}: the lock keeps coming back")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        err: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.path.read_text().strip() == self.owner:
                self.path.unlink()
        except OSError:
            pass
