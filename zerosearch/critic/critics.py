"""Critic backends: an LLM (an OpenAI-compatible server or a model on a Ray actor, through
``zerosearch.llm``) or ``rule``, a heuristic oracle for ablations and for labelling a critic's
training data. Both grade every search turn of a trajectory and write one-line critiques."""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from zerosearch import prompts
from zerosearch.critic.turns import Turn, oracle_useful
from zerosearch.llm import ChatLLM

Verdicts = list[tuple[bool, str]]  # (useful, reason) per search turn, in order


@dataclass(frozen=True)
class Trajectory:
    """What the retrospective critic sees of one rollout: the gold answers are privileged."""

    question: str
    golden_answers: tuple[str, ...]
    turns: Sequence[Turn]
    final_answer: str | None

    def searches(self) -> list[Turn]:
        """The searches that ran (a search on the last turn, or past the budget, never does)."""
        return [turn for turn in self.turns if turn.searched()]


@dataclass(frozen=True)
class CritiqueRequest:
    question: str
    turn: Turn  # a search turn whose documents arrived
    vague: bool  # ask for a deliberately vague line
    golden_answers: tuple[str, ...] | None  # only when critictor.interactive.privileged


class RuleCritic:
    """Grades by the oracle; its critiques are fixed lines."""

    name = "rule"
    CLEAR = {
        True: "The documents state the answer; read it off them.",
        False: "The documents do not hold the answer; search for something else.",
    }
    VAGUE = "Think about whether these documents help."

    def __init__(self) -> None:
        self.stats: Counter[str] = Counter()

    def grade(self, trajectories: Sequence[Trajectory]) -> list[Verdicts | None]:
        self.stats["requests"] += len(trajectories)
        return [
            [
                (useful, "a gold answer is in the documents" if useful else "no gold answer in the documents")
                for useful in (oracle_useful(t.documents or [], r.golden_answers) for t in r.searches())
            ]
            for r in trajectories
        ]

    def critique(self, requests: Sequence[CritiqueRequest]) -> list[str | None]:
        self.stats["requests"] += len(requests)
        return [
            self.VAGUE if r.vague else self.CLEAR[oracle_useful(r.turn.documents or [], r.golden_answers or ())]
            for r in requests
        ]


class LLMCritic:
    """One grading request per trajectory, all concurrent; a reply whose verdicts do not parse is
    retried, then counted as a failure and gives no turn reward."""

    name = "llm"

    def __init__(self, llm: ChatLLM, max_tokens: int, temperature: float, critique_tokens: int, style: str = "prompt"):
        if style not in prompts.CRITIC_STYLES:
            raise ValueError(f"critictor.style must be one of {prompts.CRITIC_STYLES}, got {style!r}")
        self.llm, self.style = llm, style
        self.max_tokens, self.temperature, self.critique_tokens = max_tokens, temperature, critique_tokens
        self.stats = llm.stats  # the LLM counts retries; requests and failures are added here

    def grade(self, trajectories: Sequence[Trajectory]) -> list[Verdicts | None]:
        """Trajectories without a search need no request: their verdict list is empty."""
        asked = [i for i, r in enumerate(trajectories) if r.searches()]
        conversations = [
            prompts.grading_messages(
                r.question,
                r.golden_answers,
                [(t.thought(), t.content, t.documents or []) for t in r.searches()],
                r.final_answer,
                self.style,
            )
            for r in (trajectories[i] for i in asked)
        ]
        searches = [len(trajectories[i].searches()) for i in asked]
        checks = [lambda text, n=n: prompts.parse_verdicts(text, n) is not None for n in searches]
        replies = self.llm.complete(conversations, self.max_tokens, self.temperature, accept=checks)
        verdicts: list[Verdicts | None] = [[] for _ in trajectories]
        for i, reply, n in zip(asked, replies, searches, strict=True):
            verdicts[i] = None if reply is None else prompts.parse_verdicts(reply, n)
        self.stats["requests"] += len(asked)
        self.stats["failures"] += sum(verdicts[i] is None for i in asked)
        return verdicts

    def critique(self, requests: Sequence[CritiqueRequest]) -> list[str | None]:
        conversations = [
            prompts.critique_messages(
                r.question,
                r.turn.thought(),
                r.turn.content,
                r.turn.documents or [],
                r.vague,
                r.golden_answers,
                self.style,
            )
            for r in requests
        ]
        replies = self.llm.complete(
            conversations, self.critique_tokens, self.temperature, accept=lambda text: bool(text.strip())
        )
        self.stats["requests"] += len(requests)
        self.stats["failures"] += sum(reply is None for reply in replies)
        return replies
