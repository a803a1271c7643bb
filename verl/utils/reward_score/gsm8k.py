"""Grade-school math (GSM8K): the number after the response's last ``####`` against the reference."""

import re
from decimal import Decimal, InvalidOperation
from typing import Any

_FINAL = re.compile(r"####\s*(-?\s*\$?\s*-?[\d,]*\.?\d+)")


def as_number(text: str) -> Decimal | None:
    """``text`` as a number, without a dollar sign, thousands separators or spaces; None if it is not one."""
    cleaned = re.sub(r"[\s,$]", "", text).rstrip(".")
    try:
        return Decimal(cleaned)
    except InvalidOperation:
        return None


def final_number(text: str) -> Decimal | None:
    """The number after the last ``####``."""
    found = _FINAL.findall(text)
    return as_number(found[-1]) if found else None


def compute_score(solution_str: str, ground_truth: Any) -> float:
    """1.0 when the response's final ``#### number`` equals the reference number (``72``, ``72.0`` and
    ``$72`` alike); 0.0 otherwise, also when the response gives none (the format is part of the task)."""
    reference_text = str(ground_truth)
    reference = final_number(reference_text) if "####" in reference_text else as_number(reference_text)
    answer = final_number(solution_str)
    return float(answer is not None and reference is not None and answer == reference)
