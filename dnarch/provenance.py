"""Which code made a result: the git commit of the checkout dnarch runs from."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit() -> str:
    """``git rev-parse --short HEAD`` of the checkout this package lives in, with ``+dirty`` if
    tracked files have changed; ``"unknown"`` outside a git checkout (an installed wheel)."""
    here = Path(__file__).resolve().parent

    def git(*words: str) -> str:
        try:
            done = subprocess.run(
                ["git", *words], cwd=here, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
