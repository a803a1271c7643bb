import json
import os

import pytest
from hydra.errors import ConfigCompositionException

from verl.utils import config_yaml
from zerosearch.data.synthetic import build_world
from zerosearch.data.synthetic_tuning import GUESS_DECISION, SEARCH_DECISION
from zerosearch.demo import compare_runs, critic_table, load_config, redrawn, steps_to_target, to_table, warm_start_rows
from zerosearch.demo_config import DemoConfig
from zerosearch.train import CONFIG_DIR


def test_yaml_is_generated_from_the_dataclass():
    assert config_yaml.stale([os.path.join(CONFIG_DIR, "demo.yaml")]) == []


def test_overrides_are_typed_and_unknown_keys_refused():
    config = load_config(["rl.steps=3", "warm_start.lr=0.01", "rl.overrides=['trainer.val_before_train=false']"])
    assert isinstance(config, DemoConfig)
    assert (config.rl.steps, config.warm_start.lr, config.rl.overrides) == (3, 0.01, ["trainer.val_before_train=false"])
    assert config.simulator.model.seed != config.warm_start.model.seed  # two different random models
    with pytest.raises(ConfigCompositionException, match="rl.no_such_key"):
        load_config(["rl.no_such_key=1"])


@pytest.mark.parametrize("rate, practice", [(0.3, 2), (0.5, 0)])
def test_warm_start_trains_the_decision_at_the_search_rate_only(rate, practice):
    world = build_world(seed=0)
    config = load_config([f"warm_start.search_rate={rate}", f"warm_start.search_practice={practice}"])
    rows = warm_start_rows(config, world)
    decisions = [r["response"] for r in rows if r["response_prefix"] == ""]  # first turns that choose
    assert len(decisions) == len(world.train_questions)
    searched = sum(d.startswith(SEARCH_DECISION) for d in decisions)
    assert all(d.startswith((SEARCH_DECISION, GUESS_DECISION)) for d in decisions)
    assert abs(searched / len(decisions) - rate) < 0.1  # 3 standard deviations
    practised = [r for r in rows if r["response_prefix"] == SEARCH_DECISION]  # the choice given, untrained
    assert len(practised) == sum(len(w.tuning_questions()) for w in redrawn(world, practice))
    assert all("<search>" in r["response"] for r in practised)
    # Practice answers are those of the redrawn worlds, so they can only be read off the documents.
    true_answer = {q.question: q.answer for q in world.train_questions + world.test_questions}
    finals = [r for r in rows if "<answer>" in r["response"] and "<search>" in r["response_prefix"]]
    answers = [
        (r["prompt"][0]["content"].split("Question: ")[1].strip(), r["response"].split("<answer> ")[1]) for r in finals
    ]
    differ = sum(not a.startswith(true_answer[q] + " ") for q, a in answers if q in true_answer)
    assert differ > 0.5 * len(practised) if practice else differ == 0


def test_table_has_a_row_per_policy():
    side = {"em": 0.25, "f1": 0.3, "searches_per_question": 1.5, "answer_rate": 1.0, "closed_book_em": 0.05}
    table = to_table(side, {**side, "em": 0.5})
    assert "| warm start | 0.250 | 0.050 | 0.300 | 1.50 | 1.000 |" in table and "| after RL | 0.500 |" in table


def write_run(path, val_em):
    path.mkdir()
    with open(path / "metrics.jsonl", "w") as f:
        for step, em in enumerate(val_em):
            f.write(json.dumps({"step": step, "val/em": em, "reward/score/mean": 0.1}) + "\n")
    return str(path)


def test_steps_to_target_reads_the_first_validation_step_reaching_it(tmp_path):
    without = write_run(tmp_path / "without", [0.1, 0.2, 0.5, 0.7, 0.8, 0.8])
    with_critic = write_run(tmp_path / "with", [0.1, 0.6, 0.75, 0.8, 0.8, 0.85])
    after = {
        "em": 0.8,
        "f1": 0.8,
        "searches_per_question": 1.4,
        "useless_per_question": 0.2,
        "answer_rate": 1.0,
        "closed_book_em": 0.0,
    }
    config = load_config(["critictor.target=0.9"])
    result = compare_runs(config, {"without": (without, after), "with": (with_critic, after)}, None)
    assert result["target_em"] == pytest.approx(0.72)  # 90% of the first run's final 0.8
    assert (result["without"]["steps_to_target"], result["with"]["steps_to_target"]) == (4, 2)
    keys = {"em", "f1", "searches_per_question", "useless_per_question", "answer_rate", "steps_to_target"}
    assert set(result["with"]) == keys and result["judge"] == "path"
    assert steps_to_target(without, 0.95) is None
    assert "| with the critic (path) | 0.800 | 0.800 | 1.40 | 0.20 |" in critic_table(result)
