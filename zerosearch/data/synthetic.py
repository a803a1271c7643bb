"""An invented world for the CPU demonstration: people, organisations and cities with made-up names,
one corpus document per entity and questions about them. No pretrained model can know these facts,
so a policy scores only by searching.

    python -m zerosearch.data.synthetic OUT_DIR [--seed 0] [--people 60] [--orgs 30] [--cities 15] \\
        [--countries 5] [--test-fraction 0.2] [--template chat|base]

Besides the trainer's files (``train.parquet``, ``test.parquet``, ``corpus.jsonl``) the world yields
copies of itself with redrawn facts (``redraw_facts``) to practise on, and
(``zerosearch.data.synthetic_tuning``) tuning pairs for the simulation LLM and supervised
warm-start turns for the policy.

Over 400 lines on purpose: entities, invented names, questions and the files written from them
are one generator drawing from one seeded random stream, in the order it draws.
"""

import argparse
import json
import math
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path

from zerosearch.data.prepare import TEMPLATES, write_split
from zerosearch.prompts import (
    POLICY_INSTRUCTION,
    with_critiques,
)

PERSON, ORGANISATION, CITY = "person", "organisation", "city"
ANSWER_TYPES = ("person", "city", "country", "year")
DATA_SOURCES = {1: "synthetic_1hop", 2: "synthetic_2hop", 3: "synthetic_3hop"}

_PERSON_DOC = "{name} was born in {city} in {year}."
_ORGANISATION_DOC = "{name} was founded by {founder} in {year}."
_CITY_DOC = "{name} is a city in the country of {country}."
_ORGANISATION_KINDS = ("Press", "Guild", "Works", "Foundry", "Society", "Company", "Mills", "Institute")
# Invented words never hide inside the fixed wording, and the fixed words never hide inside them,
# so "is the answer in this document" is a plain substring test.
_FIXED_TEXT = " ".join([_PERSON_DOC, _ORGANISATION_DOC, _CITY_DOC, *_ORGANISATION_KINDS]).lower()

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "st", "tr")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "", "", "n", "l", "r", "s")
_NAME_ATTEMPTS = 100_000


@dataclass(frozen=True)
class Person:
    city: str
    year: int


@dataclass(frozen=True)
class Organisation:
    founder: str
    year: int


@dataclass(frozen=True)
class City:
    country: str


@dataclass(frozen=True)
class Hop:
    """One search of a question's gold path."""

    entity: str  # whose document the search should bring
    query: str  # what a good searcher asks
    fact: tuple[str, ...]  # what that document states that the path needs: (entity, value)


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answer: str
    answer_type: str  # one of ANSWER_TYPES
    path: tuple[Hop, ...]  # the gold path: one hop per search; the last hop's document states the answer

    @property
    def hops(self) -> int:
        return len(self.path)

    @property
    def entity(self) -> str:
        """What the question is about: its first hop's entity."""
        return self.path[0].entity

    @property
    def query(self) -> str:
        return self.path[0].query

    def searches(self) -> list[tuple[str, str]]:
        """(entity, query) of each hop in order: what a good searcher looks up."""
        return [(hop.entity, hop.query) for hop in self.path]

    def supporting(self) -> tuple[tuple[str, ...], ...]:
        """The facts of the gold path, as ``extra_info.supporting`` holds them."""
        return tuple(hop.fact for hop in self.path)


