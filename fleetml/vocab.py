"""The fleet's vocabulary, kept in one place: account roles and states, event kinds, metric kinds.

Every module that needs to know whether an event is a technical fault, a platform-enforcement
signal or an operation imports it from here, so the labels used for training, the decisions taken
and the API's validation can never drift apart.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Role(StrEnum):
    MASTER = "master"
    SERVANT = "servant"


class AccountState(StrEnum):
    ACTIVE = "active"  # carries traffic
    STANDBY = "standby"  # healthy, ready to take traffic
    DRAINING = "draining"  # finishing in-flight work, receives no new traffic
    PAUSED = "paused"  # held by an operator or an enforcement signal
    FAILED = "failed"  # technical fault, out of rotation
    DISABLED = "disabled"  # retired from the fleet


class ApiRole(StrEnum):
    RUNTIME = "runtime"  # ingest, routing, reading predictions
    OPS = "ops"  # read everything, review recommendations, approve actions, acknowledge alerts
    ADMIN = "admin"  # registry, keys, configuration (and everything else)


# --- events -------------------------------------------------------------------------------

#: Technical faults: what failover and rebalancing exist for, and what failure-risk models predict.
FAULT_KINDS: frozenset[str] = frozenset(
    {"crash", "disconnect", "logout", "unreachable", "degraded"}
)
#: Platform enforcement: never routed around. The account is drained and paused and a
#: recommendation is raised; these are never labelled as faults.
ENFORCEMENT_KINDS: frozenset[str] = frozenset({"restricted", "banned", "quality_drop"})
#: The enforcement events the risk model's separate enforcement head learns to foresee (a quality
#: drop is a softer, noisier signal and is not a label).
ENFORCEMENT_LABELS: tuple[str, ...] = ("restricted", "banned")
#: Operations performed on the fleet.
OPERATION_KINDS: frozenset[str] = frozenset(
    {"failover", "failback", "maintenance_start", "maintenance_end", "restriction_lifted"}
)
EVENT_KINDS: frozenset[str] = FAULT_KINDS | ENFORCEMENT_KINDS | OPERATION_KINDS

EVENT_DESCRIPTIONS: dict[str, str] = {
    "crash": "The bot process died (technical fault).",
    "disconnect": "The session lost its connection to the platform (technical fault).",
    "logout": "The session was logged out and needs re-pairing (technical fault).",
    "unreachable": "The account's host did not answer health checks (technical fault).",
    "degraded": "The account works but far below its normal service level (technical fault).",
    "restricted": "The platform restricted the number "
    "(enforcement; drain and pause, never route around).",
    "banned": "The platform banned the number (enforcement; drain and pause, never route around).",
    "quality_drop": "The platform lowered the number's quality rating (enforcement).",
    "failover": "Traffic moved from a master to a servant.",
    "failback": "Traffic returned to the recovered master.",
    "maintenance_start": "Planned maintenance began; faults inside the window are expected.",
    "maintenance_end": "Planned maintenance ended.",
    "restriction_lifted": "The platform lifted a restriction: the number sends again "
    "(ends fleetml's enforcement hold).",
}


def event_category(kind: str) -> str:
    """Return ``fault``, ``enforcement`` or ``operation`` for a known event kind."""
    if kind in FAULT_KINDS:
        return "fault"
    if kind in ENFORCEMENT_KINDS:
        return "enforcement"
    if kind in OPERATION_KINDS:
        return "operation"
    raise ValueError(f"unknown event kind {kind!r}; known kinds: {', '.join(sorted(EVENT_KINDS))}")


# --- metrics ------------------------------------------------------------------------------


class MetricKind(StrEnum):
    GAUGE = "gauge"  # a level sampled at a time (cpu_pct, queue_depth)
    COUNTER = "counter"  # cumulative since process start; may reset to zero on restart


#: Metric names: a letter or underscore, then letters, digits and underscores, at most 64 chars.
METRIC_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
#: Account ids: printable, no whitespace, at most 128 chars.
ACCOUNT_ID_RE = re.compile(r"^[A-Za-z0-9_.:@+\-]{1,128}$")
#: Columns of a wide metrics file that are not metrics.
RESERVED_COLUMNS: frozenset[str] = frozenset({"ts", "account_id"})


def default_metric_kind(name: str) -> MetricKind:
    """A name ending in ``_total`` is a counter (Prometheus convention); anything else a gauge."""
    return MetricKind.COUNTER if name.endswith("_total") else MetricKind.GAUGE


# --- text the store can hold, the same on SQLite and PostgreSQL -------------------------------

#: Names people give (groups, API keys, silence and alert filters): at most this many characters.
NAME_MAX = 128
#: Free text (notes, comments, event details): at most this many characters.
TEXT_MAX = 2000
#: JSON objects stored as they came (account attributes, event details): at most this deep.
JSON_MAX_DEPTH = 32

_NUL_REASON = "must not contain NUL characters (\\u0000)"
_SURROGATE_REASON = "must be valid Unicode text (a lone surrogate such as \\ud800 is not)"


def text_problem(value: str, *, max_length: int | None = None) -> str | None:
    """Why ``value`` cannot be stored as text (None if it can).

    PostgreSQL refuses NUL in text and JSON, and nothing can encode a lone surrogate as UTF-8;
    SQLite takes both, so the rule is checked here, before either store, for both.
    """
    if "\x00" in value:
        return _NUL_REASON
    if max_length is not None and len(value) > max_length:
        return f"must be at most {max_length} characters, got {len(value)}"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _SURROGATE_REASON
    return None


def json_problem(value, *, max_depth: int = JSON_MAX_DEPTH) -> tuple[str, str] | None:
    """The first ``(path, reason)`` of ``value`` (parsed JSON) the store cannot hold, or None.

    Keys and strings follow :func:`text_problem`; numbers must be finite (JSON has no NaN or
    Infinity, and a lenient parser must not sneak them in as null); nesting at most
    ``max_depth``. The walk is iterative, so a hostile depth cannot exhaust the stack.
    """
    import math

    stack = [("", value, 0)]
    while stack:
        path, item, depth = stack.pop()
        if isinstance(item, str):
            reason = text_problem(item)
            if reason is not None:
                return path, reason
        elif isinstance(item, float):
            if not math.isfinite(item):
                return path, f"{item} is not a finite number"
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                return path, f"is nested deeper than {max_depth} levels"
            if isinstance(item, dict):
                for key, sub in item.items():
                    key = str(key)
                    reason = text_problem(key)
                    sub_path = f"{path}.{key}" if path else key
                    if reason is not None:
                        return f"{path}.{ascii(key)}" if path else ascii(key), f"key {reason}"
                    stack.append((sub_path, sub, depth + 1))
            else:
                for i, sub in enumerate(item):
                    stack.append((f"{path}[{i}]", sub, depth + 1))
    return None
