"""The knobs of the feature builder, in one dataclass stored with every trained model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pandas as pd

#: Cross-metric ratios built when both metrics exist: (numerator, denominator) base names. A
#: base name matches a column of that name or the same name with the counter suffix ``_total``.
DEFAULT_RATIOS: tuple[tuple[str, str], ...] = (
    ("send_failures", "msgs_sent"),
    ("rate_limit_hits", "msgs_sent"),
    ("user_blocks", "msgs_delivered"),
    ("msgs_delivered", "msgs_sent"),
)


@dataclass(frozen=True)
class FeatureConfig:
    """What :func:`fleetml.features.build_features` computes.

    The defaults (windows 15 min to 24 h, 12 features a metric) suit samples every few minutes;
    they are kept lean because the output has one float64 column per feature for every input row.
    Every window is a duration (pandas offset string such as ``"15min"``, ``"1h"``, ``"24h"``),
    never a row count, so gaps and irregular sampling shorten a window's sample count instead of
    stretching it over time.

    Parameters
    ----------
    mean_windows, std_windows, slope_windows
        Trailing windows ``(t - w, t]`` for the level (mean), dispersion (sample standard
        deviation) and trend (least-squares slope per hour) of each metric.
    z_windows
        ``(level - mean_w) / std_w``: how unusual the current level is for this account lately
        (trees cannot divide features by each other, so the ratio is given to them). Off by
        default: it did not help the risk model on simulator data.
    roc_windows
        Rate of change: ``(value(t) - value(t - w)) / hours`` using the last sample at or before
        ``t - w`` (no older than ``4 w``).
    ratios, ratio_windows
        Cross-metric ratios ``sum(numerator) / sum(denominator)`` over each window, named
        ``<num>_per_<den>__<window>``; built only when both metrics are present.
    seasonal
        Residual against the account's own seasonal baseline: the mean of the values at the same
        time of day on the previous ``seasonal_days`` days, or at the same time of week on the
        previous ``seasonal_weeks`` weeks once at least ``seasonal_min_weeks`` of those exist.
        A past sample counts when it lies within ``seasonal_tolerance`` of the exact lag (default:
        half the sampling step inferred from the data).
    peers, peer_bucket, peer_min_accounts
        Robust z-score of the account's level against the median of its group at the same
        (bucketed) time; ``peer_bucket=None`` infers the sampling step from the data.
    trend_pairs
        Slow-trend features for precursors that build over a day or more (memory leaks, session
        decay): for each ``(fast, slow)`` pair, ``<metric>__trend_<fast>_<slow>`` is
        ``(mean_fast - mean_slow) / std_slow``, a moving-average crossover in units of the slow
        window's spread (:mod:`fleetml.features.trends`). Off by default; on in the
        :data:`RISK_FEATURES` preset (``docs/risk.md`` has the validation figures).
    cusum_windows, cusum_reference, cusum_k
        One-sided CUSUMs over each window: every sample's level is standardised against the
        trailing ``cusum_reference`` window at that sample, ``k`` is subtracted (``+z - k`` for
        ``<metric>__cusum_up_<w>``, ``-z - k`` for ``cusum_down_<w>``) and the largest sum over a
        suffix of ``(t - w, t]`` (0 when none is positive) is the feature: a drift of a fraction
        of a standard deviation sustained for hours adds up where one spike does not. Off here;
        on in :data:`RISK_FEATURES`.
    peak_windows, peak_reference
        A cheap stand-in for the anomaly detector's recent maxima: ``<metric>__peak_z_<w>`` is
        ``(max of the level over (t - w, t] - mean_ref) / std_ref`` and ``__trough_z_<w>`` the
        same with the minimum, both against the trailing ``peak_reference`` window at ``t``
        (how far the last hours strayed from the account's own baseline, in its units of
        spread). The reference is taken at ``t``, not at each sample, so the features read no
        further back than the reference window itself (the live window's 24 h). Off here.
    fault_history, history_windows
        Event-history features (:mod:`fleetml.features.history`): hours since the account's
        last technical fault and enforcement event, its fault count over each history window and
        its group's over the shortest. Built only when the caller passes events (risk training
        and scoring do); the longest window bounds how far back events are read. Chosen on the
        validation period of ``bench/risk_sim.py`` (24 h PR-AUC 0.28 -> 0.35 on validation).
    group_windows
        Faults of the other accounts of the account's group over each window
        (``fault_history__group_others_<w>``; needs groups and events). Off here; on in
        :data:`RISK_FEATURES`.
    master_windows
        The master's state for its servants (needs ``masters``, account -> its master, from the
        registry, and events): ``fault_history__master_hours_since`` and
        ``enforcement_history__master_hours_since`` (hours since the account's master's last
        fault and restriction or ban), ``fault_history__master_count_<w>`` (the master's faults)
        and ``fault_history__servants_count_<w>`` (faults of the other servants of the
        account's master, or of a master's own servants) for each window. NaN for the master's
        own columns of an account without a master. Off here.
    chunk_rows
        Per-account features are built over chunks of whole accounts of about this many rows
        (bounded temporary memory; the result does not depend on it).
    n_jobs, dask_address, parallel_min_rows
        Large frames are split into a few chunks of whole accounts and built through
        :func:`fleetml.parallel.run_parallel` when ``n_jobs != 1`` or a Dask address is given and
        the frame has at least ``parallel_min_rows`` rows; otherwise one vectorised pass.
    """

    mean_windows: tuple[str, ...] = ("1h", "6h", "24h")
    std_windows: tuple[str, ...] = ("1h", "24h")
    slope_windows: tuple[str, ...] = ("1h", "6h")
    z_windows: tuple[str, ...] = ()
    roc_windows: tuple[str, ...] = ("15min", "1h")
    ratios: tuple[tuple[str, str], ...] = DEFAULT_RATIOS
    ratio_windows: tuple[str, ...] = ("1h", "6h")
    seasonal: bool = True
    seasonal_days: int = 7
    seasonal_weeks: int = 3
    seasonal_min_weeks: int = 2
    seasonal_tolerance: str | None = None
    peers: bool = True
    peer_bucket: str | None = None
    peer_min_accounts: int = 2
    trend_pairs: tuple[tuple[str, str], ...] = ()
    cusum_windows: tuple[str, ...] = ()
    cusum_reference: str = "24h"
    cusum_k: float = 0.5
    fault_history: bool = True
    history_windows: tuple[str, ...] = ("24h", "7D")
    group_windows: tuple[str, ...] = ()
    master_windows: tuple[str, ...] = ()
    peak_windows: tuple[str, ...] = ()
    peak_reference: str = "24h"
    n_jobs: int | None = 1
    dask_address: str | None = None
    parallel_min_rows: int = 2_000_000
    chunk_rows: int = 500_000
    extra: dict = field(default_factory=dict)

    @property
    def windows(self) -> tuple[str, ...]:
        """Every distinct window used, shortest first."""
        all_w = set(self.mean_windows) | set(self.std_windows) | set(self.slope_windows)
        all_w |= set(self.z_windows)
        all_w |= set(self.roc_windows) | set(self.ratio_windows)
        all_w |= {w for pair in self.trend_pairs for w in pair}
        if self.peak_windows:
            all_w |= set(self.peak_windows) | {self.peak_reference}
        return tuple(sorted(all_w, key=window_ms))

    def lookback_ms(self) -> int:
        """How far back a feature at ``t`` may look (windows, rate of change, seasonal lags)."""
        longest = max([window_ms(w) for w in self.windows] or [0])
        roc = max([4 * window_ms(w) for w in self.roc_windows] or [0])
        seasonal = 0
        if self.seasonal:
            day = DAY_MS
            seasonal = max(self.seasonal_days * day, self.seasonal_weeks * 7 * day)
            seasonal += window_ms(self.seasonal_tolerance) if self.seasonal_tolerance else DAY_MS
        history_w = self.history_windows + self.group_windows + self.master_windows
        history = max([window_ms(w) for w in history_w] or [0])
        cusum = 0
        if self.cusum_windows:
            # every sample of the CUSUM window is standardised against its own reference window
            cusum = max(window_ms(w) for w in self.cusum_windows)
            cusum += window_ms(self.cusum_reference)
        return max(longest, roc, seasonal, cusum, history if self.fault_history else 0)

    def to_dict(self) -> dict:
        """Plain JSON-able form (stored with models so scoring rebuilds the same features)."""
        out = asdict(self)
        out["ratios"] = [list(p) for p in self.ratios]
        out["trend_pairs"] = [list(p) for p in self.trend_pairs]
        return out

    @classmethod
    def from_dict(cls, data: dict) -> FeatureConfig:
        data = dict(data)
        for key in (
            "mean_windows",
            "std_windows",
            "slope_windows",
            "z_windows",
            "roc_windows",
            "ratio_windows",
            "history_windows",
            "cusum_windows",
            "group_windows",
            "master_windows",
            "peak_windows",
        ):
            if key in data:
                data[key] = tuple(data[key])
        if "ratios" in data:
            data["ratios"] = tuple(tuple(p) for p in data["ratios"])
        if "trend_pairs" in data:
            data["trend_pairs"] = tuple(tuple(p) for p in data["trend_pairs"])
        return cls(**data)


#: The slow-trend preset for risk training: the defaults plus the slow-trend, CUSUM and peers'
#: fault features (``examples/features/risk-trends.json`` as a ``--features`` file). On the
#: simulator's validation fleets (seeds 7 and 8, ``bench/risk_features_val.py``) together they
#: raised 24 h PR-AUC a little (0.230 -> 0.241, 0.200 -> 0.234; the best of seven settings tried).
#: Not the default: a model trained with them makes the live window keep 96 h per account
#: instead of 24 h, and a 10,000-account tick's worker then passed 7.8 GB before its first tick
#: ended (1.8 GB peak with 24 h; the serving budget is 2 GB), too high a price for that gain.
RISK_FEATURES = FeatureConfig(
    trend_pairs=(("1h", "24h"), ("6h", "72h")),
    cusum_windows=("24h", "72h"),
    group_windows=("1h", "6h"),
)

DAY_MS = 86_400_000


def window_ms(window: str) -> int:
    """Length of a duration string in milliseconds; a clear error when it is not a duration."""
    try:
        td = pd.Timedelta(window)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"feature window {window!r} is not a duration; use e.g. '15min', '1h', '24h'"
        ) from exc
    ms = int(td / pd.Timedelta(milliseconds=1))
    if ms <= 0:
        raise ValueError(f"feature window {window!r} must be positive")
    return ms
