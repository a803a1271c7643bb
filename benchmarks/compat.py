"""Peers' launch scripts against this project: ten real scripts' overrides (ZeroSearch's grpo/ppo/
reinforce, Search-R1's ppo/grpo, five of verl's examples), recorded from the scripts' own text in
``benchmarks/compat_scripts/``, each run through the dry run as written.

    python benchmarks/compat.py [--only NAME] [--verbose]

Data files and model folders are what a user's machine holds: every data path becomes a parquet
file of 4096 rows this script writes (GSM8K-style rows for verl's scripts, QA rows in ZeroSearch's
layout for the search agents' and verl's search example), every model path a tiny model it builds;
a SerpAPI key variable is set for the scripts that validate on Google. Nothing else is changed.

Each script runs as ``python -m verl.trainer.main_ppo <overrides> trainer.dry_run=true``, its own
command; where that refuses it for the search agent's keys, as ``python -m zerosearch.train
--config-name zerosearch_<algorithm>`` (what the refusal names, with the recipe of the script's
estimator). A row counts the script's keys: taken as they are, renamed or converted, of no
effect here, refused; and the dry run's result with its message. The last line is a JSON object
``{"scripts": 10, "pass": k, ...}``.
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import pandas as pd

from verl.config import PPOConfig
from verl.config.compat import PeerKeyError, schema_keys, split_override, translate
from verl.config.peer_keys import peer_entry
from verl.utils.tiny_model import build_tiny_model
from zerosearch.config import ZeroSearchConfig

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(HERE, "compat_scripts")
ROWS = 4096  # the largest train_batch_size among the scripts
DATA_KEYS = ("data.train_files", "data.val_files")
MODEL_KEYS = ("actor_rollout_ref.model.path", "critic.model.path")
SEARCH_AGENT_REFUSAL = "a search agent's key"


def read_script(path: str) -> list[str]:
    with open(path) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def write_data(folder: str) -> dict[str, str]:
    """One parquet file per kind of row: GSM8K-style, and QA in ZeroSearch's layout."""
    gsm8k = [
        {
            "prompt": [{"role": "user", "content": f"What is {i} + 1? End with #### and the number."}],
            "data_source": "openai/gsm8k",
            "reward_model": {"style": "rule", "ground_truth": str(i + 1)},
            "extra_info": {"index": i},
        }
        for i in range(ROWS)
    ]
    qa = [
        {
            "prompt": [{"role": "user", "content": f"Who founded company {i}?"}],
            "data_source": "nq",
            "question": f"Who founded company {i}?",
            "golden_answers": [f"founder {i}"],
            "reward_model": {"style": "rule", "ground_truth": {"target": [f"founder {i}"]}},
            "extra_info": {"index": i, "question": f"Who founded company {i}?"},
        }
        for i in range(ROWS)
    ]
    files = {"gsm8k": os.path.join(folder, "gsm8k.parquet"), "qa": os.path.join(folder, "qa.parquet")}
    pd.DataFrame(gsm8k).to_parquet(files["gsm8k"])
    pd.DataFrame(qa).to_parquet(files["qa"])
    return files


def localised(overrides: list[str], data: str, model: str, out: str) -> list[str]:
    """The script's overrides with its data and model paths pointing at this machine's."""
    result = []
    for arg in overrides:
        prefix, key, value = split_override(arg)
        if key in DATA_KEYS:
            value = f"[{data}]" if value and value.startswith("[") else data
        elif key in MODEL_KEYS:
            value = model
        elif key == "trainer.default_local_dir":
            value = out
        result.append(f"{prefix}{key}={value}" if value is not None else arg)
    return result


def classify(overrides: list[str], schema: type) -> dict[str, int]:
    """How this config reads the script's keys (no process started): a key of this config; a peer's
    key renamed here; a peer's key of no effect here (keys the table refuses are in none)."""
    known = schema_keys(schema)
    try:
        notes = translate(overrides, schema).notes
        refused = set()
    except PeerKeyError as e:
        notes, refused = [], {problem.split(":")[0].split("=")[0] for problem in e.problems}
    converted = {note.split("=")[0] for note in notes if " -> " in note}  # a key of this config read otherwise
    counts = {"keys": len(overrides), "same": 0, "renamed": 0, "no_effect": 0}
    for arg in overrides:
        key = split_override(arg)[1]
        found = peer_entry(key)
        if key in refused:
            continue
        if key in known:
            counts["renamed" if key in converted else "same"] += 1
        elif found is not None:
            counts["renamed" if found[0].new else "no_effect"] += 1
    return counts


