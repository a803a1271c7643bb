"""ZeroSearch-style KEY VALUE front door: ``train_grpo.sh KEY VALUE ... [-- hydra overrides]``.

Each KEY maps onto a config key; a KEY not given keeps the recipe's value from ``configs/``.
"""

import dataclasses
import functools
import operator
import os
import sys
from collections.abc import Callable, Collection
from typing import Any

from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from verl.config.peer_keys import host_urls
from verl.utils.config import leaf_fields
from verl.utils.config_docs import value_text
from zerosearch.config import EvalArguments, ZeroSearchConfig

USAGE = "usage: train_{algo}.sh [KEY VALUE]... [-- hydra.override=value ...]"


class UsageError(ValueError):
    pass


def _quoted(value: str) -> str:
    """A string value as a quoted Hydra literal, so commas, '=' or spaces in paths and names survive."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _path(value: str) -> str:
    """a path; a local one is made absolute, since Ray workers may run in another directory or node."""
    local = os.path.expanduser(value)
    return _quoted(os.path.abspath(local) if os.path.exists(local) else value)


def _list(value: str) -> str:
    return "[" + ",".join(v.strip() for v in value.split(",") if v.strip()) + "]"


def _servers(value: str) -> str:
    """a host or host:port, or several comma-separated (used in turn), each written http://HOST:6001/v1."""
    return host_urls(value, 6001)


def _critic_servers(value: str) -> str:
    """as for IP, with port 6002 where none is given."""
    return host_urls(value, 6002)


def _flag(value: str) -> str:
    """true/false, also written 1/0."""
    flag = {"1": "true", "0": "false"}.get(value, value.lower())
    if flag not in ("true", "false"):
        raise UsageError(f"expected true or false (or 1/0), got {value!r}")
    return flag


# How a KEY's value is written into its config keys, where its field's type does not say.
WRITERS: dict[str, Callable[[str], str]] = {
    "MODEL_PATH": _path,
    "CORPUS_PATH": _path,
    "IP": _servers,
    "CRITIC_IP": _critic_servers,
}
# DATA_PATH is a folder; each of its config keys takes one file in it.
DATA_FILES = {"data.train_files": "train.parquet", "data.val_files": "test.parquet"}


@functools.cache
def training_keys() -> dict[str, list[tuple[str, Any]]]:
    """KEY -> (config key, default) of every field declared with ``key=KEY``, in the config's order."""
    keys: dict[str, list[tuple[str, Any]]] = {}
    for dotted, f, default in leaf_fields(ZeroSearchConfig):
        if f.metadata.get("key"):
            keys.setdefault(f.metadata["key"], []).append((dotted, default))
    return keys


def _written(key: str, target: str, default: Any, value: str) -> str:
    """``value`` of ``key`` as the Hydra literal of its config key ``target``."""
    if key == "DATA_PATH":
        return _quoted(os.path.join(os.path.abspath(os.path.expanduser(value)), DATA_FILES[target]))
    if key in WRITERS:
        return WRITERS[key](value)
    if isinstance(default, bool):
        return _flag(value)
    if isinstance(default, list):
        return _list(value)
    return _quoted(value) if isinstance(default, str) else value


def overrides_of(pairs: dict[str, str]) -> list[str]:
    """{KEY: VALUE} -> the Hydra overrides of the config keys each KEY sets."""
    return [
        f"{target}={_written(key, target, default, value)}"
        for key, value in pairs.items()
        for target, default in training_keys()[key]
    ]


# Evaluation (scripts/eval.sh): KEY -> an argument of zerosearch.eval, from its field's key=; its
# other keys are these training keys.
EVAL_ARGUMENTS = {
    f.metadata["key"]: "--" + f.name.replace("_", "-") for f in dataclasses.fields(EvalArguments) if f.metadata["key"]
}
EVAL_CONFIG_KEYS = ("MAX_TURNS", "TOPK", "CORPUS_PATH", "RETRIEVER_URL", "ROLLOUT")


def split_key_values(args: list[str], valid: Collection[str]) -> tuple[dict[str, str], list[str]]:
    """``KEY VALUE ... -- overrides`` -> ({KEY: VALUE}, overrides); raises UsageError naming the
    offending argument."""
    if "--" in args:
        cut = args.index("--")
        args, passthrough = args[:cut], args[cut + 1 :]
    else:
        passthrough = []
    pairs: dict[str, str] = {}
    i = 0
    while i < len(args):
        key = args[i]
        if key not in valid:
            raise UsageError(f"unknown key {key!r}")
        if i + 1 >= len(args) or args[i + 1] in valid or args[i + 1] == "":
            raise UsageError(f"key {key} has no value")
        if key in pairs:
            raise UsageError(f"key {key} is given twice")
        pairs[key] = args[i + 1]
        i += 2
    return pairs, passthrough


