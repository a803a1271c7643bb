"""What the critic's turn rewards change, measured in paired arms on the CPU miniature.

For each seed, one invented world (one- to three-hop questions), one tuned simulator and one
warm-started policy (which wastes about a fifth of its searches) are shared by every arm; each arm
is an RL run from that warm start with the same steps and seeds, validated at every step on the
held-out two- and three-hop questions:

- outcome: the outcome reward only;
- path: plus turn rewards from the path judge (the ideal critic: a search is useful when it brings
  a fact of the gold path first);
- answer: plus turn rewards from the answer judge (useful when a gold answer is in the documents);
- shuffled: the path judge's verdicts permuted over each batch's searches: the same reward scale
  with no information (the control);
- llm: plus turn rewards from a tiny critic LLM tuned on the path judge's verdicts about the
  outcome arm's early rollouts, its agreement with the path judge measured on the held-out
  evaluations of the arms run before it;
- interactive: the outcome reward, and a critique after each search in the policy's context (the
  rule critic's line with the path judge: whether the documents bring a new fact of the gold path,
  clear or vague on a curriculum).

Per arm and seed: the area under the held-out EM curve (mean over steps 0..T), final EM (mean of
the last 3 validations), steps to target (the first step whose 3-step moving average of held-out
EM reaches 90% of the outcome arm's final EM), and the final policy's searches and useless searches
per held-out question; for llm, its agreement with the path judge (kappa). Then each arm's paired
difference from outcome, mean ± standard error over seeds.

    python benchmarks/critic.py --out runs/critic_bench [--seeds 0 1 2 3 4] [--arms ...] [key=value ...]
    python benchmarks/critic.py --merge A.json B.json     # seeds or arms run in separate processes

Writes ``--results`` (default benchmarks/results/critic.json) and a PNG of the mean EM curves with
±SE bands beside it, and prints the table. Runs resume: a finished arm is not trained again.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import pandas as pd
import ray
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from zerosearch import demo
from zerosearch.plot import read_metrics

HERE = os.path.dirname(os.path.abspath(__file__))
ARMS = ("outcome", "path", "answer", "shuffled", "llm", "interactive")
# The miniature each seed runs: the in-suite demo's world, with RL validated every step.
SETTINGS = [
    "world.people=30",
    "world.orgs=15",
    "world.cities=8",
    "world.countries=4",
    "world.test_fraction=0.25",
    "simulator.steps=900",
    "simulator.pairs=2000",
    "warm_start.steps=600",
    "rl.steps=16",
    "rl.batch_size=8",
    "rl.n=5",
    "rl.test_freq=1",
    "critictor.enable=true",  # rollouts are dumped: the llm arm's critic is tuned on them
    # A turn reward half the size of one standard deviation of the outcome term, chosen before any run
    # (a small simulation of the estimator put it there); the demo's own 0.1 is a tenth of it.
    "critictor.turn_reward_coef=0.5",
]
INTERACTIVE = [
    "critictor.interactive.enable=true",
    "critictor.backend=rule",
    "critictor.interactive.privileged=true",
]


def seed_overrides(seed: int) -> list[str]:
    """The world, simulator, policy and critic of a seed; the trainer's sampling follows it too."""
    return [
        f"world.seed={seed}",
        f"simulator.model.seed={10 * seed + 1}",
        f"warm_start.model.seed={10 * seed}",
        f"critictor.model.seed={10 * seed + 2}",
        f"rl.overrides=['trainer.seed={seed}']",
    ]


def multi_hop(test_path: str) -> str:
    """The held-out two- and three-hop questions, beside ``test_path``."""
    frame = pd.read_parquet(test_path)
    path = test_path.replace(".parquet", "_multihop.parquet")
    frame[frame["data_source"] != "synthetic_1hop"].reset_index(drop=True).to_parquet(path, index=False)
    return path


def em_curve(run_dir: str) -> list[float]:
    """Held-out EM at steps 0, 1, ..., T: the curve's index is its step."""
    points = read_metrics(os.path.join(run_dir, "metrics.jsonl"))["val/em"]
    if [step for step, _ in points] != list(range(len(points))):
        raise ValueError(f"{run_dir}: validation must run before training and at every step (rl.test_freq=1)")
    return [em for _, em in points]


def moving_average(values: list[float], width: int = 3) -> list[float]:
    return [float(np.mean(values[max(0, i - width + 1) : i + 1])) for i in range(len(values))]


