"""What a ZeroSearch user brings works as it is: the six training command lines of ZeroSearch's
README, its SER_API_KEY, its dataset layout (top-level question and golden_answers) and a
simulation-LLM folder named like the served model, next to the scripts."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import REPO_ROOT
from zerosearch.launch import parse_key_values
from zerosearch.train import check_qa_files, check_search_keys, load_config

COMMON = [
    "NUM_GPUS_PER_NODE",
    "4",
    "MODEL_PATH",
    "Qwen2.5-3B-Instruct",
    "DATA_PATH",
    "ZeroSearch_dataset",
    "TOTAL_STEPS",
    "203",
    "IP",
    "localhost",
]
TAIL = ["START_THRESHOLD", "0", "END_THRESHOLD", "0.5", "SEARCH_ENGINE", "google", "MAX_TURNS", "5", "TOPK", "5"]
SIMULATORS = {"simulate_prompt": "Qwen2.5-14B-Instruct", "simulate_sft": "Simulation_LLM_google_14B"}


def zerosearch_rows(n):
    return pd.DataFrame(
        {
            "id": [f"train_{i}" for i in range(n)],
            "question": [f"who wrote book {i}?" for i in range(n)],
            "golden_answers": [[f"Author {i}", f"A. {i}"] for i in range(n)],
            "data_source": ["nq"] * n,
            "prompt": [
                [{"role": "user", "content": f"Answer the given question. Question: who wrote book {i}?"}]
                for i in range(n)
            ],
            "ability": ["fact-reasoning"] * n,
            "extra_info": [{"split": "train", "index": i} for i in range(n)],
        }
    )


@pytest.fixture
def zerosearch_dir(tmp_path):
    """What ZeroSearch's download steps leave in the working directory."""
    (tmp_path / "ZeroSearch_dataset").mkdir()
    zerosearch_rows(8).to_parquet(tmp_path / "ZeroSearch_dataset" / "train.parquet")
    zerosearch_rows(4).to_parquet(tmp_path / "ZeroSearch_dataset" / "test.parquet")
    (tmp_path / "Simulation_LLM_google_14B").mkdir()
    (tmp_path / "Simulation_LLM_google_14B" / "config.json").write_text("{}")
    return tmp_path


@pytest.mark.parametrize("mode", SIMULATORS)
@pytest.mark.parametrize("algo", ["reinforce", "grpo", "ppo"])
def test_zerosearch_readme_command_lines_reach_the_model(zerosearch_dir, algo, mode):
    """Each line parses and passes every check; it stops only because Qwen2.5-3B-Instruct cannot
    be loaded here, and stops before Ray or any worker starts."""
    args = COMMON + ["SEARCH_MODE", mode, "SIMULATION_LLM", SIMULATORS[mode]] + TAIL
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(zerosearch_dir)),
        "HF_HUB_OFFLINE": "1",
        "PYTHON": sys.executable,
        "SER_API_KEY": "zs-secret-key",
    }
    proc = subprocess.run(
        ["bash", os.path.join(REPO_ROOT, f"train_{algo}.sh"), *args],
        cwd=zerosearch_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode != 0
    assert proc.stderr.count("Traceback") == 1, proc.stderr[-3000:]
    assert "FileNotFoundError: actor_rollout_ref.model.path='Qwen2.5-3B-Instruct' is not a loadable" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr
    assert "zs-secret-key" not in proc.stdout + proc.stderr


def test_a_served_model_name_stays_a_name_beside_a_folder_of_that_name(zerosearch_dir, monkeypatch):
    """ZeroSearch's download step creates ./Simulation_LLM_google_14B; a server serves the model under
    that name, so the name must reach the server as it is, not as a local path."""
    monkeypatch.chdir(zerosearch_dir)
    overrides, _ = parse_key_values(
        ["SIMULATION_LLM", "Simulation_LLM_google_14B", "MODEL_PATH", "Simulation_LLM_google_14B"]
    )
    config = load_config("zerosearch_grpo", overrides)
    assert config.search.simulator.model == "Simulation_LLM_google_14B"
    assert config.actor_rollout_ref.model.path == str(zerosearch_dir / "Simulation_LLM_google_14B")


def test_zerosearch_key_variable_is_accepted(monkeypatch):
    config = load_config("zerosearch_grpo", ["search.engine=google"])
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    monkeypatch.delenv("SER_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"SERPAPI_API_KEY.*SER_API_KEY"):
        check_search_keys(config)
    monkeypatch.setenv("SER_API_KEY", "k")
    check_search_keys(config)


def test_zerosearch_dataset_layout_passes_the_row_checks(zerosearch_dir, tmp_path):
    path = zerosearch_dir / "ZeroSearch_dataset" / "train.parquet"
    check_qa_files("data.train_files", [str(path)], needs_question=True)
    # the question is read from ZeroSearch's own column: without it, the row is named
    frame = pd.read_parquet(path)
    frame.loc[5, "question"] = ""
    frame.to_parquet(tmp_path / "train.parquet")
    with pytest.raises(ValueError, match="row 5: no question"):
        check_qa_files("data.train_files", [str(tmp_path / "train.parquet")], needs_question=True)


def test_numbers_as_gold_answers_are_named(tmp_path):
    frame = zerosearch_rows(3)
    frame["golden_answers"] = [1889, 1890, 1891]
    frame.to_parquet(tmp_path / "train.parquet")
    with pytest.raises(ValueError, match="row 0: golden_answers must be a string or a list of strings, got int"):
        check_qa_files("data.train_files", [str(tmp_path / "train.parquet")], needs_question=False)


@pytest.mark.parametrize(
    "column, value, message",
    [
        ("golden_answers", [], "row 2: golden_answers lists no gold answers"),
        ("golden_answers", None, "row 2: no gold answers"),
        ("golden_answers", ["The"], "row 2: the gold answers \\['The'\\] are empty once normalised"),
        ("golden_answers", [""], "row 2: the gold answers \\[''\\] are empty once normalised"),
        ("question", None, "row 2: no question"),
    ],
)
def test_bad_rows_are_named_before_any_worker_starts(tmp_path, column, value, message):
    frame = zerosearch_rows(4)
    frame[column] = frame[column].astype(object)
    frame.at[2, column] = value
    path = tmp_path / "train.parquet"
    frame.to_parquet(path)
    with pytest.raises(ValueError, match=f"data.train_files: {path} {message}"):
        check_qa_files("data.train_files", [str(path)], needs_question=True)
