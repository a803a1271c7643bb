import pytest

from zerosearch.train import check_search_config, load_config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["search.mode=bing"], "search.mode"),
        (["search.engine=simulate_prompt"], "search.engine"),
        (["search.engine=corpus"], "search.corpus_path"),
        (["search.mode=corpus", "search.engine=wiki"], "search.corpus_path"),
        (["search.engine=wiki", "search.curriculum.end_threshold=1.5"], "END_THRESHOLD"),
        (["search.engine=wiki", "search.simulator.server_urls=[]"], "server_urls"),
        (["search.engine=wiki", "agent.reward_metric=bleu"], "agent.reward_metric"),
        (["search.engine=wiki", "search.cache=redis"], "search.cache"),
        (["search.engine=wiki", "agent.max_obs_length=0"], "max_obs_length"),
    ],
)
def test_search_settings_are_refused_up_front(overrides, message):
    with pytest.raises(ValueError, match=message):
        check_search_config(load_config("zerosearch_grpo", overrides))


def test_google_needs_its_key_only_when_it_is_used(monkeypatch):
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    config = load_config("zerosearch_grpo")  # the recipe validates on google
    with pytest.raises(ValueError, match=r"\$SERPAPI_API_KEY"):
        check_search_config(config)
    check_search_config(config, validates=False)  # no validation: the key is never needed
    monkeypatch.setenv("SERPAPI_API_KEY", "secret")
    check_search_config(config)
