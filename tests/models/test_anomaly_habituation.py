"""Habituation of the reported anomaly score: a decaying maximum per account."""

from __future__ import annotations

import numpy as np
import pytest

from fleetml.models.anomaly import ScoreHabituation


def reference(scores, accounts, half_life, factor, start=None, margin=0.05, near_factor=0.55):
    """Row by row, as the docstring defines it."""
    d = 2.0 ** (-1.0 / half_life)
    out, maxima = [], []
    state = dict(start or {})
    for c, a in zip(scores, accounts, strict=True):
        m_prev = state.get(a, 0.0)
        if np.isnan(c):
            out.append(np.nan)
            m = m_prev * d
        else:
            if c > m_prev * (1 + margin):
                out.append(c)
            else:
                out.append(near_factor * c if c > m_prev else factor * c)
            m = max(c, m_prev * d)
        state[a] = m
        maxima.append(m)
    return np.array(out), np.array(maxima)


@pytest.mark.parametrize("seed,margin", [(0, 0.05), (1, 0.05), (2, 0.0), (3, 0.3)])
def test_vectorised_equals_the_row_by_row_definition(seed, margin):
    rng = np.random.default_rng(seed)
    n = 3000
    accounts = np.sort(rng.choice(["a", "b", "c", "d"], size=n))
    scores = rng.beta(0.5, 3.0, n)
    scores[rng.random(n) < 0.05] = np.nan
    scores[rng.random(n) < 0.05] = 0.0
    hab = ScoreHabituation(half_life=50.0, factor=0.25, margin=margin, near_factor=0.4)
    first = np.r_[True, accounts[1:] != accounts[:-1]]
    got, m = hab.apply(scores, first)
    want, want_m = reference(scores, accounts, 50.0, 0.25, margin=margin, near_factor=0.4)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(m, want_m, rtol=1e-9, atol=1e-11)  # m floors at 1e-12
    assert (got < scores)[np.isfinite(scores) & (scores > 0)].any()  # some rows habituated


def test_a_plateau_is_halved_and_a_new_high_keeps_its_score():
    hab = ScoreHabituation(half_life=1000.0, factor=0.5)
    scores = np.r_[np.full(5, 0.1), np.full(20, 0.7), 0.9, np.full(5, 0.7)]
    got = hab.apply_by_account(scores, ["a"] * scores.size)
    assert got[5] == 0.7  # the plateau's first row is news
    np.testing.assert_allclose(got[6:25], 0.35)  # the rest of it is not
    assert got[25] == 0.9  # worse than anything before: full height
    np.testing.assert_allclose(got[26:], 0.35)
    # an account never sees another's maximum
    two = hab.apply_by_account(np.r_[0.9, 0.5], ["a", "b"])
    assert two.tolist() == [0.9, 0.5]


@pytest.mark.parametrize("value", [0.667, 0.9921, 0.123456789, 1e-6])
def test_a_long_run_of_one_repeated_score_is_news_once(value):
    """A level held outside the training range scores the same row after row: however long
    the run, rounding never makes a repeat count as a new high (accounts of any length)."""
    hab = ScoreHabituation(half_life=1000.0, factor=0.5)
    n = 20_000
    accounts = np.repeat(["a", "b", "c"], [n, 7, 3 * n])
    got = hab.apply_by_account(np.full(accounts.size, value), accounts)
    first = np.r_[True, accounts[1:] != accounts[:-1]]
    assert (got[first] == value).all()
    np.testing.assert_array_equal(got[~first], 0.5 * value)


def test_the_memory_fades_with_the_half_life():
    hab = ScoreHabituation(half_life=10.0, factor=0.5)
    scores = np.r_[0.8, np.zeros(4), 0.5, np.zeros(34), 0.5]
    got, m = hab.apply(scores)
    assert got[5] == 0.25  # 5 rows on, the 0.8 is remembered as 0.8 * 2**-0.4 = 0.61 > 0.5
    assert m[5] == pytest.approx(0.8 * 2**-0.5)
    assert got[-1] == 0.5  # 40 rows on it has faded to 0.05
    assert m[-1] == pytest.approx(0.5)


def test_carried_state_equals_one_call():
    rng = np.random.default_rng(3)
    scores = rng.uniform(0, 1, 200) ** 4
    hab = ScoreHabituation(half_life=30.0)
    whole, m_whole = hab.apply(scores)
    parts, start = [], 0.0
    for lo in range(0, 200, 7):
        part, m = hab.apply(
            scores[lo : lo + 7], start_max=np.full(7, start)[: len(scores[lo : lo + 7])]
        )
        parts.append(part)
        start = m[-1]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-9)
    assert start == pytest.approx(m_whole[-1])


def test_a_slow_ramp_ranks_just_above_a_plateau_not_as_news():
    """Each row of a slow ramp is a little above the last: without a margin every one was a new
    high at full height; with it only a clear step keeps its score, the ramp keeps 0.55 of it."""
    hab = ScoreHabituation(half_life=1000.0, factor=0.5, margin=0.05, near_factor=0.55)
    ramp = np.r_[0.2, np.linspace(0.60, 0.66, 20), 0.9]
    got = hab.apply_by_account(ramp, ["a"] * ramp.size)
    assert got[0] == 0.2 and got[1] == 0.6 and got[-1] == 0.9  # clear new highs
    np.testing.assert_allclose(got[2:-1], 0.55 * ramp[2:-1])  # 0.3 % steps: no news
    flat = hab.apply_by_account(np.r_[0.6, 0.6], ["a", "a"])
    assert flat[1] == 0.3  # not above at all: the plateau's factor
    old = ScoreHabituation(half_life=1000.0, factor=0.5, margin=0.0)
    assert (old.apply_by_account(ramp, ["a"] * ramp.size)[1:] == ramp[1:]).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"half_life": 0},
        {"half_life": -1},
        {"factor": 1.0},
        {"margin": -0.01},
        {"margin": float("nan")},
        {"near_factor": 0.4},
        {"near_factor": 1.1},
    ],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="habituation"):
        ScoreHabituation(**kwargs)


def test_a_bundle_pickled_before_the_margin_keeps_its_rule():
    """A habituation unpickled from a bundle saved before the margin existed (its state has no
    ``margin``) reports as it did then; one saved with it keeps its own settings."""
    import pickle

    old = ScoreHabituation.__new__(ScoreHabituation)
    old.__setstate__({"half_life": 1000.0, "factor": 0.5})
    assert (old.margin, old.near_factor) == (0.0, 0.5)
    ramp = np.r_[0.2, np.linspace(0.60, 0.66, 20)]
    assert (old.apply_by_account(ramp, ["a"] * ramp.size) == ramp).all()  # each row news
    new = pickle.loads(pickle.dumps(ScoreHabituation(margin=0.1, near_factor=0.7)))
    assert (new.margin, new.near_factor) == (0.1, 0.7)
