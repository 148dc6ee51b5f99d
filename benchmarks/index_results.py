"""Write ``benchmarks/results/README.md``: every published result, the claims that cite it (the
document and section) and the command that made it (its first "Made by" command line).

Usage: ``python benchmarks/index_results.py`` (after adding or citing a result). A result no
document cites is listed at the end: cite it or remove it.

Its code's commit: the commits the .md names (every script records them now), or for files written
before they did, the git commit that last wrote the file (its runs were made with the code up to it).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def citations(stem: str) -> list[str]:
    """'document, section' for every section of DOCS that names ``stem``."""
    # named as a file (stem.md, .json, .png), in backticks (`stem`) or as a table's source cell
    pattern = re.compile(r"(?<![\w-])" + re.escape(stem) + r"(?=\.(?:md|json|png)\b|`|\s*\|)")
    found = []
    for doc in DOCS:
        section = ""
        for line in doc.read_text().splitlines():
            if line.startswith("#"):
                section = line.lstrip("#").strip()
            elif pattern.search(line):
                where = (
                    f"{doc.relative_to(ROOT)}, {section}" if section else str(doc.relative_to(ROOT))
                )
                if where not in found:
                    found.append(where)
    return found


def command(stem: str) -> str:
    """The first command recorded in the result's .md (or '-')."""
    md = RESULTS / f"{stem}.md"
    if not md.exists():
        return "-"
    for line in md.read_text().splitlines()[:12]:
        hit = re.search(r"`((?:python|dnarch|bash|torchrun)[^`]*)`", line)
        if hit:
            return f"`{hit.group(1)}`"
    return "-"


def commits(stem: str) -> str:
    """The commits the result's .md names, or 'written in H' (the last git commit that changed its
    files), or '-' outside a git checkout."""
    md = RESULTS / f"{stem}.md"
    if md.exists():
        head = "\n".join(md.read_text().splitlines()[:15])
        named = re.search(r"\bcommits? ((?:[0-9a-f]{7,40}(?:\+dirty)?(?:, )?)+)", head)
        if named:
            return named.group(1).rstrip(", ")
    files = [str(p.relative_to(ROOT)) for p in sorted(RESULTS.glob(f"{stem}.*"))]
    try:
        done = subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", *files],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "-"
    last = done.stdout.strip() if done.returncode == 0 else ""
    return f"written in {last}" if last else "-"


def main() -> None:
    stems = sorted({p.name.split(".")[0] for p in RESULTS.iterdir() if p.name != "README.md"})
    rows, orphans = [], []
    for stem in stems:
        files = ", ".join(sorted(p.name for p in RESULTS.glob(f"{stem}.*")))
        cited = citations(stem)
        if not cited:
            orphans.append(files)
            continue
        rows.append(f"| {files} | {'; '.join(cited)} | {command(stem)} | {commits(stem)} |")
    lines = [
        "# Published results",
        "",
        "Each file, where it is cited, the first command that made it (the .md holds every",
        "command) and its code's commit: the commits the .md names, or for files written before",
        "the scripts recorded them, the commit that last wrote the file (its runs were made with",
        "the code up to it). Written by `python benchmarks/index_results.py`.",
        "",
        "| files | cited in | made by | commit |",
        "|---|---|---|---|",
        *rows,
    ]
    if orphans:
        lines += ["", "Cited nowhere (cite or remove):", "", *[f"- {o}" for o in orphans]]
    (RESULTS / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