@dataclass
class World:
    seed: int
    people: dict[str, Person]
    organisations: dict[str, Organisation]
    cities: dict[str, City]
    countries: list[str]
    documents: list[dict]  # {"id", "contents": "Name\ntext"}, the corpus layout
    train_questions: list[Question]
    test_questions: list[Question]
    test_entities: frozenset[str]
    # A practice world (``redraw_facts``): its facts are drawn anew, true of no world a model is
    # tested on, so material built from it may use every entity, held-out ones included.
    practice: bool = False
    _documents: dict[str, dict] = field(init=False, repr=False)
    _links: dict[str, list[str]] = field(init=False, repr=False)

    def __post_init__(self):
        self._documents = {d["contents"].partition("\n")[0]: d for d in self.documents}
        self._links = {name: [] for name in self._documents}
        facts = [(p, v.city) for p, v in self.people.items()]
        facts += [(o, v.founder) for o, v in self.organisations.items()]
        for a, b in facts:
            self._links[a].append(b)
            self._links[b].append(a)

    def document(self, name: str) -> dict:
        if name not in self._documents:
            raise KeyError(f"no document about {name!r} in this world (seed {self.seed})")
        return self._documents[name]

    def kind(self, name: str) -> str:
        for kind, group in ((PERSON, self.people), (ORGANISATION, self.organisations), (CITY, self.cities)):
            if name in group:
                return kind
        raise KeyError(f"{name!r} is not a person, organisation or city of this world (seed {self.seed})")

    def entities(self, kind: str) -> list[str]:
        groups: dict[str, dict[str, Person] | dict[str, Organisation] | dict[str, City]] = {
            PERSON: self.people,
            ORGANISATION: self.organisations,
            CITY: self.cities,
        }
        return list(groups[kind])

    def related(self, name: str) -> list[str]:
        """Entities sharing a fact with ``name``: a person's birth city and organisations, an
        organisation's founder, a city's natives."""
        return list(self._links[name])

    def values(self, answer_type: str) -> list[str]:
        """Every answer of that type the world holds: the pool a guess is drawn from."""
        if answer_type == "year":
            years = {p.year for p in self.people.values()} | {o.year for o in self.organisations.values()}
            return [str(y) for y in sorted(years)]
        pools = {"person": list(self.people), "city": list(self.cities), "country": list(self.countries)}
        if answer_type not in pools:
            raise ValueError(f"answer type must be one of {ANSWER_TYPES}, got {answer_type!r}")
        return pools[answer_type]

    def tuning_questions(self) -> list[Question]:
        """The questions training material may be built from: the training questions, or in a
        practice world every question (it teaches held-out names and reading, never their facts)."""
        return self.train_questions + self.test_questions if self.practice else self.train_questions

    def states(self, name: str, answer: str) -> bool:
        return answer.lower() in self.document(name)["contents"].lower()


