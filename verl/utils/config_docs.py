"""README's key tables, rendered from the help of the config dataclasses so that they cannot drift.

    python -m verl.utils.config_docs README.md          # rewrite the tables in place
    python -m verl.utils.config_docs README.md --check  # exit 1 if any table is stale

A table lives between ``<!-- config-table module:Schema section -->`` and ``<!-- end config-table -->``;
``section`` is a top-level key of the schema (``data``, ``trainer``, ...) or ``all``. Where
``module:name`` is a function rather than a schema, the table is ``name(section)``: a front door's
key table, say, written from the fields that declare a ``key``.
"""

import argparse
import importlib
import re
import sys
from typing import Any

from verl.utils.config import choices_of, leaf_fields

TABLE = re.compile(r"(<!-- config-table (\S+):(\S+) (\S+) -->\n)(.*?)(<!-- end config-table -->)", re.DOTALL)


def value_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(value_text(v) for v in value) + "]"
    return str(value)


def render_table(schema: type, section: str) -> str:
    """A markdown table of every leaf key under ``section`` of ``schema``: key, default, help."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, f, default in leaf_fields(schema()):
        if section != "all" and not key.startswith(section + "."):
            continue
        text = f.metadata.get("help", "")
        choices = choices_of(f)
        if choices and not all(str(c) in text for c in choices):
            text += f" One of: {', '.join(map(str, choices))}."
        escaped = text.replace("|", "\\|")
        lines.append(f"| `{key}` | `{value_text(default)}` | {escaped} |")
    return "\n".join(lines) + "\n"


def render_document(text: str) -> str:
    def table(match: re.Match[str]) -> str:
        opening, module, name, section, _, closing = match.groups()
        target = getattr(importlib.import_module(module), name)
        return opening + (render_table(target, section) if isinstance(target, type) else target(section)) + closing

    return TABLE.sub(table, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl.utils.config_docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="a markdown file with config-table markers, e.g. README.md")
    parser.add_argument("--check", action="store_true", help="report stale tables instead of rewriting them")
    args = parser.parse_args(argv)
    with open(args.path, encoding="utf-8") as f:
        text = f.read()
    rendered = render_document(text)
    if args.check:
        if rendered != text:
            print(f"{args.path}: config tables are stale; run python -m verl.utils.config_docs {args.path}")
            return 1
        return 0
    with open(args.path, "w", encoding="utf-8") as f:
        f.write(rendered)
    return 0


if __name__ == "__main__":
    sys.exit(main())
