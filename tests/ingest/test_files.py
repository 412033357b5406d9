"""File import and export: wide metrics, events, registry; rejections, duplicates, atomicity."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from fleetml.cli import cli
from fleetml.errors import InvalidBatch, InvalidInput
from fleetml.ingest import files
from fleetml.store import accounts, audit, events, metrics


def _write(path, text):
    path.write_text(text.strip() + "\n")
    return path


def test_import_metrics_any_order_duplicates_and_formats(engine, tmp_path):
    csv = _write(
        tmp_path / "m.csv",
        """
ts,account_id,cpu_pct,msgs_sent
2026-01-01T00:02:00,a,3,30
2026-01-01T00:00:00Z,a,1,10
1767225660,a,2,20
2026-01-01T00:00:00+00:00,a,1.5,
2026-01-01T00:00:00,b,,
""",
    )
    report = files.import_metrics(engine, [csv], counters=["msgs_sent"], progress=False)
    assert (report.rows_read, report.rows_stored, report.duplicates, report.rejected) == (
        5,
        3,
        1,
        0,
    )
    assert report.empty == 1 and report.accounts_registered == 2
    frame = metrics.read_metrics(engine)
    a = frame[frame.account_id == "a"]
    assert a["ts"].dt.strftime("%H:%M").tolist() == ["00:00", "00:01", "00:02"]
    # the later duplicate wins metric by metric: cpu from it, msgs_sent kept from the earlier row
    assert a["cpu_pct"].tolist() == [1.5, 2.0, 3.0]
    assert a["msgs_sent"].tolist() == [10.0, 20.0, 30.0]
    assert metrics.metric_kinds(engine)["msgs_sent"] == "counter"


def test_import_rejects_bad_rows_with_line_and_reason(engine, tmp_path):
    csv = _write(
        tmp_path / "bad.csv",
        """
ts,account_id,cpu_pct
2026-01-01T00:00:00,a,1
not-a-time,a,2
2026-01-01T00:02:00,a,high
2026-01-01T00:03:00,a,inf
2100-01-01T00:00:00,a,5
2026-01-01T00:04:00,bad id,6
""",
    )
    report = files.import_metrics(engine, [csv], progress=False)
    assert report.rows_stored == 1 and report.rejected == 5
    by_line = {e.index: (e.field, e.reason) for e in report.errors}
    assert by_line[3][0] == "ts" and "is not a timestamp" in by_line[3][1]
    assert by_line[4] == ("cpu_pct", "not a number: 'high'")
    assert by_line[5] == ("cpu_pct", "not a finite number")
    assert "future" in by_line[6][1]
    assert by_line[7][0] == "account_id"


def test_import_refuses_what_the_api_refuses(engine, tmp_path):
    """The import shares the API's timestamp range and number rules: a huge or pre-1970 stamp,
    a boolean cell and a written NaN are rejected by line, a blank cell is missing."""
    csv = _write(
        tmp_path / "edge.csv",
        """
