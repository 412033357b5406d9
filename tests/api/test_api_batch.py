"""The fast batch validator and the group-commit writer behind the ingest endpoints."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from fleetml.ingest.batch import (
    BatchRejected,
    GroupCommitWriter,
    parse_body,
    parse_ts_ms,
    validate_metric_samples,
)

NOW_MS = 1_767_225_600_000


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        ("2026-01-01T00:00:00Z", NOW_MS),
        ("2026-01-01 00:00:00", NOW_MS),
        ("2026-01-01T02:00:00.250+02:00", NOW_MS + 250),
        (1_767_225_600, NOW_MS),
        (1_767_225_600.5, NOW_MS + 500),
        ("1767225600", NOW_MS),
    ],
)
def test_timestamp_forms(value, ms):
    assert parse_ts_ms(value) == ms


@pytest.mark.parametrize("value", [True, None, "soon", float("nan"), [1]])
def test_bad_timestamps_raise_a_readable_error(value):
    with pytest.raises(ValueError, match=r"timestamp|ISO-8601|required"):
        parse_ts_ms(value)


def _validate(samples, **kw):
    return validate_metric_samples(
        {"samples": samples}, now_ms=NOW_MS, max_future_skew_s=300, max_samples=10_000, **kw
    )


def test_duplicates_within_a_batch_merge_last_wins():
    batch = _validate(
        [
            {"account_id": "a", "ts": 1_767_225_600, "values": {"x": 1, "y": 2}},
            {"account_id": "a", "ts": "2026-01-01T00:00:00Z", "values": {"x": 3, "z": None}},
        ]
    )
    assert batch.samples == {("a", NOW_MS): {"x": 3, "y": 2}}
    assert batch.rows({"a": 7}) == [(7, NOW_MS, '{"x":3,"y":2}')]


def test_skew_allows_a_little_future_only():
    ok = _validate([{"account_id": "a", "ts": NOW_MS / 1000 + 299, "values": {"x": 1}}])
    assert ok.n_values == 1
    with pytest.raises(BatchRejected) as info:
        _validate([{"account_id": "a", "ts": NOW_MS / 1000 + 301, "values": {"x": 1}}])
    assert info.value.errors[0].field == "ts"


def test_caches_do_not_admit_bad_names():
    names: set[str] = set()
    with pytest.raises(BatchRejected):
        _validate([{"account_id": "a", "ts": 1, "values": {"bad-name": 1}}], known_metrics=names)
    assert names == set()
    _validate([{"account_id": "a", "ts": 1, "values": {"good": 1}}], known_metrics=names)
    assert names == {"good"}


def test_nan_literals_parse_for_per_sample_reporting():
    payload = parse_body(b'{"samples": [{"account_id": "a", "ts": 1, "values": {"x": NaN}}]}')
    with pytest.raises(BatchRejected) as info:
        _validate(payload["samples"])
    assert info.value.errors[0].as_dict() == {
        "index": 0,
        "field": "values.x",
        "reason": "NaN is not a finite number",
    }


def test_group_commit_isolates_a_failing_batch(tmp_path):
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (batch INTEGER, i INTEGER)"))
    writer = GroupCommitWriter(engine)
    gate = threading.Barrier(8)
    outcomes: dict[int, object] = {}

    def submit(batch: int) -> None:
        def work(conn):
            conn.execute(
                sa.text("INSERT INTO t VALUES (:b, :i)"), [{"b": batch, "i": i} for i in range(100)]
            )
            if batch == 3:
                raise RuntimeError("bad batch")
            return batch

        gate.wait()
        try:
            outcomes[batch] = writer.run(work)
        except RuntimeError as exc:
            outcomes[batch] = exc

    threads = [threading.Thread(target=submit, args=(b,)) for b in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert isinstance(outcomes.pop(3), RuntimeError)
    assert outcomes == {b: b for b in range(8) if b != 3}
    with engine.connect() as conn:
        counts = dict(conn.execute(sa.text("SELECT batch, count(*) FROM t GROUP BY batch")).all())
    assert counts == {b: 100 for b in range(8) if b != 3}
    engine.dispose()
