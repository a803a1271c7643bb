import itertools

import pandas as pd
import pytest

from verl.utils.dataset import RLHFDataset
from verl.utils.tiny_model import build_tokenizer
from zerosearch.critic.judges import path_judge, states
from zerosearch.data.fields import row_supporting
from zerosearch.data.synthetic import ANSWER_TYPES, build_world, main, redraw_facts, write_world
from zerosearch.data.synthetic_tuning import (
    GUESS_DECISION,
    SEARCH_DECISION,
    simulation_pairs,
    warm_start_examples,
    write_simulation_pairs,
    write_warm_start,
)
from zerosearch.prompts import format_observation, parse_documents, policy_prompt
from zerosearch.search.base import SearchRequest
from zerosearch.search.corpus import BM25Index, CorpusSearch, format_document, load_corpus

SMALL = {"n_people": 16, "n_orgs": 8, "n_cities": 6, "n_countries": 3, "test_fraction": 0.25}


@pytest.fixture(scope="module")
def world():
    return build_world(seed=7)


def all_names(world):
    return [*world.people, *world.organisations, *world.cities, *world.countries]


def trajectories(rows):
    """Rows grouped by trajectory: each starts with an empty prefix."""
    groups = []
    for row in rows:
        if row["response_prefix"] == "":
            groups.append([])
        groups[-1].append(row)
    return groups


def test_deterministic_under_the_seed():
    a, b, c = build_world(seed=3, **SMALL), build_world(seed=3, **SMALL), build_world(seed=4, **SMALL)
    assert a.documents == b.documents and a.documents != c.documents
    assert a.train_questions == b.train_questions and a.test_questions == b.test_questions
    assert simulation_pairs(a, 3, 20, seed=1) == simulation_pairs(b, 3, 20, seed=1)
    assert warm_start_examples(a, 0.5, seed=1) == warm_start_examples(b, 0.5, seed=1)


def test_names_are_unique_and_never_inside_one_another(world):
    names = [n.lower() for n in all_names(world)]
    assert len(names) == len(set(names)) == len(world.people) + len(world.organisations) + 15 + 5
    for a, b in itertools.permutations(names, 2):
        assert a not in b, (a, b)


def test_every_answer_is_stated_where_the_search_leads(world):
    questions = world.train_questions + world.test_questions
    assert {q.hops for q in questions} == {1, 2, 3} and {q.answer_type for q in questions} == set(ANSWER_TYPES)
    assert len({q.id for q in questions}) == len(questions)
    for q in questions:
        for k, hop in enumerate(q.path):
            assert hop.entity in hop.query and hop.fact[0] == hop.entity
            assert states(world.document(hop.entity)["contents"], hop.fact)  # its document states its fact
            # each document names the next hop's entity (the bridge); the last one states the answer
            following = q.path[k + 1].entity if k + 1 < q.hops else q.answer
            assert hop.fact[1] == following and world.states(hop.entity, following)
        assert q.supporting() == tuple(hop.fact for hop in q.path)


def test_held_out_entities_never_appear_in_training_questions(world):
    assert world.train_questions and world.test_questions
    assert all(q.entity in world.test_entities for q in world.test_questions)
    train_text = " ".join(q.question for q in world.train_questions)
    train_entities = {hop.entity for q in world.train_questions for hop in q.path}
    for q in world.test_questions:
        assert not {hop.entity for hop in q.path} & train_entities and q.entity not in train_text
    for kind in ("person", "organisation", "city"):
        held_out = [n for n in world.entities(kind) if n in world.test_entities]
        assert 0 < len(held_out) < len(world.entities(kind))


@pytest.mark.parametrize("seed", [0, 7, 11])
def test_no_held_out_fact_is_trained_on_directly_or_as_a_hop(seed):
    """Before, 20 of 24 two-hop held-out questions had their second hop asked in training (the
    country of a city), so one search plus memory answered them. No entity of a held-out chain is
    searched in training."""
    world = build_world(seed=seed)
    trained = {fact for q in world.train_questions for fact in q.supporting()}
    held_out = {fact for q in world.test_questions for fact in q.supporting()}
    assert held_out and not held_out & trained
    for hops, least in ((2, 20), (3, 4)):
        chains = [q for q in world.test_questions if q.hops == hops]
        assert len(chains) >= least and all(hop.entity in world.test_entities for q in chains for hop in q.path)


