"""A global gradient-boosting forecaster fitted across all series of a run.

Per-series methods (:mod:`fleetml.models.forecasting.methods`) each see one history; a global
model learns from every series at once how a window's shape continues. :class:`GlobalGBMForecaster`
is one scikit-learn ``HistGradientBoostingRegressor`` trained on windows pooled from many series,
each window divided by its own recent level (the mean of its last seasonal cycle), so series of
any size share one model. It is *direct*: the step ahead ``h`` is a feature and one model
forecasts every step of the horizon. Features per (window, h): the normalised recent lags, the
normalised lags at whole seasonal cycles, and the values a seasonal-naive forecast of step ``h``
would repeat (the same position one and two daily cycles back, and one weekly cycle back when
there is a weekly lag). The target is the normalised value ``h`` steps ahead, in logs when every
series is positive.

:func:`global_member_forecasts` is what a run calls before its per-series jobs: it fits the model
twice, so that the member stays causal for validation. Fitted once on the targets before each
series' earliest rolling validation origin, it forecasts every validation origin (these are the
forecasts the per-series combination weighs it by); refitted on all the data, it makes the final
forecast. Each series then weighs the member ``"gbm"`` beside its own methods
(:class:`~fleetml.models.forecasting.selection.LoadForecaster` with ``global_member``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

#: The member name a global forecast has in a series' combination.
GLOBAL_MEMBER = "gbm"
#: Recent lags every window carries (steps).
RECENT_LAGS = 24


@dataclass
class GlobalForecast:
    """One forecast of the global model for one series: mean and standard deviation per step
    on the modelled scale (``log`` y when ``log``, else y itself)."""

    mean: np.ndarray
    sd: np.ndarray
    log: bool


def _one_openmp_thread():
    """One OpenMP thread for the booster: on a machine whose cores are busy (the per-series
    jobs, other services) its spinning threads made a fit of a few thousand rows take minutes
    instead of a second; one thread fits 200,000 rows in about 7 s here."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="openmp")


def _lags(period: int, long_period: int | None, context: int) -> np.ndarray:
    """The lags (1 = the newest value) a window's features read, all within ``context``."""
    lags = set(range(1, min(RECENT_LAGS, context) + 1))
    if period >= 2:
        lags |= set(range(period, context + 1, period))
    if long_period:
        lags.add(long_period)
    return np.array(sorted(x for x in lags if x <= context), dtype="int64")


