"""Every file dnarch writes goes through ``atomic_path``: written under a temporary name beside it and
renamed into place, so a crash, a kill or a full disk leaves the previous file whole, and the
temporary is removed when the write fails. The temporary name holds the process id (two processes,
e.g. two torchrun ranks filling one data cache, never share one) and keeps the file's suffix (NumPy's
``savez`` appends ``.npz`` to a name without it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``path``'s new contents to; renamed onto ``path`` when the block
    ends, removed if it raises (Ctrl-C included)."""
    target = Path(path)
    tmp = target.with_name(f"{target.stem}.{os.getpid()}.tmp{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as err:
        if err.filename is not None and os.fsdecode(err.filename) == str(tmp):
            err.filename = str(target)  # name the file the user knows, not the temporary
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (``atomic_path``)."""
    atomic_write_bytes(path, text.encode())
