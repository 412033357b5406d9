"""The per-group request balancers behind ``POST /v1/route`` (fleetml.decisions.balancer)."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from fleetml.decisions.balancer import BALANCERS, make_balancer
from fleetml.decisions.contracts import Algorithm

ALL = [a.value for a in Algorithm]


def test_every_algorithm_has_a_balancer():
    assert set(BALANCERS) == set(Algorithm)
    for algorithm in Algorithm:
        assert make_balancer(algorithm, {"a": 1.0}).algorithm is algorithm


def test_round_robin_cycles_evenly_and_skips_weight_zero():
    bal = make_balancer("round_robin", {"a": 1.0, "b": 0.0, "c": 3.0, "d": 1.0})
    picks = [bal.pick() for _ in range(30)]
    assert picks[:6] == ["a", "c", "d", "a", "c", "d"]
    assert Counter(picks) == {"a": 10, "c": 10, "d": 10}


def test_smooth_weighted_round_robin_spreads_exact_shares():
    bal = make_balancer("weighted_round_robin", {"a": 5.0, "b": 1.0, "c": 1.0})
    picks = [bal.pick() for _ in range(70)]
    assert picks[:7] == ["a", "a", "b", "a", "c", "a", "a"]  # nginx's documented sequence
    for cycle in range(10):
        assert Counter(picks[7 * cycle : 7 * cycle + 7]) == {"a": 5, "b": 1, "c": 1}
    longest = run = 1
    for prev, nxt in zip(picks, picks[1:], strict=False):
        run = run + 1 if nxt == prev else 1
        longest = max(longest, run)
    assert longest < 5


def test_least_load_prefers_fewer_outstanding():
    bal = make_balancer("least_load", {"a": 1.0, "b": 1.0, "c": 1.0}, seed=3)
    first = {bal.pick() for _ in range(3)}
    assert first == {"a", "b", "c"}  # each idle account before any gets a second
    bal.finish("b", 0.01)
    assert bal.pick() == "b"
    bal.finish("c", 0.01)
    bal.finish("c", 0.01)  # a second finish must not push it below 0
    assert bal.snapshot()["c"]["outstanding"] == 0
    assert bal.pick() == "c"


def test_least_load_breaks_ties_at_random_and_follows_weights():
    bal = make_balancer("least_load", {"a": 1.0, "b": 1.0, "c": 1.0}, seed=0)
    counts = Counter()
    for _ in range(600):
        account = bal.pick()
        counts[account] += 1
        bal.finish(account, 0.01)
    assert min(counts.values()) > 120  # not always the first of the tie

    weighted = make_balancer("least_load", {"a": 2.0, "b": 1.0}, seed=0)
    held = Counter(weighted.pick() for _ in range(30))  # nothing finishes: load builds up
    assert held == {"a": 20, "b": 10}


def _drive(bal, latency_of, start_s, end_s, step_s=0.01):
    """Pick every ``step_s`` of simulated time, finishing each request at once."""
    picks = []
    t = start_s
    while t < end_s:
        account = bal.pick(now_s=t)
        bal.finish(account, latency_of(account, t), now_s=t)
        picks.append(account)
        t += step_s
    return picks


def test_p2c_ewma_avoids_a_slowed_account_at_once_and_returns_after_it_recovers():
    bal = make_balancer("p2c_ewma", {"a": 1.0, "b": 1.0, "c": 1.0}, seed=7, default_latency_s=0.02)

    def latency(account, t):
        return 2.0 if account == "c" and 10.0 <= t < 20.0 else 0.02

    warm = _drive(bal, latency, 0.0, 10.0)
    assert Counter(warm)["c"] > 200  # a fair share while it is fast
    slow = _drive(bal, latency, 10.0, 20.0)
    assert Counter(slow)["c"] <= 1  # the first 2 s sample is enough (round robin: 333)
    assert bal.snapshot(now_s=20.0)["c"]["ewma_ms"] > 700.0  # 2 s decayed over 10 s: 736 ms

    # Recovered at 20 s: its estimate decays toward 0 until it is probed and found fast again.
    _drive(bal, latency, 20.0, 80.0)
    back = _drive(bal, latency, 80.0, 100.0)
    assert Counter(back)["c"] > 0.2 * len(back)


def test_p2c_ewma_probes_accounts_without_samples():
    """A pessimistic neutral estimate decays like any other, so every account gets probed."""
    bal = make_balancer("p2c_ewma", {"a": 1.0, "b": 1.0, "c": 1.0}, seed=3, default_latency_s=0.5)
    picks = _drive(bal, lambda account, t: 0.02, 0.0, 60.0)
    assert set(picks) == {"a", "b", "c"}
    assert Counter(picks[-1000:])["c"] > 200

    bal.set_weights({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0})  # joins at the others' median
    later = _drive(bal, lambda account, t: 0.02, 60.0, 70.0)
    assert Counter(later)["d"] > 150


def test_p2c_ewma_prefers_less_outstanding_work_at_equal_latency():
    bal = make_balancer("p2c_ewma", {"a": 1.0, "b": 1.0}, seed=1)
    assert {bal.pick(now_s=0.0), bal.pick(now_s=0.0)} == {"a", "b"}
    bal.finish("a", 0.05, now_s=0.0)
    bal.finish("b", 0.05, now_s=0.0)
    held = [bal.pick(now_s=0.0) for _ in range(20)]  # none finish: outstanding builds up
    assert abs(held.count("a") - held.count("b")) <= 1


def test_p2c_ewma_weight_divides_cost():
    bal = make_balancer("p2c_ewma", {"a": 1.0, "b": 0.25}, seed=1)
    for account in ("a", "b"):
        bal.pick(now_s=0.0)
        bal.finish(account, 0.05, now_s=0.0)
    held = Counter(bal.pick(now_s=0.0) for _ in range(50))
    # costs balance where (outstanding + 1) / weight is equal: about 4 to 1
    assert 3.0 <= held["a"] / held["b"] <= 5.5


def test_failure_counts_at_least_the_penalty():
    bal = make_balancer("p2c_ewma", {"a": 1.0, "b": 1.0}, failure_penalty_s=1.5)
    bal.pick(now_s=0.0)
    bal.finish("a", 0.01, ok=False, now_s=0.0)
    assert bal.snapshot(now_s=0.0)["a"]["ewma_ms"] == pytest.approx(1500.0)


@pytest.mark.parametrize("algorithm", ALL)
def test_weight_zero_is_never_picked(algorithm):
    bal = make_balancer(algorithm, {"a": 1.0, "b": 0.0, "c": 2.0}, seed=5)
    counts = Counter()
    for i in range(500):
        account = bal.pick(now_s=i * 0.01)
        counts[account] += 1
        if i % 3:
            bal.finish(account, 0.02 + 0.01 * (i % 5), now_s=i * 0.01)
    assert "b" not in counts and None not in counts
    assert counts["a"] > 0 and counts["c"] > 0


@pytest.mark.parametrize("algorithm", ALL)
def test_pick_returns_none_without_a_routable_account(algorithm):
    assert make_balancer(algorithm, {"a": 0.0, "b": 0.0}).pick() is None
    empty = make_balancer(algorithm, {})
    assert empty.pick() is None
    empty.set_weights({"x": 1.0})
    assert empty.pick() == "x"


@pytest.mark.parametrize("algorithm", ALL)
def test_set_weights_keeps_the_state_of_accounts_that_stay(algorithm):
    bal = make_balancer(algorithm, {"a": 1.0, "b": 1.0, "c": 1.0}, seed=2)
    for account in ("a", "b", "c"):
        bal.set_weights({account: 1.0, **{k: 0.0 for k in "abc" if k != account}})
        assert bal.pick(now_s=0.0) == account
    bal.finish("b", 0.2, now_s=0.0)
    bal.finish("c", 0.4, now_s=0.0)

    bal.set_weights({"a": 2.0, "b": 0.5, "d": 1.0})
    snap = bal.snapshot(now_s=0.0)
    assert set(snap) == {"a", "b", "d"}
    assert snap["a"]["outstanding"] == 1 and snap["a"]["weight"] == 2.0
    assert snap["b"]["outstanding"] == 0 and snap["b"]["ewma_ms"] == pytest.approx(200.0)
    assert snap["d"]["ewma_ms"] == pytest.approx(300.0)  # neutral: median of the sampled
    bal.finish("c", 0.1, now_s=0.0)  # finished after its removal: ignored
    assert "c" not in bal.snapshot(now_s=0.0)


def test_finish_on_unknown_account_is_harmless():
    bal = make_balancer("least_load", {"a": 1.0})
    before = bal.snapshot(now_s=0.0)
    bal.finish("nobody", 0.5, now_s=0.0)
    bal.finish("nobody", 0.5, ok=False)
    assert bal.snapshot(now_s=0.0) == before


def test_invalid_input_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="unknown balancing algorithm 'fastest'"):
        make_balancer("fastest", {"a": 1.0})
    with pytest.raises(ValueError, match="weight of account 'a'"):
        make_balancer("round_robin", {"a": -1.0})
    with pytest.raises(ValueError, match="weight of account 'a'"):
        make_balancer("round_robin", {"a": float("nan")})
    bal = make_balancer("p2c_ewma", {"a": 1.0})
    with pytest.raises(ValueError, match="latency of a request on account 'a'"):
        bal.finish("a", float("nan"))


@pytest.mark.parametrize("algorithm", ALL)
def test_concurrent_picks_and_finishes_balance_out(algorithm):
    bal = make_balancer(algorithm, {f"acc{i}": 1.0 + i % 3 for i in range(12)}, seed=11)
    stop = threading.Event()
    negative: list[dict] = []
    errors: list[BaseException] = []

    def watch():
        while not stop.is_set():
            snap = bal.snapshot()
            if any(v["outstanding"] < 0 for v in snap.values()):
                negative.append(snap)

    def work(k):
        try:
            held = []
            for i in range(3000):
                held.append(bal.pick())
                if i % 4 == 3:  # finish in batches: outstanding goes up and down
                    for account in held:
                        bal.finish(account, 0.001 * (k + 1), ok=bool(i % 7))
                    held.clear()
            for account in held:
                bal.finish(account, 0.001)
        except BaseException as exc:  # surfaced below; a thread cannot fail the test itself
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    workers = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    watcher.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    watcher.join()
    assert not errors and not negative
    assert all(v["outstanding"] == 0 for v in bal.snapshot().values())
