"""The CPU demonstration's pipeline end to end at a toy scale: simulation tuning, warm start, RL
with the tuned simulator and the noise curriculum, evaluation on the corpus engine before and
after. Steps are far too few to learn anything; this checks that every phase runs and that the
outputs land where the demo says."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = pytest.mark.e2e

TOY = ["world.people=20", "world.orgs=10", "world.cities=6", "world.countries=3", "world.test_fraction=0.25",
       "simulator.steps=6", "simulator.pairs=64", "simulator.eval_pairs=8", "simulator.max_tokens=24",
       "warm_start.steps=6", "rl.steps=2", "rl.test_freq=1", "rl.batch_size=4", "rl.n=2", "eval_batch_size=16"]


def test_every_phase_runs_and_writes_into_one_folder(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "zerosearch.demo", f"out_dir={out}", *TOY], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"}, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert "| warm start |" in proc.stdout and "| after RL |" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    for side in (summary["before"], summary["after"]):
        assert set(side) == {"em", "f1", "searches_per_question", "answer_rate"}
        assert all(0 <= side[k] <= 1 for k in ("em", "f1", "answer_rate")) and side["searches_per_question"] >= 0
    assert set(summary["simulator"]) == {"useful_answer_rate", "noisy_answer_rate"}
    assert list(summary["phase_seconds"]) == ["world", "simulation tuning", "warm start", "evaluation before RL",
                                              "RL", "evaluation after RL"]
    assert summary["seconds"] >= sum(summary["phase_seconds"].values()) > 0
    for model in summary["models"].values():
        assert model.startswith(str(out)) and os.path.isfile(os.path.join(model, "config.json"))
    for figure in ("reward.png", "em.png", "searches.png", "noise.png"):
        assert (out / "plots" / figure).stat().st_size > 0
    for name in ("eval_before", "eval_after"):
        assert json.loads((out / name / "results.json").read_text())["results"]["all"]["n"] == len(
            (out / name / "trajectories.jsonl").read_text().splitlines())
    records = [json.loads(line) for line in open(out / "rl" / "metrics.jsonl")]
    assert [r["step"] for r in records] == [0, 1, 2] and "val/em" in records[2]
    assert 0 < records[1]["curriculum/noise_p"] < records[2]["curriculum/noise_p"]  # the noise rises
