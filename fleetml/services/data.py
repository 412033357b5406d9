"""The one loader of training and scoring data from the store.

Training (every family), ``fleetml score``, the live loop's first fill and the notebooks read the
fleet through :func:`load_fleet_data`, so they all see the same frame, kinds, groups and events.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd

from fleetml.vocab import ENFORCEMENT_LABELS, FAULT_KINDS


@dataclass
class FleetData:
    """What a model reads from the store.

    ``frame`` is the canonical wide metrics frame (``ts``, ``account_id``, one column per metric);
    ``kinds`` maps metric -> kind; ``groups`` account -> group; ``faults`` and ``enforcement`` are
    event frames (``ts``, ``account_id``, ``kind``, ...); ``masters`` servant -> its master.
    """

    frame: pd.DataFrame
    kinds: dict[str, str]
    groups: dict[str, str]
    faults: pd.DataFrame
    enforcement: pd.DataFrame
    masters: dict[str, str] = field(default_factory=dict)

    @property
    def events(self) -> pd.DataFrame:
        """Technical-fault events (the anomaly pipeline's name for :attr:`faults`)."""
        return self.faults


def account_groups(engine) -> dict[str, str]:
    """account_id -> group for every registered account that has a group."""
    from fleetml.store.accounts import accounts_frame

    acc = accounts_frame(engine)
    if not len(acc) or "group" not in acc:
        return {}
    known = acc.dropna(subset=["group"])
    return dict(zip(known["account_id"].astype(str), known["group"].astype(str), strict=True))


def account_masters(engine) -> dict[str, str]:
    """servant account_id -> its master's account_id, for every registered servant that has one."""
    from fleetml.store.accounts import accounts_frame

    acc = accounts_frame(engine)
    if not len(acc) or "master_id" not in acc:
        return {}
    known = acc.dropna(subset=["master_id"])
    return dict(zip(known["account_id"].astype(str), known["master_id"].astype(str), strict=True))


def registry_version(engine) -> tuple[int, int]:
    """(newest ``updated_at``, count) of the registry: changes whenever an account does."""
    import sqlalchemy as sa

    from fleetml.store.tables import accounts

    with engine.connect() as conn:
        row = conn.execute(sa.select(sa.func.max(accounts.c.updated_at), sa.func.count())).one()
    return int(row[0] or 0), int(row[1] or 0)


def load_fleet_data(
    engine,
    *,
    start=None,
    end=None,
    accounts: Iterable[str] | None = None,
    history=None,
) -> FleetData:
    """Metrics from ``start - history`` (all when ``start`` is None) to ``end``, metric kinds,
    groups, and fault and enforcement events over the same range.

    Events after ``end`` are not read: labels near the end are censored instead of guessed.
    """
    from fleetml.store.events import read_events
    from fleetml.store.metrics import metric_kinds, read_metrics

    accounts = list(accounts) if accounts else None
    read_start = start
    if start is not None and history is not None:
        read_start = pd.Timestamp(start) - pd.Timedelta(history)
    frame = read_metrics(engine, accounts=accounts, start=read_start, end=end)
    faults = read_events(
        engine, accounts=accounts, kinds=sorted(FAULT_KINDS), start=read_start, end=end
    )
    enforcement = read_events(
        engine, accounts=accounts, kinds=list(ENFORCEMENT_LABELS), start=read_start, end=end
    )
    return FleetData(
        frame=frame,
        kinds=dict(metric_kinds(engine)),
        groups=account_groups(engine),
        faults=faults,
        enforcement=enforcement,
        masters=account_masters(engine),
    )
