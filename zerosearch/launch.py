"""ZeroSearch-style KEY VALUE front door: ``train_grpo.sh KEY VALUE ... [-- hydra overrides]``.

Each KEY maps onto a config key; a KEY not given keeps the recipe's value from ``configs/``.
"""

import os
import sys
from collections.abc import Callable

from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

USAGE = "usage: train_{algo}.sh [KEY VALUE]... [-- hydra.override=value ...]"


class UsageError(ValueError):
    pass


def _quoted(value: str) -> str:
    """A string value as a quoted Hydra literal, so commas, '=' or spaces in paths and names survive."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _path(value: str) -> str:
    """Local paths become absolute: Ray workers may run in another directory or on another node."""
    local = os.path.expanduser(value)
    return _quoted(os.path.abspath(local) if os.path.exists(local) else value)


def _list(value: str) -> str:
    return "[" + ",".join(v.strip() for v in value.split(",") if v.strip()) + "]"


def _servers(value: str) -> str:
    """IP (or several, comma-separated; host or host:port) of the simulation servers."""
    hosts = [h.strip() for h in value.split(",") if h.strip()]
    return "[" + ",".join(f"http://{h if ':' in h else h + ':6001'}/v1" for h in hosts) + "]"


def _critic_servers(value: str) -> str:
    """IP of the critic servers, like IP; the critic's port defaults to 6002."""
    hosts = [h.strip() for h in value.split(",") if h.strip()]
    return _servers(",".join(h if ":" in h else h + ":6002" for h in hosts))


def _flag(value: str) -> str:
    """true/false, also written 1/0."""
    flag = {"1": "true", "0": "false"}.get(value, value.lower())
    if flag not in ("true", "false"):
        raise UsageError(f"expected true or false (or 1/0), got {value!r}")
    return flag


# KEY -> (config keys it sets, how its value is written into them)
KEYS: dict[str, tuple[list[str], Callable[[str], str] | None]] = {
    "NUM_GPUS_PER_NODE": (["trainer.n_gpus_per_node"], str),
    "NNODES": (["trainer.nnodes"], str),
    "MODEL_PATH": (["actor_rollout_ref.model.path"], _path),
    "DATA_PATH": (["data.train_files", "data.val_files"], None),  # DIR/train.parquet and DIR/test.parquet, below
    "TOTAL_STEPS": (["trainer.total_training_steps"], str),
    "IP": (["search.simulator.server_urls"], _servers),
    "SEARCH_MODE": (["search.mode"], _quoted),
    # A served model name stays a name even when a folder of that name is here (ZeroSearch's download
    # step makes one); an in-process simulator resolves its path itself.
    "SIMULATION_LLM": (["search.simulator.model"], _quoted),
    "START_THRESHOLD": (["search.curriculum.start_threshold"], str),
    "END_THRESHOLD": (["search.curriculum.end_threshold"], str),
    "SEARCH_ENGINE": (["search.engine"], _quoted),
    "MAX_TURNS": (["agent.max_turns"], str),
    "TOPK": (["search.topk"], str),
    "EXPERIMENT_NAME": (["trainer.experiment_name"], _quoted),
    "LOGGER": (["trainer.logger"], _list),
    "CORPUS_PATH": (["search.corpus_path"], _path),
    "RETRIEVER_URL": (["search.retriever_url"], _quoted),
    "ROLLOUT": (["actor_rollout_ref.rollout.name"], _quoted),
    # the critic LLM (the Critictor)
    "RETROSPECTIVE_CRITIC": (["critictor.retrospective.enable"], _flag),
    "INTERACTIVE_CRITIC": (["critictor.interactive.enable"], _flag),
    "CRITIC_BACKEND": (["critictor.backend"], _quoted),
    "RULE_JUDGE": (["critictor.rule_judge"], _quoted),
    "CRITIC_LLM": (["critictor.model"], _quoted),
    "CRITIC_IP": (["critictor.server_urls"], _critic_servers),
    "TURN_REWARD_COEF": (["critictor.turn_reward_coef"], str),
    "CRITIQUE_PROBABILITY": (["critictor.interactive.probability"], str),
    "DRY_RUN": (["trainer.dry_run"], _flag),
}


# Evaluation (scripts/eval.sh): KEY -> an argument of zerosearch.eval, or a config key.
EVAL_KEYS: dict[str, str] = {
    "MODEL_PATH": "--model",
    "DATA_PATH": "--data",  # a test parquet, or a folder holding test.parquet
    "SEARCH_ENGINE": "--engine",
    "OUT_DIR": "--out",
    "BATCH_SIZE": "--batch-size",
    "MAX_TURNS": "agent.max_turns",
    "TOPK": "search.topk",
    "CORPUS_PATH": "search.corpus_path",
    "RETRIEVER_URL": "search.retriever_url",
    "ROLLOUT": "actor_rollout_ref.rollout.name",
}


def split_key_values(args: list[str], valid: dict) -> tuple[dict[str, str], list[str]]:
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
    pairs, passthrough = split_key_values(args, KEYS)
    overrides = []
    for key, value in pairs.items():
        if key == "DATA_PATH":
            base = os.path.abspath(os.path.expanduser(value))
            overrides += [
                f"data.train_files={_quoted(os.path.join(base, 'train.parquet'))}",
                f"data.val_files={_quoted(os.path.join(base, 'test.parquet'))}",
            ]
        else:
            targets, write = KEYS[key]
            assert write is not None  # only DATA_PATH, handled above, has no writer
            overrides += [f"{target}={write(value)}" for target in targets]
    return overrides, passthrough


def eval_arguments(args: list[str]) -> list[str]:
    """Evaluation KEY VALUE arguments -> the command line of ``python -m zerosearch.eval``."""
    pairs, passthrough = split_key_values(args, EVAL_KEYS)
    for required in ("MODEL_PATH", "DATA_PATH", "OUT_DIR"):
        if required not in pairs:
            raise UsageError(f"key {required} is required")
    if os.path.isdir(pairs["DATA_PATH"]):
        pairs["DATA_PATH"] = os.path.join(pairs["DATA_PATH"], "test.parquet")
    flags = [
        part for key, value in pairs.items() if EVAL_KEYS[key].startswith("--") for part in (EVAL_KEYS[key], value)
    ]
    overrides = [
        f"{EVAL_KEYS[key]}={_quoted(value) if key in ('CORPUS_PATH', 'RETRIEVER_URL') else value}"
        for key, value in pairs.items()
        if not EVAL_KEYS[key].startswith("--")
    ]
    return flags + overrides + passthrough


def describe_keys(config) -> str:
    """The valid keys with the config key each sets and the recipe's current value."""
    lines = []
    for key, (targets, _) in KEYS.items():
        values = ", ".join(f"{t}={OmegaConf.select(OmegaConf.structured(config), t)}" for t in targets)
        lines.append(f"  {key:<18} {values}")
    return "\n".join(lines)


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
                f"valid keys: {' '.join(EVAL_KEYS)}",
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