@pytest.mark.parametrize("topk", [1, 3])
def test_nothing_held_out_leaks_into_simulator_tuning_or_the_warm_start(world, topk):
    """Before, 119 of 4000 tuning pairs taught the simulator a held-out entity's true document as a
    'noisy' one. Material built from training questions never shows a held-out entity."""
    held_out = [n for n in world.test_entities]
    pairs = simulation_pairs(world, topk, 2000, seed=3)
    warm = warm_start_examples(world, 1.0, seed=3, topk=topk)
    texts = [p["response"] for p in pairs] + [p["prompt"][0]["content"] for p in pairs]
    texts += [r["response_prefix"] + r["response"] for r in warm]
    for name in held_out:
        assert not any(name in text for text in texts), name


def test_practice_worlds_teach_held_out_names_with_invented_facts(world):
    """A held-out city that no tuning material names cannot be written by a tiny simulator (its
    output row is never trained). Practice worlds draw every fact anew, so they may show held-out
    entities: their names carry over, their facts do not."""
    practice = redraw_facts(world, seed=5)
    assert practice.practice and not world.practice
    assert set(practice.tuning_questions()) == set(practice.train_questions + practice.test_questions)
    texts = [p["response"] for p in simulation_pairs(practice, 1, 2000, seed=3)]
    assert all(any(city in text for text in texts) for city in world.cities if city in world.test_entities)
    truth = {q.id: q.answer for q in world.test_questions}
    redrawn = [q for q in practice.test_questions if q.answer_type == "year"]
    assert sum(q.answer == truth[q.id] for q in redrawn) <= 0.1 * len(redrawn)  # years agree by chance only


def test_files_load_as_trainer_data_and_corpus(tmp_path, world):
    paths = write_world(world, str(tmp_path / "out"))
    assert set(paths) == {"train", "test", "corpus"}
    docs = load_corpus(paths["corpus"])
    assert [{"id": d["id"], "contents": f"{d['title']}\n{d['text']}"} for d in docs] == world.documents
    tokenizer = build_tokenizer([d["contents"] for d in world.documents], 600)
    for split, questions in (("train", world.train_questions), ("test", world.test_questions)):
        dataset = RLHFDataset(paths[split], tokenizer, max_prompt_length=2048, filter_overlong_prompts=False)
        assert len(dataset) == len(questions)
        row, q = dataset[1], questions[1]
        assert row["data_source"] == f"synthetic_{q.hops}hop" and row["index"] == 1
        assert list(row["reward_model"]["ground_truth"]["target"]) == [q.answer]
        assert row["extra_info"]["question"] == q.question and row["extra_info"]["split"] == split
        assert row_supporting({"extra_info": [row["extra_info"]]}, 0) == q.supporting()  # the gold path's facts
        assert row["raw_prompt"] == tokenizer.apply_chat_template(
            [{"role": "user", "content": policy_prompt(q.question)}], add_generation_prompt=True, tokenize=False
        )
    with pytest.raises(ValueError, match="template"):
        write_world(world, str(tmp_path / "bad"), template="plain")


def test_bm25_finds_each_hop_first(tmp_path, world):
    path = write_world(world, str(tmp_path))["corpus"]
    questions = world.train_questions + world.test_questions
    hops = [(hop.query, hop.entity) for q in questions for hop in q.path]
    hits = BM25Index(load_corpus(path)).search([query for query, _ in hops], 1)
    assert [h[0][0]["title"] for h in hits] == [entity for _, entity in hops]
    q = next(q for q in questions if q.hops == 1)
    [result] = CorpusSearch(path, topk=2).search([SearchRequest(q.query)])
    assert result.documents[0] == format_document(world.document(q.entity)) and q.answer in result.documents[0]


