import pytest

from zerosearch.train import check_search_keys, load_config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["search.mode=bing"], "search.mode"),
        (["search.engine=simulate_prompt"], "search.engine"),
        (["search.engine=corpus"], "search.corpus_path"),
        (["search.mode=corpus", "search.engine=wiki"], "search.corpus_path"),
        (["search.engine=wiki", "search.curriculum.end_threshold=1.5"], "search.curriculum.end_threshold"),
        (["search.engine=wiki", "search.simulator.server_urls=[]"], "server_urls"),
        (["search.engine=wiki", "agent.reward_metric=bleu"], "agent.reward_metric"),
        (["search.engine=wiki", "search.cache=redis"], "search.cache"),
        (["search.engine=wiki", "actor_rollout_ref.rollout.agent.max_obs_length=0"], "max_obs_length"),
    ],
)
def test_search_settings_are_refused_when_the_config_is_composed(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_config("zerosearch_grpo", overrides)


def test_google_needs_its_key_only_when_it_is_used(monkeypatch):
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    monkeypatch.delenv("SER_API_KEY", raising=False)
    config = load_config("zerosearch_grpo")  # the recipe validates on google
    with pytest.raises(ValueError, match=r"\$SERPAPI_API_KEY"):
        check_search_keys(config)
    # no validation: the key is never needed
    check_search_keys(load_config("zerosearch_grpo", ["trainer.val_before_train=false", "trainer.test_freq=-1"]))
    monkeypatch.setenv("SERPAPI_API_KEY", "secret")
    check_search_keys(config)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny policy and a two-row dataset in this project's layout."""
    import pandas as pd

    from verl.utils.tiny_model import build_tiny_model
    from zerosearch.prompts import policy_prompt

    root = tmp_path_factory.mktemp("dry")
    model = build_tiny_model(root / "policy", vocab_size=300)
    rows = [
        {
            "data_source": source,
            "prompt": [{"role": "user", "content": policy_prompt(q)}],
            "reward_model": {"ground_truth": {"target": [a]}},
            "extra_info": {"question": q, "index": i},
        }
        for i, (source, q, a) in enumerate(
            [("nq", "Who wrote Hamlet?", "Shakespeare"), ("hotpotqa", "Capital?", "Paris")]
        )
    ]
    for split in ("train", "test"):
        pd.DataFrame(rows).to_parquet(root / f"{split}.parquet")
    (root / "corpus.jsonl").write_text('{"contents": "Hamlet\\nby Shakespeare"}\n')
    return root, model


def test_a_dry_run_checks_everything_and_starts_no_worker(tiny_run, capsys):
    from zerosearch.launch import main

    root, model = tiny_run
    args = ["NUM_GPUS_PER_NODE", "2", "MODEL_PATH", str(model), "DATA_PATH", str(root), "SEARCH_MODE", "corpus"]
    args += ["SEARCH_ENGINE", "corpus"]
    args += ["CORPUS_PATH", str(root / "corpus.jsonl"), "ROLLOUT", "hf", "DRY_RUN", "1", "--"]
    args += [
        "data.train_batch_size=2",
        "actor_rollout_ref.actor.ppo_mini_batch_size=2",
        f"trainer.default_local_dir={root / 'out'}",
    ]
    assert main(["grpo", *args]) == 0
    out = capsys.readouterr().out
    assert "dry_run: true" in out and "adv_estimator: grpo_turn" in out  # the resolved config
    assert "data.train_files: 2 rows" in out and "by data source: hotpotqa: 1, nq: 1" in out
    assert "prompt tokens: p50" in out and "dry run: every check passed" in out
    assert not (root / "out").exists()  # nothing was started or written


def test_broken_model_folders_and_corpora_are_named_before_workers_start(tiny_run, tmp_path):
    import shutil

    from verl.trainer.startup import check_model_folder
    from zerosearch.train import check_search_inputs

    root, model = tiny_run
    check_model_folder(str(model), "actor_rollout_ref.model.path")
    torn = tmp_path / "torn"
    shutil.copytree(model, torn)
    weights = torn / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5])  # a download cut short
    with pytest.raises(ValueError, match=r"critictor.model='.*torn'.*model.safetensors is not a readable safetensors"):
        check_search_inputs(
            load_config(
                "zerosearch_grpo",
                [
                    "search.engine=none",
                    "critictor.retrospective.enable=true",
                    "critictor.backend=in_process",
                    f"critictor.model={torn}",
                ],
            )
        )
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_bytes(b'{"contents": "fine"}\n{"contents": "caf\xe9"}\n')
    with pytest.raises(ValueError, match=r"corpus.jsonl:2: not UTF-8"):
        check_search_inputs(load_config("zerosearch_grpo", ["search.mode=corpus", f"search.corpus_path={corpus}"]))