def recipe_of(overrides: list[str]) -> str:
    """The search agent's recipe of the script's algorithm (the keys it leaves unset take the recipe's values)."""
    estimator = next((v for _, k, v in map(split_override, overrides) if k == "algorithm.adv_estimator"), "gae")
    return {"grpo": "zerosearch_grpo", "reinforce": "zerosearch_reinforce"}.get(estimator or "", "zerosearch_ppo")


def dry_run(entry: str, overrides: list[str], env: dict[str, str]) -> tuple[bool, str]:
    proc = subprocess.run(
        [sys.executable, "-m", entry, *overrides, "trainer.dry_run=true"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    passed = proc.returncode == 0 and "dry run: every check passed" in proc.stdout
    error = "" if passed else _error_of(proc.stderr)
    return passed, error


def refused_settings(error: str) -> list[str]:
    """The ``key=value`` (or key) each problem of a refusal starts with: one line each, or the
    message itself when it names one."""
    lines = error.splitlines() or ["(no message)"]
    problems = [line.strip() for line in lines[1:] if line.startswith("  ")] or [lines[0].split(": ", 1)[-1]]
    return [problem.split(":")[0] for problem in problems]


def _error_of(stderr: str) -> str:
    """The refusal as printed: from the exception's line to the end."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].split(":")[0].endswith(("Error", "Exception")):
            return "\n".join(lines[i:])
    return "\n".join(lines[-3:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="one script's name, e.g. searchr1_ppo")
    parser.add_argument("--verbose", action="store_true", help="print each refusal in full")
    args = parser.parse_args()
    paths = sorted(glob.glob(os.path.join(SCRIPTS, f"{args.only or '*'}.txt")))
    with tempfile.TemporaryDirectory() as folder:
        data = write_data(folder)
        # heads of 32 dimensions, which vLLM's CPU attention serves
        # Heads of 32 (vLLM's CPU attention), as many as the largest engine group splits (4; verl's 7B models have 28).
        model = str(build_tiny_model(os.path.join(folder, "model"), hidden_size=128, num_heads=4, num_kv_heads=4))
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "SERPAPI_API_KEY": "set-for-the-dry-run",  # the scripts validate on Google
            "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]),
        }
        rows = []
        for path in paths:
            name = os.path.basename(path)[: -len(".txt")]
            started = time.perf_counter()
            overrides = read_script(path)
            searches = name.startswith(("zerosearch", "searchr1")) or "search" in name
            local = localised(overrides, data["qa" if searches else "gsm8k"], model, os.path.join(folder, name))
            entry, schema = "verl.trainer.main_ppo", PPOConfig
            passed, error = dry_run(entry, local, env)
            if not passed and SEARCH_AGENT_REFUSAL in error:
                entry, schema = "zerosearch.train", ZeroSearchConfig
                local = ["--config-name", recipe_of(overrides), *local]
                passed, error = dry_run(entry, local, env)
            row = {"script": name, "entry": entry, **classify(overrides, schema), "pass": passed, "error": error}
            row["refused"] = 0 if passed else len(refused_settings(error))
            row["seconds"] = round(time.perf_counter() - started, 1)
            rows.append(row)
            print(f"{name}: {'pass' if passed else 'refused'} via {entry} ({row['seconds']} s)", file=sys.stderr)
    print("| script | keys | as they are | renamed | no effect | refused | entry | dry run |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        named = [k if len(k) < 80 else k.split("=")[0] + "=..." for k in refused_settings(row["error"])]
        outcome = "pass" if row["pass"] else "refused: " + ", ".join(f"`{k}`" for k in named)
        print(
            f"| {row['script']} | {row['keys']} | {row['same']} | {row['renamed']} | {row['no_effect']} | "
            f"{row['refused']} | {row['entry']} | {outcome} |"
        )
    if args.verbose:
        for row in rows:
            if row["error"]:
                print(f"\n{row['script']}:\n{row['error']}")
    passed = sum(row["pass"] for row in rows)
    print(json.dumps({"scripts": len(rows), "pass": passed}))


if __name__ == "__main__":
    main()