def test_simulation_pairs_useful_state_the_answer_and_noisy_never(tmp_path, world):
    rows = simulation_pairs(world, topk=3, n_pairs=200, seed=0)
    assert sum(r["noisy"] for r in rows) == 100
    train_questions = {q.question for q in world.train_questions}
    for r in rows:
        prompt = r["prompt"][0]["content"]
        docs = parse_documents(r["response"], 3)
        assert r["response"].startswith("Doc 1: (Title: ") and len(docs) == 3
        if r["noisy"]:
            assert r["answer"].lower() not in r["response"].lower() and "Answer:" not in prompt
        else:
            assert r["answer"] in r["response"] and f"Answer: {r['answer']}" in prompt
            query = prompt.split("\n")[0].removeprefix("Query: ")
            assert docs[0].startswith("(Title: ") and docs[0].split(")")[0][8:] in query  # the searched entity first
            assert prompt.split("\n")[1].removeprefix("Question: ") in train_questions
    path = write_simulation_pairs(rows, str(tmp_path / "sim" / "pairs.parquet"))
    frame = pd.read_parquet(path)
    assert list(frame.columns) == ["prompt", "response", "noisy", "answer"] and len(frame) == 200
    assert list(frame["prompt"][0]) == rows[0]["prompt"]
    with pytest.raises(ValueError, match="topk"):
        simulation_pairs(world, topk=0, n_pairs=4, seed=0)


def test_one_document_replies_state_the_answer_when_asked_for_the_answering_hop(world):
    rows = simulation_pairs(world, topk=1, n_pairs=200, seed=0, answering_hop_only=True)
    assert all(len(parse_documents(r["response"], 5)) == 1 for r in rows)
    assert all((r["answer"] in r["response"]) != r["noisy"] for r in rows)
    multi_hop = {q.question: q for q in world.train_questions if q.hops > 1}
    asked = {
        r["prompt"][0]["content"].split("\n")[0]
        for r in rows
        if not r["noisy"] and r["prompt"][0]["content"].split("\n")[1].removeprefix("Question: ") in multi_hop
    }
    assert asked and asked <= {f"Query: {q.path[-1].query}" for q in multi_hop.values()}
    # Asked for a two-hop question's first hop, one document shows the entity that leads on.
    first_hops = simulation_pairs(world, topk=1, n_pairs=400, seed=1)
    assert any(r["answer"] not in r["response"] and not r["noisy"] for r in first_hops)


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.8, 1.0])
def test_warm_start_searches_at_the_given_rate(world, rate):
    groups = trajectories(warm_start_examples(world, rate, seed=2))
    assert len(groups) == len(world.train_questions)
    searched = [g for g in groups if "<search>" in g[0]["response"]]
    assert abs(len(searched) / len(groups) - rate) < 0.08
    assert all(len(g) == 1 for g in groups if g not in searched)


@pytest.mark.parametrize("rate", [0.0, 1.0])
def test_warm_start_can_leave_the_decision_to_search_untrained(world, rate):
    decided, undecided = (
        warm_start_examples(world, rate, seed=3),
        warm_start_examples(world, rate, seed=3, decide=False),
    )
    assert len(decided) == len(undecided)
    for a, b in zip(decided, undecided, strict=True):
        assert (
            a["prompt"] == b["prompt"] and a["response_prefix"] + a["response"] == b["response_prefix"] + b["response"]
        )
        if a["response_prefix"] == "":  # a trajectory's first turn: the choice is in the prefix, not trained
            assert b["response_prefix"] == (SEARCH_DECISION if rate else GUESS_DECISION)
        else:
            assert a == b


def test_held_out_names_are_new_combinations_of_known_words(world):
    """Names are drawn from shared pools, so a held-out entity's name is made of words the training
    questions also use; only the combination is new."""
    train_words = {w for q in world.train_questions for w in q.question.rstrip("?").split()}
    held_out = [n for n in [*world.people, *world.organisations] if n in world.test_entities]
    words = [w for n in held_out for w in n.split()]
    assert all(n not in q.question for n in held_out for q in world.train_questions)
    assert sum(w in train_words for w in words) / len(words) > 0.8
    assert len({n.split()[0] for n in world.people}) < len(world.people) / 3


