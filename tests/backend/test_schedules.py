import math

import pytest

from backend.core.schedules import Constant, Ramp, log_linear, parse_schedule


def test_constant_linear_cosine():
    assert parse_schedule(0.5, 100).at(73) == 0.5
    lin = parse_schedule([0.2, 0.98, 0.5, 0.6], 101)  # steps 20 .. 60
    assert isinstance(lin, Ramp) and lin.shape == "linear"
    assert lin.at(0) == 0.98 and lin.at(20) == 0.98 and lin.at(60) == 0.5 and lin.at(100) == 0.5
    assert lin.at(40) == pytest.approx(0.74)
    cos = parse_schedule(["cosine", 0.0, 1.0, 0.0, 1.0], 11)
    assert isinstance(cos, Ramp) and cos.shape == "cosine"
    assert cos.at(0) == 1.0 and cos.at(10) == 0.0 and cos.at(5) == pytest.approx(0.5)
    assert cos.at(2) > 1 - 0.2 * 1.0  # flat start: above the straight line


def test_three_numbers_mean_start_at_zero_and_step_change():
    s = parse_schedule([0.98, 0.5, 0.5], 1001)
    assert s.at(0) == 0.98 and s.at(500) == 0.5 and s.at(250) == pytest.approx(0.74)
    step = parse_schedule([0.2, 0.98, 0.5, 0.2001], 25001)  # ProlificDreamer's [5000, 0.98, 0.5, 5001]
    assert step.at(4999) == 0.98 and step.at(5003) == 0.5


def test_log_linear_decay():
    assert log_linear(1e-2, 1e-4, 0, 100) == pytest.approx(1e-2)
    assert log_linear(1e-2, 1e-4, 50, 100) == pytest.approx(1e-3)
    assert log_linear(1e-2, 1e-4, 500, 100) == pytest.approx(1e-4)
    assert math.isclose(Constant(2.0).at(5), 2.0)
