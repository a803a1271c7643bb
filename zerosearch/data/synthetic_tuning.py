"""Tuning sets drawn from a synthetic world (``zerosearch.data.synthetic``): the documents a search
would show, the simulation LLM's (query, useful|noisy) -> documents pairs, and the policy's
supervised warm-start turns, some with searches that bring nothing new.
"""

import random
from pathlib import Path

import pandas as pd

from zerosearch.critic.judges import states
from zerosearch.data.synthetic import CITY, ORGANISATION, PERSON, Question, World
from zerosearch.prompts import (
    POLICY_INSTRUCTION,
    format_observation,
    observation_body,
    policy_prompt,
    simulator_messages,
)
from zerosearch.search.corpus import format_document


def _nearby(world: World, focus: str, rng: random.Random) -> list[str]:
    """Every other entity, those sharing a fact with ``focus`` first, then those of its kind, then
    the rest, shuffled within each group. Outside practice worlds only those on ``focus``'s side of
    the held-out split: material about training questions never shows a held-out entity's document."""
    held_out = focus in world.test_entities
    linked = world.related(focus)
    same = [n for n in world.entities(world.kind(focus)) if n != focus and n not in linked]
    rest = [
        n
        for kind in (PERSON, ORGANISATION, CITY)
        if kind != world.kind(focus)
        for n in world.entities(kind)
        if n not in linked
    ]
    ordered = []
    for group in (linked, same, rest):
        group = [n for n in dict.fromkeys(group) if world.practice or (n in world.test_entities) == held_out]
        rng.shuffle(group)
        ordered += group
    return ordered


def _useful(world: World, q: Question, focus: str, rng: random.Random) -> list[str]:
    """The searched entity first, then the question's other hop, then related facts: all true."""
    hops = [entity for entity, _ in q.searches()]
    return list(dict.fromkeys([focus, *hops, *_nearby(world, focus, rng)]))


def _noisy(world: World, q: Question, focus: str, rng: random.Random) -> list[str]:
    """Related entities other than the question's own, none of whose documents states the answer."""
    own = {entity for entity, _ in q.searches()}
    return [n for n in _nearby(world, focus, rng) if n not in own and not world.states(n, q.answer)]


def _shown(world: World, names: list[str]) -> list[str]:
    """Documents as the corpus backend shows them: ``(Title: T) text``."""
    return [format_document(world.document(n)) for n in names]


def simulation_pairs(
    world: World,
    topk: int,
    n_pairs: int,
    seed: int = 0,
    questions: list[Question] | None = None,
    answering_hop_only: bool = False,
) -> list[dict]:
    """Tuning pairs for the simulation LLM, alternately useful and noisy, from ``questions`` (by
    default ``world.tuning_questions()``):
    ``{"prompt": chat messages, "response": "Doc 1: …\nDoc 2: …", "noisy": bool, "answer": str}``.
    A request is for one hop's query. A useful reply shows that hop's document first, then the
    question's other hops, so it states the answer when it asks for the answering hop or has room
    for it; a noisy reply never states the answer. ``answering_hop_only`` asks only for the hop whose
    document states the answer (the last of the path)."""
    if topk < 1:
        raise ValueError(f"topk must be at least 1, got {topk}")
    if n_pairs < 1:
        raise ValueError(f"n_pairs must be at least 1, got {n_pairs}")
    questions = world.tuning_questions() if questions is None else questions
    if not questions:
        raise ValueError("simulation_pairs: no questions to build pairs from")
    rng = random.Random(seed)
    rows = []
    for i in range(n_pairs):
        q = rng.choice(questions)
        hops = q.searches()
        focus, query = hops[-1] if answering_hop_only else rng.choice(hops)
        noisy = i % 2 == 1
        names = (_noisy if noisy else _useful)(world, q, focus, rng)[:topk]
        rows.append(
            {
                "prompt": simulator_messages(query, q.question, [q.answer], noisy, topk, style="sft"),
                "response": observation_body(_shown(world, names)),
                "noisy": noisy,
                "answer": q.answer,
            }
        )
    return rows


SEARCH_DECISION = "<think>I need to look up"
GUESS_DECISION = "<think>I think I know this."


