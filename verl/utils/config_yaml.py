"""Config YAML files written from the typed dataclasses, which stay the one source of defaults.

    python -m verl.utils.config_yaml FILE ...           # rewrite the files (`make configs`)
    python -m verl.utils.config_yaml FILE ... --check   # exit 1 if one is stale (a test runs it)

A generated file opens with ``# Generated from module:Schema (schema name) ...``: the dataclass it is
written from and the name it is stored under in Hydra's ConfigStore, which the file composes onto.
The comment lines after that first one are kept; everything below them is the schema's defaults.
"""

import argparse
import importlib
import re
import sys

from omegaconf import OmegaConf

MARKER = re.compile(r"# Generated from (\S+):(\S+) \((\S+)\)")


def render(text: str, path: str = "<text>") -> str:
    """``text`` (a generated file's content) with its body written anew from its schema."""
    lines = text.splitlines(keepends=True)
    match = MARKER.match(lines[0]) if lines else None
    if match is None:
        raise ValueError(f"{path}: the first line must be '# Generated from module:Schema (schema name) ...'")
    module, name, schema_name = match.groups()
    schema = getattr(importlib.import_module(module), name)
    comments = []
    for line in lines:
        if not line.startswith("#"):
            break
        comments.append(line)
    defaults = f"defaults:\n  - {schema_name}\n  - _self_\n\n"
    return "".join(comments) + defaults + OmegaConf.to_yaml(OmegaConf.structured(schema))


def stale(paths: list[str]) -> list[str]:
    """The files among ``paths`` whose content is not what ``render`` writes."""
    out = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if render(text, path) != text:
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl.utils.config_yaml", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", help="generated config YAML files")
    parser.add_argument("--check", action="store_true", help="report stale files instead of rewriting them")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(args.paths)
        for path in outdated:
            print(f"{path}: stale; run make configs")
        return 1 if outdated else 0
    for path in args.paths:
        with open(path, encoding="utf-8") as f:
            text = render(f.read(), path)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
