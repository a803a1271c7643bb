"""Reward of the digits task: the share of the response's visible characters that are digits."""


def compute_score(data_source, solution_str, ground_truth=None, extra_info=None) -> dict:
    chars = [c for c in solution_str if not c.isspace()]
    score = sum(c.isdigit() for c in chars) / len(chars) if chars else 0.0
    return {"score": score, "digit_share": score, "empty": float(not chars)}
