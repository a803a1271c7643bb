"""This trainer and Hugging Face TRL's GRPOTrainer side by side: the same model, prompts, reward and
batch shape, runs interleaved (ours, TRL, ours, TRL, ...) so that a busy machine slows both alike.

    python benchmarks/vs_trl.py --trl-python VENV/bin/python [--sizes S M] [--pairs 3] [--steps 12]
                                [--prompts 16] [--n 4] [--tokens 32] [--out DIR] [override ...]
    python benchmarks/vs_trl.py --install-trl VENV ...   # creates VENV with TRL and CPU torch first

Both run GRPO with temperature 1, lr 1e-5, no KL term, one optimizer step per batch of
prompts x n completions of up to --tokens new tokens, fp32, no gradient checkpointing; TRL with
num_iterations=1 and beta=0, this trainer with --workers worker processes (default 1, holding every
core) and any Hydra KEY=VALUE overrides given. The prompts and reward are the
digits example's (examples/digits). Models are random Qwen2s from ``verl.utils.tiny_model``:
S (0.56M parameters, vocab 1024) shows fixed overheads, M (26.8M, vocab 4096) compute.

Prints per size and system the median seconds per step over steps 2..N (min / median / max over
the runs), completions and generated tokens per second, the start-up (launch to the first step),
the time outside the steps (start-up and shut-down), the peak resident memory of the whole process
tree, and the ratio of this trainer's
completions/s to TRL's per interleaved pair (min / median / max).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "examples", "digits"))
sys.path.insert(0, HERE)

from rollout import SIZES, text_corpus  # noqa: E402
from train import write_data  # noqa: E402

from verl.utils.tiny_model import build_tiny_model  # noqa: E402

MODELS = {"S": SIZES["1m"], "M": SIZES["30m"]}
REWARD = os.path.join(REPO, "examples", "digits", "reward.py")


def tree_rss_bytes(root: int) -> int:
    """Resident memory of a process and all its descendants (Ray's raylet and workers included)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def timed_run(command: list[str], log_path: str, steps_path: str) -> tuple[float, float, float]:
    """Runs a command to completion; returns its wall seconds, the seconds until ``steps_path``
    (its per-step log) first had a line, and its peak process-tree RSS in GB."""
    peak = 0
    first_step: float | None = None
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        done = threading.Event()

        def watch():
            nonlocal peak, first_step
            while not done.wait(0.1):
                peak = max(peak, tree_rss_bytes(proc.pid))
                if first_step is None and os.path.exists(steps_path) and os.path.getsize(steps_path):
                    first_step = time.perf_counter() - start

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        code = proc.wait()
        done.set()
        watcher.join()
    if code:
        with open(log_path) as f:
            raise RuntimeError(f"{command[:3]} failed ({code}); the end of {log_path}:\n{f.read()[-4000:]}")
    if first_step is None:
        raise RuntimeError(f"{command[:3]} wrote no step to {steps_path}")
    return time.perf_counter() - start, first_step, peak / 1e9


def ours(model: str, data: str, out: str, args: argparse.Namespace) -> list[str]:
    rows = args.prompts * args.n
    return (
        [sys.executable, "-m", "verl.trainer.main_ppo"]
        + [
            f"data.train_files={data}",
            f"data.val_files={os.path.join(os.path.dirname(data), 'test.parquet')}",  # loaded, never used
            f"data.train_batch_size={args.prompts}",
            "data.max_prompt_length=48",
            f"data.max_response_length={args.tokens}",
            "data.shuffle=false",
            f"actor_rollout_ref.model.path={model}",
            f"actor_rollout_ref.actor.optim.lr={args.lr}",
            f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts}",
            f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={rows}",
            f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={rows}",
            f"actor_rollout_ref.rollout.n={args.n}",
            "algorithm.adv_estimator=grpo",
            f"custom_reward_function.path={REWARD}",
            f"trainer.device={args.device}",
            f"trainer.n_gpus_per_node={args.workers}",
            f"trainer.total_training_steps={args.steps}",
            "trainer.val_before_train=false",
            "trainer.test_freq=-1",
            "trainer.save_freq=-1",
            "trainer.logger=[file]",
            f"trainer.default_local_dir={out}",
        ]
        + args.overrides
    )


def trl(model: str, data: str, out: str, args: argparse.Namespace) -> list[str]:
    return [args.trl_python, os.path.join(HERE, "trl_grpo.py"), "--model", model, "--data", data] + [
        f"--reward={REWARD}",
        f"--out={out}",
        f"--prompts={args.prompts}",
        f"--n={args.n}",
        f"--tokens={args.tokens}",
        f"--steps={args.steps}",
        f"--lr={args.lr}",
    ]