ts,account_id,cpu_pct
2026-01-01T00:00:00,a,1
1e306,a,2
0001-01-01,a,3
1900-01-01T00:00:00,a,4
-1000,a,5
2026-01-01T00:01:00,a,NaN
2026-01-01T00:02:00,a,
2026-01-01T00:03:00,a,nan
""",
    )
    report = files.import_metrics(engine, [csv], progress=False)
    by_line = {e.index: (e.field, e.reason) for e in report.errors}
    for line in (3, 4, 5, 6):
        assert by_line[line][0] == "ts" and "1970-01-01" in by_line[line][1], by_line
    assert by_line[7] == ("cpu_pct", "not a number: 'NaN'")
    assert by_line[9] == ("cpu_pct", "not a number: 'nan'")
    assert report.rejected == 6 and report.rows_stored == 1 and report.empty == 1
    stored = metrics.read_metrics(engine)
    assert stored["ts"].min() == pd.Timestamp("2026-01-01", tz="UTC")

    flags = _write(
        tmp_path / "flags.csv", "ts,account_id,up\n2026-01-01,a,true\n2026-01-01T00:01,a,false\n"
    )
    report = files.import_metrics(engine, [flags], progress=False)
    assert report.rows_stored == 0 and report.rejected == 2
    assert report.errors[0].reason == "not a number: true"


def test_event_details_the_store_cannot_hold_are_rejected_by_line(engine, tmp_path):
    frame = pd.DataFrame(
        {
            "ts": ["2026-01-01T00:00:00", "2026-01-01T00:01:00"],
            "account_id": ["a", "a"],
            "kind": ["crash", "crash"],
            "detail": ["session crashed", "bad\x00byte"],
        }
    )
    path = tmp_path / "events.parquet"
    frame.to_parquet(path)
    report = files.import_events(engine, [path], progress=False)
    assert report.rows_stored == 1 and report.rejected == 1
    assert (report.errors[0].index, report.errors[0].field) == (2, "detail")
    assert "NUL" in report.errors[0].reason
    assert events.read_events(engine)["detail"].tolist() == ["session crashed"]


def test_import_of_a_file_that_is_not_utf8_names_the_line(engine, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(
        "ts,account_id,cpu_pct\n2026-01-01,a,1\n2026-01-01T00:01,caf\xe9,2\n".encode("latin-1")
    )
    with pytest.raises(InvalidInput, match=r"line 3 is not UTF-8"):
        files.import_metrics(engine, [path], progress=False)
    assert metrics.read_metrics(engine).empty


def test_strict_import_stores_nothing(engine, tmp_path):
    csv = _write(
        tmp_path / "m.csv", "ts,account_id,cpu_pct\n2026-01-01,a,1\n2026-01-01T00:01,a,x\n"
    )
    with pytest.raises(InvalidBatch) as err:
        files.import_metrics(engine, [csv], strict=True, progress=False)
    assert err.value.errors[0].index == 3
    assert metrics.count_samples(engine) == 0
    assert accounts.list_accounts(engine) == []


def test_bad_columns_and_unknown_accounts(engine, tmp_path):
    no_ts = _write(tmp_path / "x.csv", "time,account_id,cpu\n1,a,1\n")
    with pytest.raises(InvalidInput, match="missing column"):
        files.import_metrics(engine, [no_ts], progress=False)
    bad_name = _write(tmp_path / "y.csv", "ts,account_id,cpu load\n1,a,1\n")
    with pytest.raises(InvalidInput, match="invalid metric column"):
        files.import_metrics(engine, [bad_name], progress=False)
    ok = _write(tmp_path / "z.csv", "ts,account_id,cpu\n1767225600,ghost,1\n")
    report = files.import_metrics(engine, [ok], register=False, progress=False)
    assert report.rejected == 1 and "unknown account" in report.errors[0].reason


def test_chunked_import_counts_cross_chunk_duplicates(engine, tmp_path):
    ts = pd.date_range("2026-01-01", periods=50, freq="min", tz="UTC")
    frame = pd.DataFrame({"ts": ts.append(ts[:10]), "account_id": "a", "cpu": range(60)})
    path = tmp_path / "m.parquet"
    frame.to_parquet(path)
    report = files.import_metrics(engine, [path], progress=False, chunk_rows=7)
    assert (report.rows_read, report.rows_stored, report.duplicates) == (60, 50, 10)
    stored = metrics.read_metrics(engine)
    assert stored["cpu"].iloc[:10].tolist() == list(range(50, 60))  # later duplicates won


def test_export_roundtrip(engine, tmp_path):
    src = _write(
        tmp_path / "m.csv",
        "ts,account_id,cpu,mem\n2026-01-01T00:00:00,a,1,\n2026-01-01T00:01:00,b,2,3\n",
    )
    files.import_metrics(engine, [src], progress=False)
    for name in ("out.csv", "out.parquet"):
        out = tmp_path / name
        assert files.export_metrics(engine, out) == 2
        back = pd.read_parquet(out) if name.endswith("parquet") else pd.read_csv(out)
        assert back["account_id"].tolist() == ["a", "b"]
        assert back["cpu"].tolist() == [1.0, 2.0] and pd.isna(back["mem"].iloc[0])
        assert pd.to_datetime(back["ts"], utc=True).dt.minute.tolist() == [0, 1]


def test_import_events_validates_vocabulary(engine, tmp_path):
    path = _write(
        tmp_path / "e.csv",
        "ts,account_id,kind,detail\n2026-01-01T00:00:00,a,crash,oom\n2026-01-01T00:01:00,a,explosion,\n",
    )
    report = files.import_events(engine, [path])
    assert report.rows_stored == 1 and report.rejected == 1
    assert "unknown event kind" in report.errors[0].reason
    assert events.read_events(engine)["detail"].tolist() == ["oom"]


def test_import_accounts_creates_updates_and_is_atomic(engine, tmp_path):
    path = _write(
        tmp_path / "a.csv",
        "account_id,role,master_id,group,capacity\ns1,servant,m1,eu,30\nm1,master,,eu,60\n",
    )
    report = files.import_accounts(engine, [path])
    assert report.extra == {"created": 2, "updated": 0}
    again = _write(
        tmp_path / "b.csv", "account_id,role,master_id,group,capacity\nm1,master,,us,60\n"
    )
    assert files.import_accounts(engine, [again]).extra == {"created": 0, "updated": 1}
    assert accounts.get_account(engine, "m1")["group"] == "us"
    bad = _write(
        tmp_path / "c.csv",
        "account_id,role,master_id,group\nm2,master,,eu\ns9,servant,ghost,eu\n",
    )
    with pytest.raises(InvalidBatch) as err:
        files.import_accounts(engine, [bad])
    assert err.value.errors[0].index == 3
    assert accounts.get_account(engine, "m2") is None  # nothing of the bad file was kept
    actions = [e["action"] for e in audit.read_audit(engine, entity_type="account")]
    assert actions.count("account.create") == 2 and actions.count("account.update") == 1


def test_cli_import_export_and_keys(sqlite_settings, tmp_path):
    runner = CliRunner()
    src = _write(
        tmp_path / "m.csv", "ts,account_id,cpu\n2026-01-01T00:00:00,a,1\n2026-01-01T00:01:00,a,zz\n"
    )
    result = runner.invoke(
        cli, ["import", "metrics", str(src), "--rejects", str(tmp_path / "rej.csv")]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["rows_stored"] == 1 and summary["rejected"] == 1
    assert "zz" in (tmp_path / "rej.csv").read_text()
    strict = runner.invoke(cli, ["import", "metrics", str(src), "--strict"])
    assert strict.exit_code != 0 and "strict mode stored nothing" in strict.output
    out = tmp_path / "o.parquet"
    assert runner.invoke(cli, ["export", "metrics", "--out", str(out)]).exit_code == 0
    assert len(pd.read_parquet(out)) == 1
    created = runner.invoke(cli, ["keys", "create", "--role", "ops", "--name", "dash"])
    assert created.exit_code == 0
    assert created.stdout.strip().splitlines()[-1].startswith("fml_")
    listed = runner.invoke(cli, ["keys", "list"])
    assert "dash" in listed.output and created.stdout.strip().splitlines()[-1] not in listed.output


def test_rejects_file_is_valid_csv_even_when_reasons_hold_quotes(sqlite_settings, tmp_path):
    import csv

    src = tmp_path / "q.csv"
    src.write_text('ts,account_id,cpu\n2026-01-01T00:00:00,a,"x""y"\n')
    rejects = tmp_path / "rej.csv"
    result = CliRunner().invoke(
        cli, ["import", "metrics", str(src), "--strict", "--rejects", str(rejects)]
    )
    assert result.exit_code != 0
    rows = list(csv.reader(rejects.open()))
    assert rows[0] == ["line", "field", "reason"]
    assert rows[1] == ["2", "cpu", "not a number: 'x\"y'"]


@pytest.mark.parametrize("kind", ["metrics", "events"])
def test_cli_import_progress_flag_forces_a_bar_off_a_terminal(sqlite_settings, tmp_path, kind):
    if kind == "metrics":
        src = _write(tmp_path / "m.csv", "ts,account_id,cpu\n2026-01-01T00:00:00,a,1\n")
    else:
        src = _write(tmp_path / "e.csv", "ts,account_id,kind\n2026-01-01T00:00:00,a,crash\n")
    runner = CliRunner()  # stderr is not a terminal here
    shown = runner.invoke(cli, ["import", kind, str(src), "--progress"])
    assert shown.exit_code == 0, shown.output
    assert f"import {kind}" in shown.stderr and "100%|" in shown.stderr
    assert shown.stderr.endswith("\n")  # the finished bar stays on its own line
    assert json.loads(shown.stdout.strip().splitlines()[-1])["rows_read"] == 1
    for flags in ([], ["--no-progress"]):
        quiet = runner.invoke(cli, ["import", kind, str(src), *flags])
        assert quiet.exit_code == 0 and f"import {kind}" not in quiet.stderr


def test_import_functions_honour_their_progress_argument(engine, tmp_path, capsys):
    src = _write(tmp_path / "e.csv", "ts,account_id,kind\n2026-01-01T00:00:00,a,crash\n")
    files.import_events(engine, [src], progress=False)
    assert "import events" not in capsys.readouterr().err
    files.import_events(engine, [src], progress=True)
    assert "import events" in capsys.readouterr().err