def build_world(
    seed: int = 0,
    n_people: int = 60,
    n_orgs: int = 30,
    n_cities: int = 15,
    n_countries: int = 5,
    test_fraction: float = 0.2,
) -> World:
    """A world drawn from ``seed``. ``test_fraction`` of each kind of entity is held out: questions
    about them form the test set. Held-out entities link only to held-out ones (their people are
    born in held-out cities, their organisations founded by held-out people) and training entities
    only to training ones, so no held-out question's fact is asked, directly or as a hop, by a
    training question, and no training question's search shows a held-out entity's document."""
    for flag, n in (("n_people", n_people), ("n_orgs", n_orgs), ("n_cities", n_cities)):
        if n < 2:
            raise ValueError(f"{flag} must be at least 2 (one training and one held-out entity), got {n}")
    if n_countries < 1:
        raise ValueError(f"n_countries must be at least 1, got {n_countries}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    rng = random.Random(seed)
    taken: list[str] = []
    countries = [_invent(rng, taken) for _ in range(n_countries)]
    city_names = [_invent(rng, taken) for _ in range(n_cities)]
    # People and organisations take their names from shared pools of given names and surnames, as
    # real ones do: a held-out entity is a new combination of words seen elsewhere, so writing its
    # name means copying it from the question, not recalling it.
    pool = max(2, math.ceil(math.sqrt(3 * n_people)))
    given_names = [_invent(rng, taken) for _ in range(pool)]
    surnames = [_invent(rng, taken) for _ in range(pool)]
    person_names = _combinations(rng, given_names, surnames, n_people, "people")
    organisation_names = _combinations(rng, surnames, _ORGANISATION_KINDS, n_orgs, "organisations")
    test_entities = set()
    for group in (person_names, organisation_names, city_names):
        held_out = min(max(round(len(group) * test_fraction), 1), len(group) - 1)
        test_entities.update(rng.sample(group, held_out))
    world = _with_facts(seed, rng, countries, city_names, person_names, organisation_names, frozenset(test_entities))
    if not world.train_questions or not world.test_questions:
        raise ValueError(
            f"test_fraction={test_fraction} leaves {len(world.train_questions)} training and "
            f"{len(world.test_questions)} test questions in a world of {n_people} people, {n_orgs} "
            f"organisations, {n_cities} cities; change the fraction or the sizes"
        )
    return world


def redraw_facts(world: World, seed: int) -> World:
    """A practice world: the same entities, names and held-out split with every fact drawn anew from
    ``seed``. Trained on such worlds, a model cannot recall an answer and must read it off a document."""
    return _with_facts(
        world.seed,
        random.Random(seed),
        world.countries,
        list(world.cities),
        list(world.people),
        list(world.organisations),
        world.test_entities,
        practice=True,
    )


def _with_facts(
    seed: int,
    rng: random.Random,
    countries: list[str],
    city_names: list[str],
    person_names: list[str],
    organisation_names: list[str],
    test_entities: frozenset[str],
    practice: bool = False,
) -> World:
    def same_side(name: str, candidates: list[str]) -> list[str]:
        """The candidates on ``name``'s side of the split: facts never link held-out and training entities."""
        return [c for c in candidates if (c in test_entities) == (name in test_entities)]

    cities = {name: City(country=rng.choice(countries)) for name in city_names}
    people = {
        name: Person(city=rng.choice(same_side(name, city_names)), year=rng.randint(1800, 1960))
        for name in person_names
    }
    organisations = {}
    for name in organisation_names:
        founder = rng.choice(same_side(name, person_names))
        organisations[name] = Organisation(founder=founder, year=people[founder].year + rng.randint(20, 60))

    texts = [(n, _PERSON_DOC.format(name=n, city=p.city, year=p.year)) for n, p in people.items()]
    texts += [(n, _ORGANISATION_DOC.format(name=n, founder=o.founder, year=o.year)) for n, o in organisations.items()]
    texts += [(n, _CITY_DOC.format(name=n, country=c.country)) for n, c in cities.items()]
    documents = [{"id": str(i), "contents": f"{name}\n{text}"} for i, (name, text) in enumerate(texts)]

    questions = _questions(people, organisations, cities)
    train = [q for q in questions if q.entity not in test_entities]
    test = [q for q in questions if q.entity in test_entities]
    rng.shuffle(train)  # batches mix kinds of question
    return World(
        seed=seed,
        people=people,
        organisations=organisations,
        cities=cities,
        countries=countries,
        documents=documents,
        train_questions=train,
        test_questions=test,
        test_entities=test_entities,
        practice=practice,
    )


def _combinations(rng: random.Random, firsts, seconds, n: int, what: str) -> list[str]:
    """``n`` distinct "first second" names."""
    if n > len(firsts) * len(seconds):
        raise ValueError(f"cannot name {n} {what} from {len(firsts)}x{len(seconds)} combinations")
    return [f"{a} {b}" for a, b in rng.sample([(a, b) for a in firsts for b in seconds], n)]


def _invent(rng: random.Random, taken: list[str]) -> str:
    """A new capitalised word, mostly of two syllables (short names cost a tiny model fewer tokens),
    neither inside nor containing any word in ``taken``."""
    for _ in range(_NAME_ATTEMPTS):
        syllables = 3 if rng.random() < 0.2 else 2
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))
        if word in _FIXED_TEXT or any(k.lower() in word for k in _ORGANISATION_KINDS):
            continue
        if any(word in t or t in word for t in taken):
            continue
        taken.append(word)
        return word.capitalize()
    raise ValueError(f"could not invent a name distinct from {len(taken)} others; ask for a smaller world")


