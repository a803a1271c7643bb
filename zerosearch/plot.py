"""Curves of a training run from its ``metrics.jsonl``.

    python -m zerosearch.plot RUN_DIR [--out DIR] [--metrics KEY [KEY ...]]

Writes reward.png, em.png, searches.png and noise.png (and custom.png for ``--metrics``) into
RUN_DIR/plots by default; a figure none of whose metrics were logged is skipped.
"""

import argparse
import json
import os
import sys

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# file name, title, y label, ((metric, legend label), ...)
FIGURES = (
    ("reward.png", "Reward", "score", (("reward/score/mean", "train"), ("val/score", "validation"))),
    ("em.png", "Exact match", "exact match", (("reward/em/mean", "train"), ("val/em", "validation"))),
    (
        "searches.png",
        "Searches per question",
        "searches",
        (("search/searches_mean", "train"), ("val/search/searches_mean", "validation")),
    ),
    ("noise.png", "Simulated search noise", "noise probability", (("curriculum/noise_p", "train"),)),
)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_metrics(path: str) -> dict[str, list[tuple[int, float]]]:
    """Each metric's (step, value) points, sorted by step. A step logged twice (a resumed run)
    keeps its later line; non-numeric values are skipped."""
    lines: dict[int, dict] = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}, line {number}: not valid JSON ({err})") from None
            if (
                not isinstance(record, dict)
                or not isinstance(record.get("step"), int)
                or isinstance(record["step"], bool)
            ):
                raise ValueError(f"{path}, line {number}: expected a JSON object with an integer 'step'")
            lines[record.pop("step")] = record
    series: dict[str, list[tuple[int, float]]] = {}
    for step in sorted(lines):
        for key, value in lines[step].items():
            if _is_number(value):
                series.setdefault(key, []).append((step, float(value)))
    return series


def _save(
    path: str, title: str, ylabel: str, curves: list[tuple[str, list[tuple[int, float]]]], marked: bool = False
) -> None:
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, points in curves:
        steps, values = zip(*points, strict=True)
        # Validation is logged every few steps: mark its points, as a lone point has no line.
        sparse = marked or len(points) == 1 or label == "validation" or label.startswith("val/")
        ax.plot(steps, values, label=label, marker="o" if sparse else None, markersize=4)
    ax.set(title=title, xlabel="step", ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=100)


def plot_run(run_dir: str, out_dir: str | None = None, extra_metrics=()) -> list[str]:
    """Write the run's figures; returns their paths. Skipped figures are reported on stderr."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} does not exist: is {run_dir} a run directory?")
    series = read_metrics(path)
    out_dir = out_dir or os.path.join(run_dir, "plots")
    name = os.path.basename(os.path.normpath(run_dir))
    figures = list(FIGURES)
    if extra_metrics:
        missing = [key for key in extra_metrics if key not in series]
        if missing:
            print(f"custom.png: not in {path}: {', '.join(missing)}", file=sys.stderr)
        figures.append(("custom.png", "Metrics", "value", tuple((key, key) for key in extra_metrics)))
    written = []
    for file_name, title, ylabel, metrics in figures:
        curves = [(label, series[key]) for key, label in metrics if key in series]
        if not curves:
            keys = ", ".join(key for key, _ in metrics)
            print(f"skipped {file_name}: {keys} not in {path}", file=sys.stderr)
            continue
        os.makedirs(out_dir, exist_ok=True)
        target = os.path.join(out_dir, file_name)
        _save(target, f"{title} ({name})", ylabel, curves)
        written.append(target)
    return written


def plot_runs(runs: dict[str, str], metric: str, path: str, title: str) -> str:
    """One figure overlaying ``metric`` of several runs (legend label -> run folder)."""
    curves = []
    for label, run_dir in runs.items():
        series = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
        if metric not in series:
            raise ValueError(f"{metric} is not in {run_dir}/metrics.jsonl")
        curves.append((label, series[metric]))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    _save(path, title, metric, curves, marked=True)
    return path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.plot", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="directory holding metrics.jsonl")
    parser.add_argument("--out", default=None, help="output directory (default: RUN_DIR/plots)")
    parser.add_argument("--metrics", nargs="+", default=(), metavar="KEY", help="extra keys to plot into custom.png")
    args = parser.parse_args(argv)
    try:
        paths = plot_run(args.run_dir, args.out, args.metrics)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {e}")
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
