"""Built-in scores by the rows' ``data_source``, as verl's datasets name them: a run whose data
comes from these sources needs no ``custom_reward_function``.

- GSM8K (``openai/gsm8k``): the number after the last ``####``.
- MATH (``lighteval/MATH``, ``DigitalLearningGmbH/MATH-lighteval``, ``HuggingFaceH4/MATH-500``):
  the last ``\\boxed{}``.
- Question answering (Search-R1's ``nq``, ``triviaqa``, ``popqa``, ``hotpotqa``,
  ``2wikimultihopqa``, ``musique``, ``bamboogle``, also prefixed ``searchR1_``): exact match of the
  last ``<answer>``.
"""

from collections.abc import Callable
from typing import Any

from verl.utils.reward_score import gsm8k, math_answer, qa

QA_SOURCES = ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")
SCORERS: dict[str, Callable[[str, Any], float | dict[str, float]]] = {
    "openai/gsm8k": gsm8k.compute_score,
    "lighteval/MATH": math_answer.compute_score,
    "DigitalLearningGmbH/MATH-lighteval": math_answer.compute_score,
    "HuggingFaceH4/MATH-500": math_answer.compute_score,
    **{source: qa.compute_score for source in QA_SOURCES},
    **{f"searchR1_{source}": qa.compute_score for source in QA_SOURCES},
}


def scorer_for(data_source: str) -> Callable[[str, Any], float | dict[str, float]] | None:
    return SCORERS.get(data_source)


def default_compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Any = None
) -> float | dict[str, float]:
    """The built-in score of one response; a source without one is refused, naming the way out."""
    scorer = scorer_for(data_source)
    if scorer is None:
        raise ValueError(
            f"data_source={data_source!r} has no built-in score (those are: {', '.join(sorted(SCORERS))}): "
            "set custom_reward_function.path"
        )
    return scorer(solution_str, ground_truth)