def warm_start_examples(
    world: World,
    search_rate: float,
    seed: int = 0,
    decide: bool = True,
    topk: int = 2,
    instruction: str = POLICY_INSTRUCTION,
    useless_rate: float = 0.0,
) -> list[dict]:
    """Supervised turns for the policy, one trajectory per question of ``world.tuning_questions()``
    (the training questions; every question of a practice world): with probability
    ``search_rate`` it searches its gold path (one example per turn, each after the earlier turns
    and their observations of ``topk`` documents, in ``response_prefix``), otherwise it guesses a
    value of the right type in one turn. With probability ``useless_rate`` a searching trajectory
    also makes one useless search at a random point of its path: the previous query again, or a
    query about an entity off the path. That is the waste a turn reward can teach away.

    With ``decide=False`` the opening words that choose between searching and guessing go into
    ``response_prefix``, untrained: such rows teach how to search (copy names into queries, read
    answers off documents) without moving the policy's choice of whether to."""
    for name, rate in (("search_rate", search_rate), ("useless_rate", useless_rate)):
        if not 0 <= rate <= 1:
            raise ValueError(f"{name} must be between 0 and 1, got {rate}")
    if topk < 1:
        raise ValueError(f"topk must be at least 1, got {topk}")
    rng = random.Random(seed)
    rows = []
    for q in world.tuning_questions():
        prompt = [{"role": "user", "content": policy_prompt(q.question, instruction)}]
        if rng.random() < search_rate:
            turns = _searched_turns(world, q, rng, topk, useless=rng.random() < useless_rate)
        else:
            guess = rng.choice(world.values(q.answer_type))
            turns = [{"response_prefix": "", "response": f"{GUESS_DECISION}</think><answer> {guess} </answer>"}]
        if not decide:
            opening = turns[0]["response"]
            decision = SEARCH_DECISION if opening.startswith(SEARCH_DECISION) else GUESS_DECISION
            turns[0] = {"response_prefix": decision, "response": opening[len(decision) :]}
        rows += [{"prompt": prompt, **turn} for turn in turns]
    return rows


_QUERY_SUFFIX = {PERSON: "born", ORGANISATION: "founded", CITY: "country"}


def _searched_turns(world: World, q: Question, rng: random.Random, topk: int, useless: bool) -> list[dict]:
    """The gold path's searches in order, then the answer; with ``useless``, one more search before
    a random hop: a repeat of the last search, or (before the first, or by a coin) an off-path one."""
    searches = []  # (reasoning, focus entity, query)
    for k, hop in enumerate(q.path):
        opening = (
            f"{SEARCH_DECISION} {hop.entity}."
            if k == 0
            else f"<think>That leads to {hop.entity}; I need to look it up."
        )
        searches.append((opening, hop.entity, hop.query))
    if useless:
        k = rng.randrange(len(searches))
        off_path = _off_path(world, q, rng)
        if k == 0 or rng.random() < 0.5:
            if off_path:
                entity = off_path[0]
                opening = (
                    f"{SEARCH_DECISION} {entity}." if k == 0 else f"<think>Maybe {entity} helps; I need to look it up."
                )
                searches.insert(k, (opening, entity, f"{entity} {_QUERY_SUFFIX[world.kind(entity)]}"))
        else:
            _, entity, query = searches[k - 1]
            searches.insert(k, (f"<think>I need to look up {entity} again.", entity, query))
    turns, prefix = [], ""
    for opening, focus, query in searches:
        action = f"{opening}</think><search> {query} </search>"
        turns.append({"response_prefix": prefix, "response": action})
        # What a corpus search would return: the searched entity's document, then distractors.
        prefix += action + format_observation(_shown(world, [focus, *_noisy(world, q, focus, rng)[: topk - 1]]))
    answer = f"<think>The information gives the answer.</think><answer> {q.answer} </answer>"
    turns.append({"response_prefix": prefix, "response": answer})
    return turns


def _off_path(world: World, q: Question, rng: random.Random) -> list[str]:
    """Entities near the question's first one whose documents state no fact of its path."""
    return [
        n
        for n in _nearby(world, q.entity, rng)
        if not any(states(world.document(n)["contents"], fact) for fact in q.supporting())
    ]


def write_simulation_pairs(rows: list[dict], path: str) -> str:
    """Parquet with columns ``prompt`` (chat list), ``response``, ``noisy``, ``answer``."""
    return _write_rows(rows, path, ("prompt", "response", "noisy", "answer"))


def write_warm_start(rows: list[dict], path: str) -> str:
    """Parquet with columns ``prompt`` (chat list), ``response_prefix``, ``response``."""
    return _write_rows(rows, path, ("prompt", "response_prefix", "response"))


def _write_rows(rows: list[dict], path: str, columns: tuple[str, ...]) -> str:
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    for i, row in enumerate(rows):
        if set(row) != set(columns):
            raise ValueError(f"row {i} has keys {sorted(row)}, expected {sorted(columns)}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=list(columns)).to_parquet(path, index=False)
    return str(path)
