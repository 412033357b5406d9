"""The population stability index: small for the same distribution, large for a shifted one, and
clear errors for samples it cannot judge."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fleetml.decisions.drift import MIN_VALUES, PSI_COLUMNS, psi, psi_level, psi_table


@pytest.fixture
def rng():
    return np.random.default_rng(7)


def test_same_distribution_is_stable(rng):
    assert psi(rng.normal(size=2000), rng.normal(size=2000)) < 0.05


def test_shifted_distribution_is_major(rng):
    assert psi(rng.normal(size=2000), rng.normal(loc=1.0, size=2000)) > 0.25


def test_psi_grows_with_the_shift(rng):
    ref = rng.normal(size=2000)
    small, large = psi(ref, ref + 0.2), psi(ref, ref + 0.8)
    assert 0 < small < large


def test_values_beyond_the_reference_range_count(rng):
    # open-ended outer bins: everything above the reference's maximum lands in the top bin
    ref = rng.uniform(0, 1, size=1000)
    assert psi(ref, rng.uniform(5, 6, size=1000)) > 1.0


def test_constant_reference_same_constant_is_zero():
    assert psi(np.full(100, 3.0), np.full(100, 3.0)) == pytest.approx(0.0)


def test_constant_reference_against_spread_current_is_major(rng):
    value = psi(np.full(100, 3.0), rng.normal(loc=3.0, size=100))
    assert np.isfinite(value) and value > 0.25


def test_nan_and_inf_are_ignored(rng):
    ref, cur = rng.normal(size=500), rng.normal(size=500)
    dirty = np.concatenate([cur, [np.nan] * 50, [np.inf, -np.inf]])
    assert psi(ref, dirty) == pytest.approx(psi(ref, cur))


@pytest.mark.parametrize("side", ["reference", "current"])
def test_too_few_values_raise(side, rng):
    few = np.concatenate([rng.normal(size=MIN_VALUES - 1), [np.nan] * 100])
    many = rng.normal(size=200)
    args = (few, many) if side == "reference" else (many, few)
    with pytest.raises(ValueError, match=f"{side} sample has {MIN_VALUES - 1} finite values"):
        psi(*args)


def test_levels_follow_conventional_thresholds():
    assert [psi_level(v) for v in (0.0, 0.099, 0.1, 0.249, 0.25, 3.0)] == [
        "stable",
        "stable",
        "moderate",
        "moderate",
        "major",
        "major",
    ]


def test_psi_table_ranks_the_drifted_columns_first(rng):
    n = 2000
    ref = pd.DataFrame(
        {
            "cpu_pct": rng.normal(50, 10, n),
            "queue_depth": rng.exponential(5, n),
            "latency_ms": rng.normal(200, 30, n),
            "sparse": [np.nan] * (n - 5) + [1.0] * 5,
            "name": ["a"] * n,
        }
    )
    cur = pd.DataFrame(
        {
            "cpu_pct": rng.normal(50, 10, n),
            "queue_depth": rng.exponential(5, n) + 2.5,  # moderate-to-major move
            "latency_ms": rng.normal(260, 30, n),  # a 2-sigma move: major
            "sparse": rng.normal(size=n),
            "name": ["b"] * n,
        }
    )
    table = psi_table(ref, cur)
    assert list(table.columns) == list(PSI_COLUMNS)
    assert table["column"].tolist()[0] == "latency_ms"
    assert set(table["column"]) == {"cpu_pct", "queue_depth", "latency_ms", "sparse"}
    by = table.set_index("column")
    assert by.at["latency_ms", "level"] == "major"
    assert by.at["cpu_pct", "level"] == "stable"
    assert by.at["cpu_pct", "n_ref"] == n and by.at["cpu_pct", "n_cur"] == n
    # too few finite values: no PSI, shown last rather than raised
    assert table["column"].iloc[-1] == "sparse"
    assert np.isnan(by.at["sparse", "psi"]) and by.at["sparse", "level"] == "insufficient_data"
    finite = table["psi"].dropna().to_numpy()
    assert (np.diff(finite) <= 0).all()


def test_psi_table_named_columns_and_missing_column(rng):
    ref = pd.DataFrame({"a": rng.normal(size=100), "b": rng.normal(size=100)})
    cur = pd.DataFrame({"a": rng.normal(size=100)})
    assert psi_table(ref, cur, ["a"])["column"].tolist() == ["a"]
    with pytest.raises(ValueError, match="'b' \\(current\\)"):
        psi_table(ref, cur, ["a", "b"])


def test_psi_table_of_empty_frames_is_empty():
    table = psi_table(pd.DataFrame(), pd.DataFrame())
    assert table.empty and list(table.columns) == list(PSI_COLUMNS)
