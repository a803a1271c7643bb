"""Critic backends: an LLM (an OpenAI-compatible server or a model on a Ray actor, through
``zerosearch.llm``) or ``rule``, a rule judge (``judges``) for ablations, controls and labelling a
critic's training data. Both grade every search turn of a trajectory and write one-line critiques."""

import random
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from zerosearch import prompts
from zerosearch.critic.judges import JUDGES, Fact
from zerosearch.critic.turns import Turn
from zerosearch.llm import ChatLLM

Verdicts = list[tuple[bool, str]]  # (useful, reason) per search turn, in order


@dataclass(frozen=True)
class Trajectory:
    """What the retrospective critic sees of one rollout: the gold answers are privileged."""

    question: str
    golden_answers: tuple[str, ...]
    turns: Sequence[Turn]
    final_answer: str | None
    supporting: tuple[Fact, ...] = ()  # the gold path's facts, where the data has them

    def searches(self) -> list[Turn]:
        """The searches that ran (a search on the last turn, or past the budget, never does)."""
        return [turn for turn in self.turns if turn.searched()]

    def judged(self, judge: str = "path") -> list[bool]:
        """A rule judge's verdict on each search that ran (``judges.JUDGES``)."""
        documents = [turn.documents or [] for turn in self.searches()]
        return JUDGES[judge](documents, self.golden_answers, self.supporting)


@dataclass(frozen=True)
class CritiqueRequest:
    question: str
    turn: Turn  # a search turn whose documents arrived
    vague: bool  # ask for a deliberately vague line
    golden_answers: tuple[str, ...] | None  # only when critictor.interactive.privileged
    supporting: tuple[Fact, ...] = ()  # the gold path's facts: privileged too
    earlier: tuple[Sequence[str], ...] = ()  # the documents of the trajectory's earlier searches


class RuleCritic:
    """Grades with a rule judge: ``path`` (the reference), ``answer`` (a gold answer in the
    documents), or ``shuffled``, the path judge's verdicts permuted over the batch's searches (the
    same share of useful ones and the same reward scale, no information: a control). Its critiques
    are fixed lines that say its judge's verdict on the search just made (the path judge's for
    ``shuffled``: a critique has no batch to permute over)."""

    name = "rule"
    JUDGES = ("path", "answer", "shuffled")
    REASONS = {
        "path": ("brings a fact of the gold path first", "brings no new fact of the gold path"),
        "answer": ("a gold answer is in the documents", "no gold answer in the documents"),
        "shuffled": ("shuffled", "shuffled"),
    }
    CLEAR = {
        "path": {
            True: "These documents bring a new fact on the way to the answer; build on it.",
            False: "These documents bring nothing new toward the answer; search for something else.",
        },
        "answer": {
            True: "The documents state the answer; read it off them.",
            False: "The documents do not hold the answer; search for something else.",
        },
    }
    VAGUE = "Think about whether these documents help."

    def __init__(self, judge: str = "path", seed: int = 0) -> None:
        if judge not in self.JUDGES:
            raise ValueError(f"rule judge must be one of {self.JUDGES}, got {judge!r}")
        self.judge = judge
        self.rng = random.Random(seed)
        self.stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()  # an asynchronous rollout asks for critiques from many threads

    @property
    def verdict_judge(self) -> str:
        """The judge whose verdicts it gives: ``shuffled`` permutes the path judge's."""
        return "answer" if self.judge == "answer" else "path"

    def grade(self, trajectories: Sequence[Trajectory]) -> list[Verdicts | None]:
        self.stats["requests"] += len(trajectories)
        verdicts = [r.judged(self.verdict_judge) for r in trajectories]
        if self.judge == "shuffled":
            pooled = [v for row in verdicts for v in row]
            self.rng.shuffle(pooled)
            it = iter(pooled)
            verdicts = [[next(it) for _ in row] for row in verdicts]
        useful, useless = self.REASONS[self.judge]
        return [[(v, useful if v else useless) for v in row] for row in verdicts]

    def critique(self, requests: Sequence[CritiqueRequest]) -> list[str | None]:
        with self._stats_lock:
            self.stats["requests"] += len(requests)
        judge = self.verdict_judge
        lines: list[str | None] = []
        for r in requests:
            searches = [*r.earlier, r.turn.documents or []]  # the path judge needs what came before
            useful = JUDGES[judge](searches, r.golden_answers or (), r.supporting)[-1]
            lines.append(self.VAGUE if r.vague else self.CLEAR[judge][useful])
        return lines


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
        self._stats_lock = threading.Lock()  # an asynchronous rollout asks for critiques from many threads

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
                r.supporting,
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
        with self._stats_lock:
            self.stats["requests"] += len(requests)
            self.stats["failures"] += sum(reply is None for reply in replies)
        return replies
