"""The config reference in docs/cli.md is written from the config's docstrings and cannot drift."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from dnarch.cli import config_keys
from dnarch.config_doc import field_docs, reference, rewrite, sections

CLI_MD = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def test_every_config_field_is_documented_once() -> None:
    for name, cls in sections():
        fields = [f.name for f in dataclasses.fields(cls)]
        docs = field_docs(cls)
        assert sorted(docs) == sorted(fields), name  # nothing missing, nothing stale
        assert all(len(text) > 10 for text in docs.values()), name


def test_the_reference_lists_every_key_the_cli_takes() -> None:
    text = reference()
    for key in config_keys():
        assert f"| `{key}` |" in text


def test_docs_cli_md_holds_the_current_reference(tmp_path) -> None:
    copy = tmp_path / "cli.md"
    copy.write_text(CLI_MD.read_text())
    assert not rewrite(copy), "docs/cli.md is stale: run python -m dnarch.config_doc"


def test_field_docs_reads_continuation_lines_and_stops_after_the_section() -> None:
    @dataclasses.dataclass
    class Example:
        """Summary.

        Attributes:
            a: first line
                and its continuation.
            b: one line.

        Notes after the attributes.
        """

        a: int = 1
        b: str = "x"

    assert field_docs(Example) == {"a": "first line and its continuation.", "b": "one line."}