def run_seed(seed: int, arms: list[str], out: str, extra: list[str]) -> dict[str, dict]:
    config = demo.load_config([*SETTINGS, *seed_overrides(seed), f"out_dir={out}", *extra])
    started = time.time()

    def phase(name: str) -> None:
        print(f"\n== seed {seed}: {name} ({(time.time() - started) / 60:.1f} min) ==", flush=True)

    setup = demo.prepare(config, out, phase)
    data = dict(setup.data, test=multi_hop(setup.data["test"]))
    results: dict[str, dict] = {}
    for arm in ["outcome", *[a for a in arms if a != "outcome"]]:
        phase(arm)
        extra_overrides: list[str] = []
        if arm in ("path", "answer", "shuffled"):
            extra_overrides = demo.turn_rewards(config, arm)
        elif arm == "interactive":
            extra_overrides = INTERACTIVE
        elif arm == "llm":
            # the held-out evaluations of the arms run so far: searches to measure its agreement on
            held_out = [os.path.join(out, f"eval_{done}") for done in results]
            critic, agreement = demo.tune_critic(
                config, setup.world, setup.initial["critic"], os.path.join(out, "outcome"), out, held_out
            )
            extra_overrides = demo.turn_rewards(config, critic)
        run_dir = os.path.join(out, arm)
        trained = demo.reinforce(config, setup.policy, setup.simulator, data, run_dir, extra_overrides)
        after = demo.assess(config, trained, data, os.path.join(out, f"eval_{arm}"))
        curve = em_curve(run_dir)
        results[arm] = {
            "curve": curve,
            "auc": float(np.mean(curve)),
            "final_em": float(np.mean(curve[-3:])),
            "useless_per_question": after["useless_per_question"],
            "searches_per_question": after["searches_per_question"],
        }
        if arm == "llm":
            results[arm]["kappa"] = agreement["kappa"]
            results[arm]["agreement"] = agreement
    target = 0.9 * results["outcome"]["final_em"]
    for r in results.values():
        reached = [step for step, em in enumerate(moving_average(r["curve"])) if em >= target]
        r["steps_to_target"] = reached[0] if reached else None
    print(f"seed {seed} took {(time.time() - started) / 60:.1f} min")
    return results