def _questions(people, organisations, cities) -> list[Question]:
    """One- to three-hop questions; a hop's fact pairs the entity searched with the value its
    document gives (a name, a place, a year)."""

    def person(name: str, value: str) -> Hop:
        return Hop(name, f"{name} born", (name, value))

    def organisation(name: str, value: str) -> Hop:
        return Hop(name, f"{name} founded", (name, value))

    def city(name: str) -> Hop:
        return Hop(name, f"{name} country", (name, cities[name].country))

    questions = []
    for name, p in people.items():
        questions += [
            Question(f"birth_city/{name}", f"Where was {name} born?", p.city, "city", (person(name, p.city),)),
            Question(
                f"birth_year/{name}",
                f"In which year was {name} born?",
                str(p.year),
                "year",
                (person(name, str(p.year)),),
            ),
            Question(
                f"birth_country/{name}",
                f"In which country was {name} born?",
                cities[p.city].country,
                "country",
                (person(name, p.city), city(p.city)),
            ),
        ]
    for name, o in organisations.items():
        founder = people[o.founder]
        by = organisation(name, o.founder)
        questions += [
            Question(f"founder/{name}", f"Who founded {name}?", o.founder, "person", (by,)),
            Question(
                f"founding_year/{name}",
                f"In which year was {name} founded?",
                str(o.year),
                "year",
                (organisation(name, str(o.year)),),
            ),
            Question(
                f"founder_city/{name}",
                f"Where was the founder of {name} born?",
                founder.city,
                "city",
                (by, person(o.founder, founder.city)),
            ),
            Question(
                f"founder_year/{name}",
                f"In which year was the founder of {name} born?",
                str(founder.year),
                "year",
                (by, person(o.founder, str(founder.year))),
            ),
            Question(
                f"founder_country/{name}",
                f"In which country was the founder of {name} born?",
                cities[founder.city].country,
                "country",
                (by, person(o.founder, founder.city), city(founder.city)),
            ),
        ]
    for name, c in cities.items():
        questions.append(
            Question(f"country/{name}", f"In which country is {name}?", c.country, "country", (city(name),))
        )
    return questions


def write_world(
    world: World, out_dir: str, template: str = "chat", instruction: str = POLICY_INSTRUCTION
) -> dict[str, str]:
    """Write ``train.parquet``, ``test.parquet`` (the trainer's layout, prompts from ``instruction``)
    and ``corpus.jsonl``; return their paths under the keys ``train``, ``test`` and ``corpus``."""
    if template not in TEMPLATES:
        raise ValueError(f"template must be one of {TEMPLATES}, got {template!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, questions in (("train", world.train_questions), ("test", world.test_questions)):
        examples = [
            (
                DATA_SOURCES[q.hops],
                {"question": q.question, "answers": [q.answer], "id": q.id, "supporting": q.supporting()},
            )
            for q in questions
        ]
        paths[split] = write_split(examples, split, template, out, instruction)
    corpus = out / "corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in world.documents)
    paths["corpus"] = str(corpus)
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m zerosearch.data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder to write train.parquet, test.parquet and corpus.jsonl into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--people", type=int, default=60)
    parser.add_argument("--orgs", type=int, default=30, help="organisations")
    parser.add_argument("--cities", type=int, default=15)
    parser.add_argument("--countries", type=int, default=5)
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of each kind of entity held out")
    parser.add_argument(
        "--template",
        choices=TEMPLATES,
        default="chat",
        help="chat: a user message for instruct models; base: the plain prompt text",
    )
    parser.add_argument(
        "--critiques",
        action="store_true",
        help="the instruction announces the critic's comments after searches (critictor.interactive.enable)",
    )
    args = parser.parse_args(argv)
    try:
        world = build_world(
            args.seed,
            n_people=args.people,
            n_orgs=args.orgs,
            n_cities=args.cities,
            n_countries=args.countries,
            test_fraction=args.test_fraction,
        )
        instruction = with_critiques(POLICY_INSTRUCTION) if args.critiques else POLICY_INSTRUCTION
        paths = write_world(world, args.out_dir, template=args.template, instruction=instruction)
    except ValueError as e:
        sys.exit(f"error: {e}")
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
