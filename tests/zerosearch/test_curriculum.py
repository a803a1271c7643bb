import random

import pytest

from zerosearch.config import CurriculumConfig
from zerosearch.curriculum import NoiseSchedule, noise_probability


@pytest.mark.parametrize("step, expected", [(50, 0.068), (100, 0.163), (150, 0.298), (200, 0.487)])
def test_probability_values(step, expected):
    # 0 + (4^(step/203) - 1) / 3 * 0.5, e.g. step 50: 4^0.2463 = 1.4069 -> 0.4069 / 6 = 0.0678;
    # step 200 gives 0.48648, so "0.487" holds to within a unit in the third decimal
    assert noise_probability(step, 203, 0.0, 0.5) == pytest.approx(expected, abs=1e-3)


def test_probability_endpoints_and_clipping():
    assert noise_probability(0, 203, 0.1, 0.6) == pytest.approx(0.1)
    assert noise_probability(203, 203, 0.1, 0.6) == pytest.approx(0.6)
    assert noise_probability(-5, 203, 0.1, 0.6) == pytest.approx(0.1)
    assert noise_probability(500, 203, 0.1, 0.6) == pytest.approx(0.6)


def test_base_below_one_rises_fast_first():
    # b < 1 gives a concave curve: past the straight line halfway through
    assert noise_probability(50, 100, 0.0, 1.0, base=0.25) > 0.5
    assert noise_probability(50, 100, 0.0, 1.0, base=4.0) < 0.5


def test_decreasing_schedule_is_allowed():
    assert noise_probability(0, 10, 0.5, 0.0) == pytest.approx(0.5)
    assert noise_probability(10, 10, 0.5, 0.0) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"base": 1.0}, "base"),
        ({"base": 0.0}, "base"),
        ({"base": -2.0}, "base"),
        ({"total_steps": 0}, "total_steps"),
        ({"start": -0.1}, "start_threshold"),
        ({"end": 1.5}, "end_threshold"),
    ],
)
def test_probability_errors(kwargs, match):
    args = {"step": 1, "total_steps": 10, "start": 0.0, "end": 0.5, "base": 4.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        noise_probability(**args)


def test_schedule_rejects_bad_config():
    with pytest.raises(ValueError, match="base"):
        NoiseSchedule(CurriculumConfig(base=1.0), seed=0)


def test_schedule_probability_follows_config():
    schedule = NoiseSchedule(CurriculumConfig(start_threshold=0.0, end_threshold=0.5, base=4.0), seed=0)
    assert round(schedule.probability(100, 203), 3) == 0.163


KEYS = [f"uid-{i}/turn-{i % 3}" for i in range(200)]


def test_draws_reproducible_and_order_independent():
    config = CurriculumConfig(start_threshold=0.5, end_threshold=0.5)
    first = NoiseSchedule(config, seed=7).draw(3, 10, KEYS)
    assert first == NoiseSchedule(config, seed=7).draw(3, 10, KEYS)
    assert 0 < sum(first) < len(KEYS)

    shuffled = KEYS[:]
    random.Random(0).shuffle(shuffled)
    by_key = dict(zip(KEYS, first, strict=True))
    assert NoiseSchedule(config, seed=7).draw(3, 10, shuffled) == [by_key[k] for k in shuffled]
    # a smaller batch holding some of the same keys draws the same for them
    assert NoiseSchedule(config, seed=7).draw(3, 10, KEYS[5:9]) == first[5:9]


def test_draws_change_with_seed_and_step():
    config = CurriculumConfig(start_threshold=0.5, end_threshold=0.5)
    base = NoiseSchedule(config, seed=7).draw(3, 10, KEYS)
    assert NoiseSchedule(config, seed=8).draw(3, 10, KEYS) != base
    assert NoiseSchedule(config, seed=7).draw(4, 10, KEYS) != base


def test_extreme_probabilities():
    keys = KEYS[:50]
    assert not any(NoiseSchedule(CurriculumConfig(start_threshold=0.0, end_threshold=1.0), 0).draw(0, 10, keys))
    assert all(NoiseSchedule(CurriculumConfig(start_threshold=0.0, end_threshold=1.0), 0).draw(10, 10, keys))


def test_empirical_rate_near_probability():
    schedule = NoiseSchedule(CurriculumConfig(start_threshold=0.0, end_threshold=0.5), seed=1)
    keys = [f"q{i}" for i in range(5000)]
    p = schedule.probability(150, 203)
    rate = sum(schedule.draw(150, 203, keys)) / len(keys)
    # binomial std sqrt(0.3 * 0.7 / 5000) ~ 0.0065; 0.03 is over four of them
    assert abs(rate - p) < 0.03
