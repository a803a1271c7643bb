"""Competition-math answers: the response's last ``\\boxed{...}`` against the reference, both
written in one canonical LaTeX spelling first."""

import re

_SIZING = re.compile(r"\\(?:left|right)(?![a-zA-Z])")  # \left( but not \leftarrow
_SPELLINGS = (
    ("\\!", ""),
    ("\\,", ""),
    ("\\;", ""),
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("^{\\circ}", ""),
    ("^\\circ", ""),
    ("\\$", ""),
    ("$", ""),
    ("\\%", ""),
    ("%", ""),
)
_TEXT = re.compile(r"\\(?:text|mbox|mathrm)\{([^{}]*)\}")
_FRAC_DIGITS = re.compile(r"\\frac(\d)(\d)")  # \frac12 -> \frac{1}{2}
_FRAC_DIGIT_BRACE = re.compile(r"\\frac(\d)\{")  # \frac1{2} -> \frac{1}{2}
_SQRT_DIGIT = re.compile(r"\\sqrt(\d)")  # \sqrt2 -> \sqrt{2}


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if none."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    opening = text.index("{", start)
    depth = 0
    for i in range(opening, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[opening + 1 : i]
    return None  # never closed


def canonical(answer: str) -> str:
    """One spelling per value: no spacing commands or sizing, ``\\text{}`` unwrapped, ``dfrac`` as
    ``frac``, braces around single-digit fractions and roots, ``0.5`` for ``.5``, no trailing period."""
    text = answer.strip()
    text = _TEXT.sub(r"\1", text)
    text = _SIZING.sub("", text)
    for old, new in _SPELLINGS:
        text = text.replace(old, new)
    text = text.replace(" ", "").rstrip(".")
    text = _FRAC_DIGITS.sub(r"\\frac{\1}{\2}", text)
    text = _FRAC_DIGIT_BRACE.sub(r"\\frac{\1}{", text)
    text = _SQRT_DIGIT.sub(r"\\sqrt{\1}", text)
    if text.startswith("."):
        text = "0" + text
    if re.fullmatch(r"-?\d+\.0+", text):  # 3.0 -> 3
        text = text.split(".")[0]
    if re.fullmatch(r"[a-z]=.+", text):  # x=3 -> 3
        text = text.split("=", 1)[1]
    return text


def compute_score(solution_str: str, ground_truth: str) -> float:
    """1.0 when the last boxed answer equals the reference (itself boxed or plain) once both are canonical."""
    answer = last_boxed(solution_str)
    if answer is None:
        return 0.0
    reference = last_boxed(ground_truth) if "\\boxed" in ground_truth else ground_truth
    return float(reference is not None and canonical(answer) == canonical(reference))
