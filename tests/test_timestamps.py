"""fleetml.timestamps.format_step: steps printed the way --step and --horizon take them."""

import pandas as pd
import pytest

from fleetml.timestamps import format_step


@pytest.mark.parametrize(
    ("step", "text"),
    [
        ("10min", "10min"),
        ("60min", "1h"),
        ("90min", "90min"),
        ("24h", "1D"),
        ("30s", "30s"),
        ("1500ms", "1500ms"),
        (pd.Timedelta(hours=2), "2h"),
    ],
)
def test_a_step_prints_in_its_largest_whole_unit_and_reads_back(step, text):
    assert format_step(step) == text
    assert pd.Timedelta(text) == pd.Timedelta(step)


@pytest.mark.parametrize("step", ["0s", "-5min"])
def test_a_step_must_be_positive(step):
    with pytest.raises(ValueError, match="positive"):
        format_step(step)
