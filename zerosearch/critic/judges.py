"""Rule judges of a trajectory's searches, and how far one set of verdicts agrees with another.

A search's documents are what it brought. The **path** judge, the reference, calls a search useful
when it brings a fact of the gold reasoning path that no earlier search of the trajectory brought:
the first (bridge) hop of a multi-hop question is useful although its documents never name the
answer, and a repeated or off-path search is useless. A fact is a tuple of phrases that one
document must all state (whole words, after answer normalisation), e.g. ("Dalo Press", "Bi Ka")
for "Dalo Press was founded by Bi Ka"; a row without supporting facts has one: its answer.

The **answer** judge calls a search useful when a gold answer appears in one of its documents. It
marks every bridge hop useless and every repeat of an answering search useful; it is kept to
measure what it gets wrong.
"""

from collections.abc import Callable, Sequence

from verl.utils.reward_score.qa import cover_exact_match

Fact = tuple[str, ...]
Judge = Callable[[Sequence[Sequence[str]], Sequence[str], Sequence[Fact]], list[bool]]


def states(document: str, fact: Fact) -> bool:
    return all(cover_exact_match(document, [phrase]) for phrase in fact)


def answer_judge(searches: Sequence[Sequence[str]], golden_answers: Sequence[str], supporting=()) -> list[bool]:
    """Per search (its documents): a gold answer is in one of them."""
    return [any(cover_exact_match(d, list(golden_answers)) for d in documents) for documents in searches]


def path_judge(
    searches: Sequence[Sequence[str]], golden_answers: Sequence[str], supporting: Sequence[Fact] = ()
) -> list[bool]:
    """Per search (its documents): it brings a supporting fact no earlier search brought. Without
    supporting facts, the answer is the path's one fact (any gold answer states it)."""
    facts = list(enumerate(supporting)) if supporting else [(0, (answer,)) for answer in golden_answers]
    seen: set[int] = set()
    verdicts = []
    for documents in searches:
        brought = {key for key, fact in facts if any(states(d, fact) for d in documents)}
        verdicts.append(bool(brought - seen))
        seen |= brought
    return verdicts


JUDGES: dict[str, Judge] = {"path": path_judge, "answer": answer_judge}


def agreement(predicted: Sequence[bool], reference: Sequence[bool]) -> dict[str, float | None]:
    """How far verdicts (True: useful) agree with reference ones over the same searches: the share
    that agree; the agreement of always answering the reference's majority class (the baseline to
    beat); Cohen's kappa (agreement beyond chance, None when chance explains everything); precision
    and recall of "useless" (None without predicted or reference useless ones); and the counts."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} verdicts against {len(reference)} reference verdicts")
    n = len(reference)
    if n == 0:
        keys = ("agreement", "majority_baseline", "kappa", "useless_precision", "useless_recall")
        return {"turns": 0, **dict.fromkeys(keys), "reference_useful_share": None}
    agree = sum(p == r for p, r in zip(predicted, reference, strict=True)) / n
    useful_p, useful_r = sum(predicted) / n, sum(reference) / n
    chance = useful_p * useful_r + (1 - useful_p) * (1 - useful_r)
    flagged = [r for p, r in zip(predicted, reference, strict=True) if not p]  # predicted useless
    useless = [p for p, r in zip(predicted, reference, strict=True) if not r]  # reference useless
    return {
        "turns": n,
        "agreement": agree,
        "majority_baseline": max(useful_r, 1 - useful_r),
        "kappa": None if chance == 1 else (agree - chance) / (1 - chance),
        "useless_precision": sum(not r for r in flagged) / len(flagged) if flagged else None,
        "useless_recall": sum(not p for p in useless) / len(useless) if useless else None,
        "reference_useful_share": useful_r,
    }