@pytest.mark.parametrize("topk", [1, 2])
def test_warm_start_rows_replay_a_corpus_search(tmp_path, world, topk):
    rows = warm_start_examples(world, 0.5, seed=0, topk=topk)
    by_question = {policy_prompt(q.question): q for q in world.train_questions}
    seen_hops = set()
    for group in trajectories(rows):
        q = by_question[group[0]["prompt"][0]["content"]]
        assert all(
            set(r) == {"prompt", "response_prefix", "response"} and r["prompt"] == group[0]["prompt"] for r in group
        )
        last = group[-1]["response"]
        assert last.startswith("<think>") and last.count("<answer>") == 1 and last.endswith("</answer>")
        if len(group) == 1:  # a guess: some value of the right type
            assert last.split("<answer> ")[1].removesuffix(" </answer>") in world.values(q.answer_type)
            continue
        seen_hops.add(q.hops)
        assert len(group) == q.hops + 1 and last.endswith(f"<answer> {q.answer} </answer>")
        for i, hop in enumerate(q.path):
            prefix, action, following = group[i]["response_prefix"], group[i]["response"], group[i + 1]
            assert action.endswith(f"<search> {hop.query} </search>")
            observation = following["response_prefix"].removeprefix(prefix + action)
            docs = parse_documents(observation.split("<information>")[1].split("</information>")[0], 5)
            assert len(docs) == topk and docs[0] == format_document(world.document(hop.entity))
            assert observation == format_observation(docs)
    assert seen_hops == {1, 2, 3}
    frame = pd.read_parquet(write_warm_start(rows, str(tmp_path / "warm.parquet")))
    assert list(frame.columns) == ["prompt", "response_prefix", "response"] and len(frame) == len(rows)
    with pytest.raises(ValueError, match="search_rate"):
        warm_start_examples(world, 1.5, seed=0)


def test_warm_start_wastes_searches_that_the_path_judge_calls_useless(world):
    """With useless_rate, some searching trajectories make one repeated or off-path search; the
    path judge finds exactly the inserted ones useless, over the documents the rows show."""
    by_question = {policy_prompt(q.question): q for q in world.train_questions}
    rows = warm_start_examples(world, 1.0, seed=4, topk=2, useless_rate=0.5)
    wasted, searches, repeats = 0, 0, 0
    for group in trajectories(rows):
        q = by_question[group[0]["prompt"][0]["content"]]
        observations = [
            parse_documents(following["response_prefix"].split("<information>")[-1].split("</information>")[0], 5)
            for following in group[1:]
        ]
        verdicts = path_judge(observations, [q.answer], q.supporting())
        assert len(verdicts) in (q.hops, q.hops + 1) and sum(verdicts) == q.hops  # every hop of the path, once
        wasted += len(verdicts) - q.hops
        searches += len(verdicts)
        queries = [g["response"].split("<search> ")[-1] for g in group[:-1]]
        repeats += len(queries) != len(set(queries))
    assert 0.15 < wasted / searches < 0.3 and 0 < repeats < wasted  # both kinds of waste
    clean = warm_start_examples(world, 1.0, seed=4, topk=2)
    assert len(clean) == sum(q.hops + 1 for q in world.train_questions)
    with pytest.raises(ValueError, match="useless_rate"):
        warm_start_examples(world, 1.0, useless_rate=2)


def test_redrawn_facts_keep_names_and_split_but_not_answers(world):
    other = redraw_facts(world, seed=11)
    assert all_names(other) == all_names(world) and other.test_entities == world.test_entities
    assert {q.id for q in other.test_questions} == {q.id for q in world.test_questions}
    assert not {hop.entity for q in other.train_questions for hop in q.path} & world.test_entities
    answers = {q.id: q.answer for q in world.train_questions}
    changed = [q for q in other.train_questions if q.answer != answers.get(q.id, q.answer)]
    assert len(changed) > 0.6 * len(other.train_questions)
    for q in other.train_questions:  # the redrawn documents state the redrawn answers
        assert other.states(q.path[-1].entity, q.answer)
    assert redraw_facts(world, seed=11).documents == other.documents


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="test_fraction"):
        build_world(test_fraction=0)
    with pytest.raises(ValueError, match="n_cities"):
        build_world(n_cities=1)
    with pytest.raises(ValueError, match="no rows"):
        write_warm_start([], "unused.parquet")


def test_cli_writes_the_world(tmp_path, capsys):
    main(
        [
            str(tmp_path),
            "--seed",
            "1",
            "--people",
            "10",
            "--orgs",
            "5",
            "--cities",
            "4",
            "--countries",
            "2",
            "--test-fraction",
            "0.3",
            "--template",
            "base",
        ]
    )
    out = capsys.readouterr().out
    for name in ("train.parquet", "test.parquet", "corpus.jsonl"):
        assert f"{tmp_path / name}" in out and (tmp_path / name).is_file()
    assert isinstance(pd.read_parquet(tmp_path / "test.parquet")["prompt"][0], str)