def mean_se(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return math.nan, math.nan
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return float(np.mean(values)), se


FIGURES = ("auc", "final_em", "steps_to_target", "useless_per_question", "searches_per_question")


def summarize(per_seed: dict[int, dict[str, dict]], arms: list[str]) -> dict:
    """The results file: per arm, each figure per seed (the arm's ``seeds``, in order: every seed
    unless an arm ran on fewer), and the paired differences from outcome over those seeds."""
    out: dict = {"seeds": sorted(per_seed), "arms": {}, "paired_vs_outcome": {}}
    for arm in arms:
        seeds = [s for s in sorted(per_seed) if arm in per_seed[s]]
        entry: dict = {"seeds": seeds} | {k: [per_seed[s][arm][k] for s in seeds] for k in FIGURES}
        entry["curves"] = [per_seed[s][arm]["curve"] for s in seeds]
        if arm == "llm":
            entry["kappa"] = float(np.mean([per_seed[s][arm]["kappa"] or 0.0 for s in seeds]))
            entry["kappa_per_seed"] = [per_seed[s][arm]["kappa"] for s in seeds]
        out["arms"][arm] = entry
        if arm != "outcome":
            paired = {}
            for k in ("auc", "final_em", "useless_per_question", "searches_per_question"):
                diffs = [per_seed[s][arm][k] - per_seed[s]["outcome"][k] for s in seeds]
                paired[k] = dict(zip(("mean", "se"), mean_se(diffs), strict=True))
            ratios = [
                per_seed[s][arm]["steps_to_target"] / per_seed[s]["outcome"]["steps_to_target"]
                for s in seeds
                if per_seed[s][arm]["steps_to_target"] is not None and per_seed[s]["outcome"]["steps_to_target"]
            ]
            # over the seeds where both arms reached the target; n says how many
            paired["steps_to_target_ratio"] = dict(zip(("mean", "se"), mean_se(ratios), strict=True)) | {
                "n": len(ratios)
            }
            out["paired_vs_outcome"][arm] = paired
    return out


def per_seed_of(summary: dict) -> dict[int, dict[str, dict]]:
    """The per-seed figures back from a results file, to merge runs made apart."""
    per_seed: dict[int, dict[str, dict]] = {}
    for arm, entry in summary["arms"].items():
        for i, seed in enumerate(entry.get("seeds", summary["seeds"])):
            figures = {k: entry[k][i] for k in FIGURES} | {"curve": entry["curves"][i]}
            if arm == "llm":
                figures["kappa"] = entry["kappa_per_seed"][i]
            per_seed.setdefault(seed, {})[arm] = figures
    return per_seed


def table(summary: dict) -> str:
    def cell(values: list) -> str:
        mean, se = mean_se(values)
        return f"{mean:.3f} ± {se:.3f}"

    def diff(arm: str, key: str) -> str:
        if arm == "outcome":
            return "—"
        d = summary["paired_vs_outcome"][arm][key]
        return f"{d['mean']:+.3f} ± {d['se']:.3f}"

    lines = [
        "| arm | AUC of held-out EM | Δ AUC vs outcome | final EM | Δ final EM | steps to target (reached) "
        "| useless / question | Δ useless | searches / question |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, m in summary["arms"].items():
        reached = [s for s in m["steps_to_target"] if s is not None]
        steps = f"{np.mean(reached):.1f} ({len(reached)}/{len(m['steps_to_target'])})" if reached else "never"
        lines.append(
            f"| {arm} | {cell(m['auc'])} | {diff(arm, 'auc')} | {cell(m['final_em'])} | {diff(arm, 'final_em')} "
            f"| {steps} | {cell(m['useless_per_question'])} | {diff(arm, 'useless_per_question')} "
            f"| {cell(m['searches_per_question'])} |"
        )
    if "llm" in summary["arms"]:
        lines.append(
            f"\nllm critic's kappa against the path judge, per seed: {summary['arms']['llm']['kappa_per_seed']}"
        )
    return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for arm, m in summary["arms"].items():
        curves = np.array(m["curves"])
        mean = curves.mean(axis=0)
        se = curves.std(axis=0, ddof=1) / math.sqrt(len(curves)) if len(curves) > 1 else np.zeros_like(mean)
        steps = np.arange(len(mean))
        fewer = len(m["curves"]) < len(summary["seeds"])
        ax.plot(steps, mean, label=f"{arm} (seeds {', '.join(map(str, m['seeds']))})" if fewer else arm)
        ax.fill_between(steps, mean - se, mean + se, alpha=0.15)
    ax.set(xlabel="RL step", ylabel="held-out EM (2- and 3-hop)", title="Held-out EM per arm, mean ± SE over seeds")
    ax.legend()
    figure.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/critic_bench", help="folder of every seed's runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--results", default=os.path.join(HERE, "results", "critic.json"))
    parser.add_argument(
        "--merge", nargs="+", metavar="RESULTS", help="train nothing: combine results files of runs made apart"
    )
    parser.add_argument("overrides", nargs="*", help="demo config overrides for every seed, key=value")
    args = parser.parse_intermixed_args()
    settings = [*SETTINGS, *args.overrides]
    per_seed: dict[int, dict[str, dict]] = {}
    if args.merge:
        for path in args.merge:
            with open(path) as f:
                merged = json.load(f)
            if merged["settings"] != settings:
                raise SystemExit(f"{path}: its settings differ from these: {merged['settings']} vs {settings}")
            for seed, arms_of_seed in per_seed_of(merged).items():
                per_seed.setdefault(seed, {}).update(arms_of_seed)
        arms = [a for a in ARMS if any(a in per_seed[s] for s in per_seed)]
    else:
        arms = ["outcome", *[a for a in args.arms if a != "outcome"]]
        try:
            for seed in args.seeds:
                out = os.path.abspath(os.path.join(args.out, f"seed{seed}"))
                per_seed[seed] = run_seed(seed, arms, out, args.overrides)
        finally:
            if ray.is_initialized():
                ray.shutdown()
    summary = summarize(per_seed, arms)
    summary["settings"] = settings
    os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
    with open(args.results, "w") as f:
        json.dump(summary, f, indent=1)
    plot(summary, args.results.replace(".json", ".png"))
    print(table(summary))
    print(f"\nresults: {args.results}")


if __name__ == "__main__":
    sys.exit(main())