def step_records(system: str, out: str) -> list[tuple[float, float]]:
    """(seconds, mean completion length) of every step."""
    if system == "ours":
        with open(os.path.join(out, "metrics.jsonl")) as f:
            lines = [json.loads(line) for line in f]
        return [(r["timing_s/step"], r["response_length/mean"]) for r in lines if r.get("step", 0) > 0]
    with open(out) as f:
        return [(r["seconds"], r["length"]) for r in map(json.loads, f)]


def run_once(system: str, size: str, model: str, data: str, work: str, run: int, args) -> dict:
    out = os.path.join(work, f"{size}-{system}-{run}")
    command = (ours if system == "ours" else trl)(model, data, out + (".jsonl" if system == "trl" else ""), args)
    steps_path = os.path.join(out, "metrics.jsonl") if system == "ours" else out + ".jsonl"
    wall, first_step, peak_gb = timed_run(command, out + ".log", steps_path)
    records = step_records(system, out if system == "ours" else out + ".jsonl")
    if len(records) != args.steps:
        raise RuntimeError(f"{system} logged {len(records)} steps, not {args.steps}; see {out}.log")
    seconds = statistics.median(s for s, _ in records[1:])  # step 1 pays one-time warm-up
    length = statistics.mean(n for _, n in records[1:])
    rows = args.prompts * args.n
    return {
        "s_per_step": seconds,
        "completions_per_s": rows / seconds,
        "tokens_per_s": rows * length / seconds,
        "mean_length": length,
        "startup_s": first_step - records[0][0],  # launch to the start of step 1
        "outside_steps_s": wall - sum(s for s, _ in records),
        "peak_rss_gb": peak_gb,
    }


def spread(values: list[float], digits: int = 3) -> str:
    return " / ".join(f"{v:.{digits}f}" for v in (min(values), statistics.median(values), max(values)))


def install_trl(venv: str) -> str:
    python = os.path.join(venv, "bin", "python")
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        # the same torch release as here first (pip then keeps it), then TRL with transformers and datasets
        subprocess.run([python, "-m", "pip", "install", "-q", "torch==2.13.0"], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "trl", "datasets"], check=True)
    return python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trl-python", help="python of a virtual environment with TRL installed")
    parser.add_argument("--install-trl", metavar="VENV", help="create VENV with TRL first (needs the package index)")
    parser.add_argument("--sizes", nargs="+", default=["S", "M"], choices=sorted(MODELS))
    parser.add_argument("--pairs", type=int, default=3, help="interleaved runs of each system per size")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4, help="completions per prompt")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per completion at most")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--workers", type=int, default=1, help="this trainer's worker processes (they share the CPUs)")
    parser.add_argument("--out", help="folder for models, data and run logs (default: a temporary one)")
    parser.add_argument("overrides", nargs="*", help="Hydra KEY=VALUE overrides for this trainer's runs")
    args = parser.parse_args()
    if args.install_trl:
        args.trl_python = install_trl(args.install_trl)
    if not args.trl_python:
        parser.error("give --trl-python or --install-trl")
    work = args.out or tempfile.mkdtemp(prefix="vs_trl_")
    train, _ = write_data(os.path.join(work, "data"), n_train=args.prompts * args.steps, n_test=1)
    print(f"machine: {os.cpu_count()} CPUs; runs in {work}; overrides: {' '.join(args.overrides) or 'none'}")
    for size in args.sizes:
        model = os.path.join(work, f"model-{size}")
        if not os.path.exists(os.path.join(model, "config.json")):
            build_tiny_model(model, seed=0, texts=text_corpus(), **MODELS[size])
        results: dict[str, list[dict]] = {"ours": [], "trl": []}
        for run in range(args.pairs):
            for system in ("ours", "trl") if run % 2 == 0 else ("trl", "ours"):
                results[system].append(run_once(system, size, model, train, work, run, args))
                r = results[system][-1]
                print(f"  {size} {system} run {run + 1}: {r['s_per_step']:.3f} s/step, {r['peak_rss_gb']:.2f} GB")
        print(f"\n{size}: median of steps 2-{args.steps}; min / median / max over {args.pairs} runs")
        columns = {  # key: (title, decimals)
            "s_per_step": ("s/step", 3),
            "completions_per_s": ("completions/s", 1),
            "tokens_per_s": ("generated tokens/s", 0),
            "startup_s": ("start-up (s)", 1),
            "outside_steps_s": ("outside steps (s)", 1),
            "peak_rss_gb": ("peak RSS (GB)", 2),
        }
        header = " | ".join(["system"] + [title for title, _ in columns.values()])
        print(header + "\n" + "-" * len(header))
        for system, runs in results.items():
            print(f"{system} | " + " | ".join(spread([r[k] for r in runs], d) for k, (_, d) in columns.items()))
        pairs = zip(results["ours"], results["trl"], strict=True)
        ratios = [o["completions_per_s"] / t["completions_per_s"] for o, t in pairs]
        print(f"completions/s, ours / TRL: {spread(ratios, 2)} (per pair)\n")


if __name__ == "__main__":
    main()
