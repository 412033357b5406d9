"""The fleet's static layout: accounts, roles, groups and capacities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fleetml.simulate.config import SimConfig


@dataclass(frozen=True)
class FleetLayout:
    """Static description of the simulated fleet. Arrays are indexed by account position.

    A *group* is one master and its servants; group ``g`` is served by the accounts whose
    ``group_index`` is ``g``. Account ids look like ``m003`` (master) and ``m003-s1`` (servant).
    """

    account_ids: np.ndarray  # object array of str
    is_master: np.ndarray  # bool
    group_index: np.ndarray  # int
    master_index: np.ndarray  # int: index of the group's master (a master points at itself)
    capacity: np.ndarray  # msgs/min the account can send at full health
    group_names: np.ndarray  # object array of str
    utc_offset_h: np.ndarray  # per group

    @property
    def n_accounts(self) -> int:
        return len(self.account_ids)

    @property
    def n_groups(self) -> int:
        return len(self.group_names)

    def index_of(self, account_id: str) -> int:
        try:
            return self._index[account_id]
        except KeyError:
            raise KeyError(f"unknown account {account_id!r} in the simulated fleet") from None

    @property
    def _index(self) -> dict[str, int]:
        cache = self.__dict__.get("_index_cache")
        if cache is None:
            cache = {a: i for i, a in enumerate(self.account_ids)}
            object.__setattr__(self, "_index_cache", cache)
        return cache

    def accounts_frame(self) -> pd.DataFrame:
        """The registry import format: account_id, role, master_id, group, capacity."""
        master_ids = self.account_ids[self.master_index]
        return pd.DataFrame(
            {
                "account_id": pd.array(self.account_ids, dtype="str"),
                "role": pd.array(np.where(self.is_master, "master", "servant"), dtype="str"),
                "master_id": pd.array(
                    np.where(self.is_master, None, master_ids).tolist(), dtype="str"
                ),
                "group": pd.array(self.group_names[self.group_index], dtype="str"),
                "capacity": self.capacity.astype(float),
            }
        )


def build_layout(config: SimConfig, rng: np.random.Generator) -> FleetLayout:
    """Draw capacities and time zones for ``config.masters`` groups of 1 + ``servants`` accounts."""
    n_groups, per = config.masters, 1 + config.servants
    lo, hi = config.capacity_range
    master_cap = np.round(rng.uniform(lo, hi, n_groups))
    ratio = rng.uniform(*config.servant_capacity_ratio, size=(n_groups, per))
    ratio[:, 0] = 1.0
    capacity = np.maximum(1.0, np.round(master_cap[:, None] * ratio)).ravel()
    width = max(3, len(str(n_groups - 1)))
    ids, masters = [], []
    for g in range(n_groups):
        master = f"m{g:0{width}d}"
        ids.append(master)
        ids.extend(f"{master}-s{k}" for k in range(1, per))
        masters.extend([g * per] * per)
    offsets = np.asarray(config.utc_offsets_h, dtype=float)
    return FleetLayout(
        account_ids=np.asarray(ids, dtype=object),
        is_master=np.tile(np.arange(per) == 0, n_groups),
        group_index=np.repeat(np.arange(n_groups), per),
        master_index=np.asarray(masters),
        capacity=capacity,
        group_names=np.asarray([f"g{g:0{width}d}" for g in range(n_groups)], dtype=object),
        utc_offset_h=rng.choice(offsets, size=n_groups),
    )