class GlobalGBMForecaster(BaseEstimator):
    """One gradient-boosting model over windows pooled from many series (direct, multi-step).

    Parameters
    ----------
    period : int, default=24
        The short seasonal period in steps (a day); ``1`` when none is known.
    long_period : int or None, default=None
        The long seasonal period (a week), used as a lag when the history is long enough.
    max_horizon : int, default=48
        Steps ahead the model forecasts (``h`` = 1..max_horizon).
    max_rows : int, default=200_000
        Training rows (window, step ahead) sampled at most, spread over series in proportion to
        the rows each can give; keeps a run of many long series fast.
    log_target : {"auto", True, False}, default="auto"
        Model ``log(y[t+h] / level)``: ``"auto"`` when every training value is positive.
    max_iter, learning_rate, max_leaf_nodes, min_samples_leaf
        Passed to ``HistGradientBoostingRegressor``.
    random_state : int, default=0
        Seeds the row sampling and the booster.
    """

    def __init__(
        self,
        *,
        period: int = 24,
        long_period: int | None = None,
        max_horizon: int = 48,
        max_rows: int = 200_000,
        log_target: str | bool = "auto",
        max_iter: int = 200,
        learning_rate: float = 0.1,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 50,
        random_state: int = 0,
    ):
        self.period = period
        self.long_period = long_period
        self.max_horizon = max_horizon
        self.max_rows = max_rows
        self.log_target = log_target
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.random_state = random_state

    # -- features -------------------------------------------------------------------------

    def context(self) -> int:
        """Steps of history a window needs: the longest lag read."""
        p = max(1, int(self.period))
        long = int(self.long_period or 0)
        return max(RECENT_LAGS, 2 * p, long)

    def _level(self, y: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Each window's level: the mean of absolute values over its last seasonal cycle."""
        width = max(int(self.period), RECENT_LAGS)
        csum = np.r_[0.0, np.cumsum(np.abs(y))]
        return (csum[t] - csum[t - width]) / width

    def _features(self, y: np.ndarray, t: np.ndarray, h: np.ndarray):
        """Features of windows ending before index ``t`` (history ``y[:t]``) for step ``h``,
        and their levels."""
        level = self._level(y, t)
        safe = np.where(level > 0, level, 1.0)
        lags = _lags(int(self.period), self.long_period, self.context())
        cols = [y[t[:, None] - lags[None, :]] / safe[:, None]]
        target_ix = t - 1 + h  # index of the value forecast
        extra = [h.astype("float64")]
        for cycle in {max(1, int(self.period)), int(self.long_period or 0)} - {0}:
            back = cycle * np.ceil(h / cycle).astype("int64")
            ok = back <= self.context()
            same = y[np.where(ok, target_ix - back, t - 1)] / safe
            extra.append(np.where(ok, same, np.nan))
            if cycle == int(self.period) and cycle >= 2:
                ok2 = back + cycle <= self.context()
                same2 = y[np.where(ok2, target_ix - back - cycle, t - 1)] / safe
                extra.append(np.where(ok2, same2, np.nan))
        x = np.column_stack([cols[0], *extra])
        return x, level

    def _encode(self, values: np.ndarray, level: np.ndarray) -> np.ndarray:
        if self.log_ is True:
            return np.log(values / level)
        return values / level

    # -- fitting --------------------------------------------------------------------------

    def _rows(self, cutoffs, rng):
        """Sampled (series, origin, h) rows whose target lies before the series' cutoff."""
        c, big_h = self.context(), int(self.max_horizon)
        counts = []
        for cut in cutoffs:
            # origins t (history y[:t]) from c to cut - 1, each with min(H, cut - t) steps
            first, last = c, int(cut) - 1
            n_orig = max(0, last - first + 1)
            full = max(0, n_orig - big_h + 1)  # origins with all H steps
            counts.append(full * big_h + (n_orig - full) * (n_orig - full + 1) // 2)
        total = sum(counts)
        out = []
        for i, (cut, n) in enumerate(zip(cutoffs, counts, strict=True)):
            if n == 0:
                continue
            k = n if total <= self.max_rows else math.ceil(self.max_rows * n / total)
            t = rng.integers(c, int(cut), size=k)  # history lengths c..cut-1
            room = np.minimum(big_h, int(cut) - t)
            h = 1 + np.floor(rng.random(k) * room).astype("int64")
            out.append((i, t, h))
        return out

    def fit(self, series, cutoffs=None):
        """Fit on many series, using as targets only values before each series' cutoff.

        Parameters
        ----------
        series : sequence of 1-d arrays
            Regular series, oldest first, at one step, finite values.
        cutoffs : sequence of int or None
            Per series, the number of leading values the model may learn from (``None``: all).

        Returns
        -------
        self : GlobalGBMForecaster
        """
        series = [np.asarray(s, dtype="float64") for s in series]
        cutoffs = [len(s) for s in series] if cutoffs is None else [int(c) for c in cutoffs]
        rng = np.random.default_rng(self.random_state)
        cutoffs = [min(c, len(s)) for c, s in zip(cutoffs, series, strict=True)]
        rows = self._rows(cutoffs, rng)
        if self.log_target == "auto":
            self.log_ = all(np.all(s[:c] > 0) for s, c in zip(series, cutoffs, strict=True))
        else:
            self.log_ = bool(self.log_target)
        xs, ys, hs = [], [], []
        for i, t, h in rows:
            x, level = self._features(series[i], t, h)
            keep = level > 0
            target = series[i][t - 1 + h]
            xs.append(x[keep])
            ys.append(self._encode(target[keep], level[keep]))
            hs.append(h[keep])
        if not xs or sum(len(v) for v in ys) < 10 * self.max_horizon:
            raise ValueError(
                "too little history for the global model: each series needs more than "
                f"{self.context()} steps before its validation origins"
            )
        x, target, h = np.concatenate(xs), np.concatenate(ys), np.concatenate(hs)
        with _one_openmp_thread():
            self._fit_booster(x, target, h)
        return self

    def _fit_booster(self, x, target, h):
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.model_ = HistGradientBoostingRegressor(
            max_iter=self.max_iter,
            learning_rate=self.learning_rate,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            early_stopping=False,
            random_state=self.random_state,
        ).fit(x, target)
        # In-sample spread of the errors per step ahead: the shape of the interval over the
        # horizon (the per-series conformal factor corrects its overall width).
        # (on at most 20,000 rows: predicting every training row costs a third of the fit)
        self.n_rows_ = len(target)
        pick = np.random.default_rng(self.random_state).permutation(len(target))[:20_000]
        x, target, h = x[pick], target[pick], h[pick]
        resid = target - self.model_.predict(x)
        sums = np.bincount(h, weights=resid**2, minlength=self.max_horizon + 1)
        seen = np.bincount(h, minlength=self.max_horizon + 1)
        sd = np.sqrt(sums[1:] / np.maximum(seen[1:], 1))
        self.sd_ = np.maximum.accumulate(np.where(seen[1:] > 0, sd, 0.0))

    def predict_at(self, y, origins, horizon: int) -> list[GlobalForecast | None]:
        """Forecasts of ``horizon`` steps from each origin (a history length) of series ``y``;
        ``None`` where the window is too short or its level is not positive."""
        return self.predict_many([(y, origins, horizon)])[0]

    def predict_many(self, requests) -> list[list[GlobalForecast | None]]:
        """:meth:`predict_at` for many ``(y, origins, horizon)`` requests in one batch (one
        booster call for a whole run instead of one per series)."""
        check_is_fitted(self, "model_")
        blocks, xs = [], []
        for y, origins, horizon in requests:
            y = np.asarray(y, dtype="float64")
            horizon = min(int(horizon), int(self.max_horizon))
            origins = [int(o) for o in origins]
            use = [o for o in origins if self.context() <= o <= len(y)]
            if use:
                t = np.repeat(np.array(use, dtype="int64"), horizon)
                h = np.tile(np.arange(1, horizon + 1), len(use))
                x, level = self._features(y, t, h)
                xs.append(x)
                level = level.reshape(len(use), horizon)[:, 0]
            else:
                level = np.empty(0)
            blocks.append((origins, use, horizon, level))
        pred_all = np.empty(0)
        if xs:
            with _one_openmp_thread():
                pred_all = self.model_.predict(np.concatenate(xs))
        out, at = [], 0
        for origins, use, horizon, level in blocks:
            pred = pred_all[at : at + len(use) * horizon].reshape(len(use), horizon)
            at += len(use) * horizon
            sd = self.sd_[:horizon]
            found = {}
            for row, o in enumerate(use):
                if not level[row] > 0:
                    continue
                if self.log_:
                    found[o] = GlobalForecast(np.log(level[row]) + pred[row], sd.copy(), True)
                else:
                    found[o] = GlobalForecast(level[row] * pred[row], level[row] * sd, False)
            out.append([found.get(o) for o in origins])
        return out


def global_member_forecasts(
    series,
    *,
    origins,
    horizon: int,
    period: int,
    long_period: int | None = None,
    validation_horizons=None,
    max_rows: int = 200_000,
    random_state: int = 0,
    n_jobs: int = 1,
) -> list[dict | None]:
    """The global member's forecasts for each series of a run, causal for validation.

    Parameters
    ----------
    series : sequence of 1-d arrays
        The run's series at one step.
    origins : sequence of sequences of int
        Per series, its rolling validation origins (history lengths); empty when it has none.
    horizon : int
        Steps of the final forecast.
    period, long_period : int
        The seasonal periods in steps (day and week; ``long_period`` ``None`` when unknown).
    validation_horizons : sequence of int or None
        Per series, the length of its validation windows (default ``horizon``).
    max_rows, random_state
        As :class:`GlobalGBMForecaster`.
    n_jobs : int, default=1
        With 2 or more, the validation model and the final model are fitted side by side in
        two processes (the same forecasts, about half the wall time).

    Returns
    -------
    list of dict or None
        Per series ``{"validation": {origin: GlobalForecast}, "final": GlobalForecast}``, or
        ``None`` when the model cannot forecast it. The validation forecasts come from a model
        fitted only on values before each series' earliest origin; the final one from a model
        refitted on everything.
    """
    series = [np.asarray(s, dtype="float64") for s in series]
    val_h = [int(v) for v in (validation_horizons or [horizon] * len(series))]
    max_h = max([int(horizon), *val_h])
    # The weekly lag only when most series have several weeks before their validation origins.
    first_origin = np.array(
        [min(o) if len(o) else len(s) for o, s in zip(origins, series, strict=True)]
    )
    long = long_period if long_period and np.median(first_origin) >= 3 * long_period else None

    params = dict(
        period=period,
        long_period=long,
        max_horizon=max_h,
        max_rows=max_rows,
        random_state=random_state,
    )
    tasks = [
        (params, series, first_origin, list(zip(series, origins, val_h, strict=True))),
        (params, series, None, [(y, [len(y)], horizon) for y in series]),
    ]
    if n_jobs > 1:  # the two fits are independent: side by side in two processes
        from joblib import Parallel, delayed

        done = Parallel(n_jobs=2)(delayed(_fit_and_predict)(*task) for task in tasks)
    else:
        done = [_fit_and_predict(*task) for task in tasks]
    vals, finals = done
    out: list[dict | None] = [None] * len(series)
    for i in range(len(series)):
        final = finals[i][0]
        if final is None:
            continue
        out[i] = {
            "validation": {
                int(o): fc for o, fc in zip(origins[i], vals[i], strict=True) if fc is not None
            },
            "final": final,
        }
    return out


def _fit_and_predict(params: dict, series, cutoffs, requests):
    """Fit one global model (targets before ``cutoffs``) and answer ``requests``."""
    model = GlobalGBMForecaster(**params).fit(series, cutoffs=cutoffs)
    return model.predict_many([(y, list(o), h) for y, o, h in requests])
