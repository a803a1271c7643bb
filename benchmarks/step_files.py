"""Which of the project's files one training step runs, in the driver and in every worker.

    python benchmarks/step_files.py [--step 2] -- COMMAND ...

runs COMMAND (a training run, e.g. the e2e test that calls ``train_grpo.sh`` with both critic
roles on) with a profiler in every Python process it starts, Ray workers included (they inherit
``PYTHONPATH``, where a ``sitecustomize`` module installs the profiler). Each process notes, per
function of a project file, the hundredths of a second in which it was entered or left; the
driver notes when ``RayPPOTrainer.train_step`` number ``--step`` began and ended. The files with
an entry or exit inside that window are the files the step crosses; they are printed with their
count and, for each, the functions seen. Tests and this script are not counted.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Installed in every Python process of the run. It stays small and writes its notes every second,
# since Ray may kill a worker without running its exit handlers.
PROFILER = """
import atexit, json, os, sys, threading, time

_ROOT = {root!r}
_OUT = {out!r}
_seen = {{}}
_steps = []
_last = [0.0]


def _project(path):
    return path.startswith(_ROOT) and "/tests/" not in path and "/benchmarks/" not in path


def _flush(now):
    _last[0] = now
    path = os.path.join(_OUT, f"{{os.getpid()}}.json")
    with open(path + ".tmp", "w") as f:
        json.dump({{"files": {{k: sorted(v) for k, v in _seen.items()}}, "steps": _steps}}, f)
    os.replace(path + ".tmp", path)


def _profile(frame, event, arg):
    if event not in ("call", "return"):
        return
    path = frame.f_code.co_filename
    if not _project(path):
        return
    now = time.monotonic()
    _seen.setdefault(os.path.relpath(path, _ROOT) + ":" + frame.f_code.co_name, set()).add(int(now * 100))
    if frame.f_code.co_name == "train_step" and path.endswith("ray_trainer.py"):
        _steps.append((event, now))
    if now - _last[0] > 1.0 or frame.f_code.co_name == "train_step":
        _flush(now)


sys.setprofile(_profile)
threading.setprofile(_profile)
atexit.register(lambda: _flush(time.monotonic()))
"""


def step_window(notes: list[dict], step: int) -> tuple[float, float]:
    """The monotonic start and end of the driver's ``step``-th ``train_step`` call."""
    for note in notes:
        events = note["steps"]
        calls = [t for e, t in events if e == "call"]
        returns = [t for e, t in events if e == "return"]
        if len(calls) >= step and len(returns) >= step:
            return calls[step - 1], returns[step - 1]
    raise SystemExit(f"no process ran train_step {step} times: was the command a training run of that many steps?")


def crossed(notes: list[dict], start: float, end: float) -> dict[str, set[str]]:
    """Project file -> the names of its functions entered or left between ``start`` and ``end``.
    The hundredths holding the two ends are left out: what ran just before or after the step
    (fetching its batch, saving the checkpoint after it) shares them."""
    first, last = int(start * 100) + 1, int(end * 100) - 1
    files: dict[str, set[str]] = defaultdict(set)
    for note in notes:
        for place, ticks in note["files"].items():
            if any(first <= t <= last for t in ticks):
                path, _, function = place.rpartition(":")
                files[path].add(function)
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", type=int, default=2, help="which train_step call to measure (1-based)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the training command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the training command after --")
    with tempfile.TemporaryDirectory() as site, tempfile.TemporaryDirectory() as out:
        with open(os.path.join(site, "sitecustomize.py"), "w") as f:
            f.write(PROFILER.format(root=ROOT + os.sep, out=out))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p))
        done = subprocess.run(command, env=env, cwd=ROOT)
        if done.returncode:
            raise SystemExit(f"the command failed ({done.returncode})")
        notes = []
        for name in os.listdir(out):
            if name.endswith(".json"):
                with open(os.path.join(out, name)) as f:
                    notes.append(json.load(f))
    start, end = step_window(notes, args.step)
    files = crossed(notes, start, end)
    print(f"train_step {args.step} ({end - start:.1f} s) crosses {len(files)} project files:")
    for path, functions in sorted(files.items()):
        print(f"  {path}: {', '.join(sorted(functions))}")
    # Per process: the driver (the one that ran train_step) first, then the others by how many they ran.
    counts = sorted(((bool(note["steps"]), len(crossed([note], start, end))) for note in notes), reverse=True)
    print("per process (driver first):", ", ".join(str(n) for _, n in counts if n))


if __name__ == "__main__":
    sys.exit(main())
