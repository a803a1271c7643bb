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
        (["search.engine=wiki", "agent.max_obs_length=0"], "max_obs_length"),
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
