"""The config reference in ``docs/cli.md``, written from the config dataclasses' docstrings.

Each section's docstring lists its fields under ``Attributes:``; ``field_docs`` reads them, and
``reference`` turns every section into a table of key, type, default and meaning. ``python -m
dnarch.config_doc`` rewrites the block between the two markers in ``docs/cli.md``;
``tests/test_config_doc.py`` fails when the file and the docstrings disagree, so the page cannot
drift from the code.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path

from dnarch.config import RunConfig

START = "<!-- config reference: written by `python -m dnarch.config_doc`; do not edit by hand -->"
END = "<!-- end of config reference -->"


def field_docs(cls: type) -> dict[str, str]:
    """``{field: description}`` from the ``Attributes:`` section of ``cls``'s docstring (Google
    style: an entry ``name: text`` indented once, its continuation lines twice), in one line each."""
    doc = inspect.getdoc(cls) or ""
    if "Attributes:" not in doc:
        return {}
    out: dict[str, str] = {}
    name = None
    for line in doc.split("Attributes:", 1)[1].splitlines():
        entry = re.match(r"^ {4}(\w+): (.*)$", line)
        if entry:
            name = entry.group(1)
            out[name] = entry.group(2).strip()
        elif line.startswith(" " * 8) and name is not None:
            out[name] += " " + line.strip()
        elif line.strip():
            name = None  # text after the section
    return out


def summary(cls: type) -> str:
    """The docstring's first paragraph, on one line."""
    doc = inspect.getdoc(cls) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def sections() -> list[tuple[str, type]]:
    """(name, dataclass) of each config section, in ``RunConfig``'s order."""
    hints = typing.get_type_hints(RunConfig)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(RunConfig)]


def _type_name(typ: object) -> str:
    text = getattr(typ, "__name__", None) if not typing.get_args(typ) else None
    return text or str(typ).replace("typing.", "").replace("NoneType", "None").replace(
        " | ", " or "
    )


def _shown(default: object) -> str:
    """A default as the command line writes it: true/false, none, numbers and words as they are."""
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    return "''" if default == "" else str(default)


def reference() -> str:
    """The markdown reference of every config key, between ``START`` and ``END``."""
    lines = [START, ""]
    for name, cls in sections():
        docs, hints = field_docs(cls), typing.get_type_hints(cls)
        lines += [f"**`{name}`**: {summary(cls).replace('``', '`')}", ""]
        lines += ["| key | type | default | what |", "|---|---|---|---|"]
        for f in dataclasses.fields(cls):
            what = docs[f.name].replace("*", "\\*").replace("|", "\\|")
            lines.append(
                f"| `{name}.{f.name}` | {_type_name(hints[f.name])} | `{_shown(f.default)}` "
                f"| {what} |"
            )
        lines.append("")
    return "\n".join([*lines, END])


def rewrite(path: Path) -> bool:
    """Replace the block between the markers in ``path`` with ``reference()``. Returns whether the
    file changed."""
    text = path.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{path}: no config reference markers ({START!r} ... {END!r})")
    head, rest = text.split(START, 1)
    new = head + reference() + rest.split(END, 1)[1]
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: list[str] | None = None) -> None:
    """Rewrite the config reference of ``docs/cli.md`` (or the file given)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else Path(__file__).resolve().parent.parent / "docs" / "cli.md"
    print(f"{path}: {'rewritten' if rewrite(path) else 'up to date'}")


if __name__ == "__main__":
    main()
