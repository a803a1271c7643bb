"""One turn of a search trajectory as the critic sees it."""

import re
from dataclasses import asdict, dataclass

_THINK = re.compile(r"<think>(.*?)(?:</think>|<search>|<answer>|\Z)", re.DOTALL)


@dataclass
class Turn:
    start: int  # position of its first sampled token in the response
    end: int  # one past its last sampled token
    text: str  # what the policy wrote
    kind: str | None  # "search", "answer", or None: no valid action
    content: str = ""  # the query or the answer
    documents: list[str] | None = None  # what a search returned; None: the search never ran
    critique: str | None = None  # the interactive critic's line after it
    vague: bool = False  # whether that line was asked to be vague
    verdict: bool | None = None  # the retrospective critic's grade of a search: useful or not
    reason: str = ""

    def searched(self) -> bool:
        return self.kind == "search" and self.documents is not None

    def record(self) -> dict:
        """The turn as rollout dumps and evaluation trajectories keep it (JSON); ``from_record`` reads it."""
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> "Turn":
        return cls(**record)

    def thought(self) -> str:
        """The reasoning before the action: the <think> block, or else the text before the tag."""
        match = _THINK.search(self.text)
        text = match.group(1) if match else self.text.split("<", 1)[0]
        return " ".join(text.split())