def parse_key_values(args: list[str]) -> tuple[list[str], list[str]]:
    """Training KEY VALUE arguments -> (Hydra overrides, pass-through overrides)."""
    pairs, passthrough = split_key_values(args, training_keys())
    return overrides_of(pairs), passthrough


def eval_arguments(args: list[str]) -> list[str]:
    """Evaluation KEY VALUE arguments -> the command line of ``python -m zerosearch.eval``."""
    pairs, passthrough = split_key_values(args, [*EVAL_ARGUMENTS, *EVAL_CONFIG_KEYS])
    for required in ("MODEL_PATH", "DATA_PATH", "OUT_DIR"):
        if required not in pairs:
            raise UsageError(f"key {required} is required")
    if os.path.isdir(pairs["DATA_PATH"]):
        pairs["DATA_PATH"] = os.path.join(pairs["DATA_PATH"], "test.parquet")
    flags = [part for key, value in pairs.items() if key in EVAL_ARGUMENTS for part in (EVAL_ARGUMENTS[key], value)]
    overrides = overrides_of({key: value for key, value in pairs.items() if key in EVAL_CONFIG_KEYS})
    return flags + overrides + passthrough


def describe_keys(config) -> str:
    """The valid keys with the config key each sets and the recipe's current value."""
    structured = OmegaConf.structured(config)
    lines = []
    for key, targets in training_keys().items():
        values = ", ".join(f"{t}={OmegaConf.select(structured, t)}" for t, _ in targets)
        lines.append(f"  {key:<22} {values}")
    return "\n".join(lines)


def key_table(recipe: str) -> str:
    """README's table of the training keys: what each sets, its field's help, and ``recipe``'s value."""
    from zerosearch.train import load_config

    config = load_config(recipe)
    helps = {dotted: f.metadata["help"] for dotted, f, _ in leaf_fields(ZeroSearchConfig)}
    lines = [f"| KEY | sets | meaning | `{recipe}` |", "|---|---|---|---|"]
    for key, targets in training_keys().items():
        meaning = helps[targets[0][0]] + (f" Value: {WRITERS[key].__doc__}" if key in WRITERS else "")
        if key == "DATA_PATH":  # one folder for two files: its fields' help speaks of one
            meaning = "A folder: its train.parquet is the training set, its test.parquet the validation set."
        sets = ", ".join(f"`{target}`" for target, _ in targets)
        value = ", ".join(f"`{value_text(operator.attrgetter(target)(config))}`" for target, _ in targets)
        lines.append(f"| `{key}` | {sets} | {meaning.replace('|', chr(92) + '|')} | {value} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("grpo", "ppo", "reinforce", "eval"):
        print(
            "usage: python -m zerosearch.launch {grpo,ppo,reinforce,eval} [KEY VALUE]... [-- overrides]",
            file=sys.stderr,
        )
        return 2
    algo, rest = argv[0], argv[1:]
    if algo == "eval":
        try:
            arguments = eval_arguments(rest)
        except UsageError as e:
            print(
                f"eval.sh: {e}\nusage: eval.sh MODEL_PATH m DATA_PATH d OUT_DIR o [KEY VALUE]... [-- overrides]\n"
                f"valid keys: {' '.join([*EVAL_ARGUMENTS, *EVAL_CONFIG_KEYS])}",
                file=sys.stderr,
            )
            return 2
        from zerosearch import eval as evaluation

        sys.argv = ["zerosearch.eval", *arguments]
        evaluation.main()
        return 0
    from zerosearch.train import load_config, train

    try:
        overrides, passthrough = parse_key_values(rest)
    except UsageError as e:
        print(
            f"train_{algo}.sh: {e}\n{USAGE.format(algo=algo)}\nvalid keys (config key = recipe value):\n"
            f"{describe_keys(load_config(f'zerosearch_{algo}'))}",
            file=sys.stderr,
        )
        return 2
    try:
        config = load_config(f"zerosearch_{algo}", overrides + passthrough)
    except ConfigCompositionException as e:
        print(f"train_{algo}.sh: {e}{': ' + str(e.__cause__) if e.__cause__ else ''}", file=sys.stderr)
        return 2
    train(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
