"""Store behaviour on SQLite and PostgreSQL: registry, samples, events, audit, keys, migrations."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest
import sqlalchemy as sa

from fleetml.errors import Conflict, InvalidInput, NotFound
from fleetml.store import accounts, audit, events, keys, metrics
from fleetml.store.migrate import current_revision, head_revision, is_current


def _row(pk, ts_s, **vals):
    return (pk, int(ts_s * 1000), orjson.dumps(vals).decode())


def test_migrations_reach_head(engine):
    assert is_current(engine)
    assert current_revision(engine) == head_revision()


def test_the_migrations_build_the_schema_the_code_declares(engine):
    """Alembic's autogenerate comparison finds nothing between the migrated database and
    ``fleetml.store.tables.metadata`` (a table, column or index added to one and not the other
    fails here), except the per-account samples index migrations add on PostgreSQL only."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from fleetml.store.tables import metadata

    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)

    def pg_only(d) -> bool:
        return d[0] == "remove_index" and d[1].name == "ix_samples_account_ts"

    assert [d for d in diff if not (engine.dialect.name == "postgresql" and pg_only(d))] == []


def test_registry_create_update_retire_is_audited(engine):
    with engine.begin() as conn:
        accounts.create_account(
            conn, account_id="m1", role="master", group="eu", capacity=60, actor="alice"
        )
        s = accounts.create_account(
            conn, account_id="s1", role="servant", master_id="m1", actor="alice"
        )
    assert s["state"] == "standby" and s["master_id"] == "m1"
    with engine.begin() as conn:
        updated = accounts.update_account(
            conn, "s1", changes={"state": "active", "group": "eu"}, actor="bob"
        )
    assert updated["state"] == "active"
    with pytest.raises(Conflict):  # a master with live servants cannot be retired
        with engine.begin() as conn:
            accounts.retire_account(conn, "m1", actor="bob")
    with engine.begin() as conn:
        accounts.retire_account(conn, "s1", actor="bob")
    assert [a["account_id"] for a in accounts.list_accounts(engine)] == ["m1"]
    assert {a["account_id"] for a in accounts.list_accounts(engine, include_retired=True)} == {
        "m1",
        "s1",
    }
    log = audit.read_audit(engine, entity_type="account", entity_id="s1")
    assert [e["action"] for e in log] == ["account.retire", "account.update", "account.create"]
    upd = log[1]
    assert (
        upd["actor"] == "bob"
        and upd["before"]["state"] == "standby"
        and upd["after"]["state"] == "active"
    )


def test_registry_rejects_bad_input(engine):
    with engine.begin() as conn:
        accounts.create_account(conn, account_id="m1", actor="t")
    with pytest.raises(InvalidInput, match="needs master_id"):
        with engine.begin() as conn:
            accounts.create_account(conn, account_id="s1", role="servant", actor="t")
    with pytest.raises(InvalidInput, match="not registered"):
        with engine.begin() as conn:
            accounts.create_account(
                conn, account_id="s1", role="servant", master_id="nope", actor="t"
            )
    with pytest.raises(InvalidInput, match="state must be"):
        with engine.begin() as conn:
            accounts.update_account(conn, "m1", changes={"state": "sleeping"}, actor="t")
    with pytest.raises(Conflict):
        with engine.begin() as conn:
            accounts.create_account(conn, account_id="m1", actor="t")
    with pytest.raises(NotFound):
        with engine.begin() as conn:
            accounts.update_account(conn, "ghost", changes={"group": "x"}, actor="t")
    assert len(accounts.list_accounts(engine)) == 1


def test_samples_roundtrip_idempotent_and_merged(engine):
    with engine.begin() as conn:
        pks = accounts.register_unknown(conn, ["a", "b"], actor="t", source="test")
        metrics.ensure_metric_kinds(conn, ["cpu_pct", "msgs_total"])
        rows = [
            _row(pks["a"], 1000 + 60 * i, cpu_pct=float(i), msgs_total=10.0 * i) for i in range(5)
        ]
        rows.append(_row(pks["b"], 1000, cpu_pct=50.0))
        metrics.write_samples(conn, rows)
    with engine.begin() as conn:  # replay: nothing stored twice
        metrics.write_samples(conn, rows)
    assert metrics.count_samples(engine) == 6
    # A later write of one metric replaces that metric only; duplicates in one batch: later wins.
    with engine.begin() as conn:
        metrics.write_samples(
            conn, [_row(pks["b"], 1000, cpu_pct=1.0), _row(pks["b"], 1000, cpu_pct=2.0)]
        )
    frame = metrics.read_metrics(engine)
    assert list(frame.columns) == ["ts", "account_id", "cpu_pct", "msgs_total"]
    assert str(frame["ts"].dtype) == "datetime64[ms, UTC]"
    b = frame[frame.account_id == "b"].iloc[0]
    assert b["cpu_pct"] == 2.0 and pd.isna(b["msgs_total"])
    a = metrics.read_metrics(engine, accounts=["a"], metrics=["msgs_total"], start=1060, end=1180)
    assert a["msgs_total"].tolist() == [10.0, 20.0, 30.0]
    assert metrics.metric_kinds(engine) == {"cpu_pct": "gauge", "msgs_total": "counter"}
    with pytest.raises(InvalidInput, match="unknown metrics"):
        metrics.read_metrics(engine, metrics=["nope"])
    with pytest.raises(InvalidInput, match="unknown accounts"):
        metrics.read_metrics(engine, accounts=["ghost"])


def test_declare_metric_kinds_is_audited_and_validated(engine):
    with engine.begin() as conn:
        metrics.declare_metric_kinds(conn, {"msgs_sent": "counter"}, actor="ops")
    assert metrics.metric_kinds(engine)["msgs_sent"] == "counter"
    with pytest.raises(InvalidInput):
        with engine.begin() as conn:
            metrics.declare_metric_kinds(conn, {"msgs_sent": "histogram"}, actor="ops")
    assert audit.read_audit(engine, entity_type="metric")[0]["after"] == {"kind": "counter"}


def test_events_upsert_and_filter(engine):
    with engine.begin() as conn:
        pks = accounts.register_unknown(conn, ["a"], actor="t", source="test")
        events.write_events(
            conn,
            [
                (pks["a"], 1000, "crash", "oom", "test"),
                (pks["a"], 2000, "restricted", None, "test"),
            ],
        )
        events.write_events(conn, [(pks["a"], 1000, "crash", "oom again", "test")])
    frame = events.read_events(engine)
    assert frame["kind"].tolist() == ["crash", "restricted"]
    assert frame["detail"].iloc[0] == "oom again"
    assert events.read_events(engine, kinds=["restricted"])["kind"].tolist() == ["restricted"]
    with pytest.raises(InvalidInput, match="unknown event kinds"):
        events.read_events(engine, kinds=["explosion"])


def test_api_keys_are_hashed_and_revocable(engine):
    with engine.begin() as conn:
        plaintext, record = keys.create_key(conn, role="runtime", name="bot-runtime", actor="admin")
    assert keys.lookup_key(engine, plaintext)["role"] == "runtime"
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT key_hash, prefix FROM api_keys")).one()
    assert plaintext not in stored[0] and stored[0] == keys.hash_key(plaintext)
    assert keys.lookup_key(engine, plaintext + "x") is None
    with engine.begin() as conn:
        keys.revoke_key(conn, record["id"], actor="admin")
    assert keys.lookup_key(engine, plaintext) is None
    with pytest.raises(InvalidInput):
        with engine.begin() as conn:
            keys.create_key(conn, role="superuser", name="x", actor="admin")
