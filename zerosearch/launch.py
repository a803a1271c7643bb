"""ZeroSearch-style KEY VALUE front door: ``train_grpo.sh KEY VALUE ... [-- hydra overrides]``.

Each KEY maps onto a config key; a KEY not given keeps the recipe's value from ``configs/``.
"""

import sys

from omegaconf import OmegaConf

USAGE = "usage: train_{algo}.sh [KEY VALUE]... [-- hydra.override=value ...]"


def _list(value: str) -> str:
    return "[" + ",".join(v.strip() for v in value.split(",") if v.strip()) + "]"


def _servers(value: str) -> str:
    """IP (or several, comma-separated; host or host:port) of the simulation servers."""
    hosts = [h.strip() for h in value.split(",") if h.strip()]
    return "[" + ",".join(f"http://{h if ':' in h else h + ':6001'}/v1" for h in hosts) + "]"


# KEY -> (config keys it sets, how its value is written into them)
KEYS = {
    "NUM_GPUS_PER_NODE": (["trainer.n_gpus_per_node"], str),
    "NNODES": (["trainer.nnodes"], str),
    "MODEL_PATH": (["actor_rollout_ref.model.path"], str),
    "DATA_PATH": (["data.train_files", "data.val_files"], None),  # DIR/train.parquet and DIR/test.parquet
    "TOTAL_STEPS": (["trainer.total_training_steps"], str),
    "IP": (["search.simulator.server_urls"], _servers),
    "SEARCH_MODE": (["search.mode"], str),
    "SIMULATION_LLM": (["search.simulator.model"], str),
    "START_THRESHOLD": (["search.curriculum.start_threshold"], str),
    "END_THRESHOLD": (["search.curriculum.end_threshold"], str),
    "SEARCH_ENGINE": (["search.engine"], str),
    "MAX_TURNS": (["agent.max_turns"], str),
    "TOPK": (["search.topk"], str),
    "EXPERIMENT_NAME": (["trainer.experiment_name"], str),
    "LOGGER": (["trainer.logger"], _list),
}


class UsageError(ValueError):
    pass


def parse_key_values(args: list[str]) -> tuple[list[str], list[str]]:
    """Splits ``KEY VALUE ... -- overrides`` into Hydra overrides; raises UsageError naming the
    offending argument."""
    if "--" in args:
        cut = args.index("--")
        args, passthrough = args[:cut], args[cut + 1:]
    else:
        passthrough = []
    overrides = []
    seen = set()
    i = 0
    while i < len(args):
        key = args[i]
        if key not in KEYS:
            raise UsageError(f"unknown key {key!r}")
        if i + 1 >= len(args) or args[i + 1] in KEYS or args[i + 1] == "":
            raise UsageError(f"key {key} has no value")
        if key in seen:
            raise UsageError(f"key {key} is given twice")
        seen.add(key)
        value = args[i + 1]
        if key == "DATA_PATH":
            base = value.rstrip("/")
            overrides += [f"data.train_files={base}/train.parquet", f"data.val_files={base}/test.parquet"]
        else:
            targets, write = KEYS[key]
            overrides += [f"{target}={write(value)}" for target in targets]
        i += 2
    return overrides, passthrough


def describe_keys(config) -> str:
    """The valid keys with the config key each sets and the recipe's current value."""
    lines = []
    for key, (targets, _) in KEYS.items():
        values = ", ".join(f"{t}={OmegaConf.select(OmegaConf.structured(config), t)}" for t in targets)
        lines.append(f"  {key:<18} {values}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("grpo", "ppo", "reinforce"):
        print("usage: python -m zerosearch.launch {grpo,ppo,reinforce} [KEY VALUE]... [-- overrides]", file=sys.stderr)
        return 2
    algo, rest = argv[0], argv[1:]
    from zerosearch.train import load_config, train

    try:
        overrides, passthrough = parse_key_values(rest)
    except UsageError as e:
        print(f"train_{algo}.sh: {e}\n{USAGE.format(algo=algo)}\nvalid keys (config key = recipe value):\n"
              f"{describe_keys(load_config(f'zerosearch_{algo}'))}", file=sys.stderr)
        return 2
    train(load_config(f"zerosearch_{algo}", overrides + passthrough))
    return 0


if __name__ == "__main__":
    sys.exit(main())
