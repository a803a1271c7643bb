"""The rollout manager with the real simulator client against a chat-completions server on loopback."""

import pytest

from tests.zerosearch.search.test_simulate import simulator
from tests.zerosearch.test_generation import ScriptedWorkerGroup, make_batch, make_config
from verl.utils.tiny_model import build_tokenizer
from zerosearch import prompts
from zerosearch.generation import SearchGenerationManager

SCRIPTS = {
    "Who wrote Hamlet?": ["<search> hamlet playwright </search>", "<answer> Shakespeare </answer>"],
    "What is the capital of France?": ["<answer> Paris </answer>"],
    "Which river flows through Cairo?": ["<search> river cairo </search>", "<answer> Nile </answer>"],
}
ANSWERS = ["William Shakespeare", "Paris", "the Nile"]


@pytest.fixture
def server(chat_server):
    return chat_server(simulator())


def test_only_searching_rows_query_the_simulator_each_with_its_own_question_and_answer(server):
    tokenizer = build_tokenizer([prompts.policy_prompt(q) for q in SCRIPTS] + SCRIPTS["Who wrote Hamlet?"], 600)
    config = make_config()
    config.search.simulator.server_urls = [server.url]
    config.search.engine = "wiki"  # built for validation, never contacted here
    config.search.curriculum.start_threshold = config.search.curriculum.end_threshold = 0.0  # useful documents
    config.search.retry.max_retries, config.search.retry.backoff_s = 0, 0.01
    manager = SearchGenerationManager(config, ScriptedWorkerGroup(tokenizer, SCRIPTS), tokenizer)
    out = manager.generate_sequences(make_batch(tokenizer, list(SCRIPTS), ANSWERS))
    assert len(server.bodies) == 2
    sent = sorted(body["messages"][-1]["content"] for body in server.bodies)
    hamlet, cairo = sorted(sent, key=lambda p: "hamlet" not in p)
    assert "Who wrote Hamlet?" in hamlet and "William Shakespeare" in hamlet
    assert "Cairo" not in hamlet and "Nile" not in hamlet and "Paris" not in hamlet
    assert "Which river flows through Cairo?" in cairo and "the Nile" in cairo
    assert "Hamlet" not in cairo and "Shakespeare" not in cairo and "Paris" not in cairo
    assert list(out.non_tensor_batch["num_searches"]) == [1, 0, 1]
    assert out.meta_info["metrics"]["search/failures"] == 0
    # the simulator's documents reached the context of the row that searched
    span = out.batch["attention_mask"][0, out.batch["prompts"].shape[1] :].bool()
    observed = [
        i
        for i, m in zip(
            out.batch["responses"][0][span].tolist(), out.batch["response_mask"][0][span].tolist(), strict=True
        )
        if m == 0
    ]
    assert "about hamlet playwright" in tokenizer.decode(observed)


def test_retries_and_the_time_spent_waiting_are_logged(chat_server):
    server = chat_server(simulator(mode="error"))
    tokenizer = build_tokenizer([prompts.policy_prompt(q) for q in SCRIPTS] + SCRIPTS["Who wrote Hamlet?"], 600)
    config = make_config()
    config.search.simulator.server_urls = [server.url]
    config.search.engine = "wiki"
    config.search.retry.max_retries, config.search.retry.backoff_s = 2, 0.05
    manager = SearchGenerationManager(config, ScriptedWorkerGroup(tokenizer, SCRIPTS), tokenizer)
    metrics = manager.generate_sequences(make_batch(tokenizer, list(SCRIPTS), ANSWERS)).meta_info["metrics"]
    assert metrics["search/failures"] == 2 and metrics["search/retries"] == 2 * 2
    assert metrics["search/seconds"] >= 0.05 + 0.1  # the two backoffs, waited out by the searches in parallel
