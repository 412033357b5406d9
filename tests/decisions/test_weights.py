"""Weights re-spread below a utilisation limit (water-filling inside each group)."""

from __future__ import annotations

import numpy as np
import pytest

from fleetml.decisions.weights import spread_below

GROUPS = np.array(["a", "a", "a", "b", "b"])


def test_an_account_past_its_limit_is_cut_and_its_peers_take_the_excess():
    w, capped = spread_below(
        GROUPS,
        np.array([10.0, 1.0, 1.0, 5.0, 5.0]),
        load=np.array([50.0, 20.0, 10.0, 100.0, 100.0]),
        limit=np.array([45.0, 45.0, 45.0, 90.0, 90.0]),
    )
    shares = w[:3] / w[:3].sum() * 80.0
    assert shares == pytest.approx([45.0, 17.5, 17.5])
    assert w[:3].sum() == pytest.approx(12.0)  # the group's total weight is kept
    assert capped.tolist() == [True, False, False, False, False]
    # group b has no room (200/min against limits of 180): unchanged
    assert w[3:].tolist() == [5.0, 5.0]


def test_a_group_without_room_keeps_its_weights():
    weights = np.array([10.0, 1.0, 1.0, 5.0, 5.0])
    w, capped = spread_below(
        GROUPS, weights, load=np.full(5, 60.0), limit=np.array([45.0, 45.0, 45.0, 90.0, 90.0])
    )
    assert w[:3].tolist() == [10.0, 1.0, 1.0] and not capped[:3].any()


def test_frozen_and_idle_accounts_are_left_alone():
    w, _ = spread_below(
        GROUPS,
        np.array([10.0, 0.0, 3.0, 5.0, 5.0]),
        load=np.array([60.0, 0.0, 10.0, 0.0, 0.0]),
        limit=np.array([45.0, 45.0, 45.0, 90.0, 90.0]),
        free=np.array([True, True, False, True, True]),
    )
    assert w[1] == 0.0  # out of rotation: never given traffic
    assert w[2] == 3.0  # held: its share is pinned
    assert w[0] == pytest.approx(10.0)  # no free peer with room: nothing to move to
