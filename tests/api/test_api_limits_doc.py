"""docs/api.md's table of limits says what the code enforces: each value is read from the
settings' defaults or the constants the validators use, so the two cannot drift apart."""

from __future__ import annotations

from pathlib import Path

from fleetml.api.routers._params import ROW_ID_MAX
from fleetml.config import Settings
from fleetml.timestamps import RANGE_TEXT
from fleetml.vocab import ACCOUNT_ID_RE, JSON_MAX_DEPTH, METRIC_NAME_RE, NAME_MAX, TEXT_MAX

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _limits() -> dict[str, tuple[str, str]]:
    text = DOC.read_text()
    table = text[text.index("| limit | value | setting |") :].split("\n\n", 1)[0]
    rows = {}
    for line in table.splitlines()[2:]:
        name, value, setting = (c.strip() for c in line.strip().strip("|").split("|"))
        rows[name] = (value, setting)
    return rows


def _default(field: str):
    return Settings.model_fields[field].default


def test_the_documented_limits_are_the_enforced_ones():
    rows = _limits()
    assert rows["request body"] == (
        f"{_default('max_body_bytes')} bytes (32 MiB; 413 past it)",
        "`FLEETML_MAX_BODY_BYTES`",
    )
    value, setting = rows["request bodies in flight, per API process"]
    assert value.startswith(f"{_default('max_inflight_body_bytes')} bytes")
    assert setting == "`FLEETML_MAX_INFLIGHT_BODY_BYTES`"
    value, setting = rows["samples or events per request"]
    assert value.startswith(f"{_default('max_batch_samples')} ")
    assert setting == "`FLEETML_MAX_BATCH_SAMPLES`"
    assert rows["timestamps"][0].startswith(RANGE_TEXT + ",")
    assert rows["samples ahead of the server clock"][0] == (
        f"{_default('max_future_skew_s'):g} seconds"
    )
    assert ACCOUNT_ID_RE.pattern == r"^[A-Za-z0-9_.:@+\-]{1,128}$"  # what the row describes
    assert METRIC_NAME_RE.pattern == r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
    assert f"1-{NAME_MAX} characters" == rows["names (group, key name, silence filters)"][0]
    assert f"at most {TEXT_MAX} characters" == rows["free text (notes, comments)"][0]
    assert rows["JSON objects (attributes, event detail)"][0].startswith(
        f"at most {JSON_MAX_DEPTH} levels deep"
    )
    assert rows["row ids (keys, alerts, silences, actions, recommendations)"][0] == (
        f"1 to {ROW_ID_MAX} (422 past it)"
    )


def test_each_setting_named_exists():
    for _, setting in _limits().values():
        if setting != "-":
            name = setting.strip("`").removeprefix("FLEETML_").lower()
            assert name in Settings.model_fields, setting
