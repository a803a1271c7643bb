"""Grade-school math (GSM8K): the number after the response's last ``####`` against the reference."""

import re

_FINAL = re.compile(r"####\s*\$?\s*(-?[\d,]*\.?\d+)")


def final_number(text: str) -> str | None:
    """The number after the last ``####``, without thousands separators or a trailing ``.0``."""
    found = _FINAL.findall(text)
    if not found:
        return None
    number = found[-1].replace(",", "")
    return number[:-2] if number.endswith(".0") else number


def compute_score(solution_str: str, ground_truth: str) -> float:
    """1.0 when the response's final ``#### number`` equals the reference number; 0.0 otherwise,
    also when the response gives none (the format is part of the task)."""
    answer = final_number(solution_str)
    reference = final_number(ground_truth) if "####" in ground_truth else ground_truth.replace(",", "").strip()
    return float(answer is not None and answer == reference)
