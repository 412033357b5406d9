"""The calibrator, the second step of anomaly detection: raw detector scores in, [0, 1) out.

:class:`ScoreCalibrator` makes raw scores comparable across accounts and model versions in two
stages:

1. the *training CDF* of the raw scores, with an exponential (peaks-over-threshold) tail above
   ``tail_quantile``; it is kept in log space in the tail, so two extreme rows keep their order
   however far out they are;
2. with ``method="likelihood"`` (the default, an anomaly likelihood in the spirit of Numenta's)
   the CDF is turned into a normal quantile (0 at or below the median), averaged over the
   account's last ``short_window`` rows, and compared with the mean and spread this average had
   over the account's last ``likelihood_window`` training rows. The Gaussian tail probability
   ``Q`` of that average is reported on a log scale, ``L = -log10(Q)``, mapped to
   ``score = L / (L + 5)``: ``0.5`` means ``Q = 1e-5`` (as before), ``0.667`` means ``1e-10``, and
   the score keeps growing towards 1 without reaching it, so a threshold sweep can separate rows
   anywhere in the range (the earlier ``log(Q) / log(1e-10)`` clipped at 1 could not).

An optional *range check* adds what the forest cannot see: a level (``range_columns``) outside
the account's training range, padded by ``range_tolerance`` of it, counts as at least
``L = 10`` plus 100 per range-width beyond the padded edge.

Rows of one account must come in time order; a row's likelihood depends on the
``short_window - 1`` rows before it in the same call (score a context of earlier rows with a
block), so the calibrated score is causal.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.special import log_ndtr, ndtri, ndtri_exp

#: Smallest standard deviation of the averaged score (probit units) by default: a perfectly
#: regular account still needs a visible change before its likelihood moves. The shipped
#: configuration raises it (``likelihood_min_std``, see :class:`ScoreCalibrator`).
MIN_LIKELIHOOD_STD = 1e-3
#: ``L`` (``-log10`` of the tail probability) that scores 0.5: ``score = L / (L + SCORE_HALF)``.
SCORE_HALF = 5.0
#: ``L`` of a level just outside its padded training range, and its growth per range-width.
RANGE_BASE_L = 10.0
RANGE_SLOPE_L = 100.0
METHODS = ("likelihood", "cdf")
_LN10 = np.log(10.0)


def score_of_log10_tail(L: np.ndarray) -> np.ndarray:
    """Map ``L = -log10(Q) >= 0`` to ``L / (L + 5)`` in [0, 1): monotone, never saturating."""
    L = np.maximum(np.asarray(L, dtype=float), 0.0)
    return L / (L + SCORE_HALF)


def log10_tail_of_score(score) -> np.ndarray:
    """Inverse of :func:`score_of_log10_tail` (a threshold as a tail probability ``10**-L``)."""
    s = np.asarray(score, dtype=float)
    return SCORE_HALF * s / (1.0 - s)


def rolling_mean_by_group(
    values: np.ndarray, new_series: np.ndarray, window: int, *, return_counts: bool = False
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Trailing mean over the last ``window`` rows of each series (fewer at a series' start).

    Rows are grouped by series in time order; ``new_series`` marks each series' first row.
    Vectorised with cumulative sums, so it is causal and costs O(n). With ``return_counts`` also
    returns how many rows each mean covers.
    """
    n = values.size
    if n == 0:
        return (np.zeros(0), np.zeros(0, dtype=np.intp)) if return_counts else np.zeros(0)
    idx = np.arange(n)
    start = np.maximum.accumulate(np.where(new_series, idx, 0))
    lo = np.maximum(idx - int(window) + 1, start)
    csum = np.concatenate([[0.0], np.cumsum(values)])
    counts = idx + 1 - lo
    mean = (csum[idx + 1] - csum[lo]) / counts
    return (mean, counts) if return_counts else mean


class ScoreCalibrator:
    """Raw anomaly scores to calibrated scores in [0, 1) (see the module docstring).

    Accounts are integer codes ``0 .. n_groups - 1``; code ``n_groups`` is the pooled fallback
    for accounts never seen in training. The owning detector maps account ids to codes.

    Parameters
    ----------
    method : {"likelihood", "cdf"}
    tail_quantile : float
        Raw scores up to this training quantile map through the empirical CDF; beyond it an
        exponential tail fitted to the exceedances.
    short_window, likelihood_window : int
        Rows of the short average, and training rows per account that give its mean and spread.
    range_tolerance : float
        Padding of the level range check, as a fraction of the account's training range.
    likelihood_min_std : float
        Floor of each account's spread of the short average (probit units). A quiet account's
        spread can be tiny, and then a moderate, lasting rise of its raw score (a slow change of
        variance) scores like an outage; the floor keeps "how surprising" comparable across
        accounts, which a threshold shared by all accounts needs.
    """

    def __init__(
        self,
        method: str = "likelihood",
        tail_quantile: float = 0.99,
        short_window: int = 10,
        likelihood_window: int = 4000,
        range_tolerance: float = 0.05,
        likelihood_min_std: float = MIN_LIKELIHOOD_STD,
    ):
        if method not in METHODS:
            raise ValueError(f"calibration must be one of {METHODS}, got {method!r}")
        self.method = method
        self.tail_quantile = tail_quantile
        self.short_window = int(short_window)
        self.likelihood_window = int(likelihood_window)
        self.range_tolerance = range_tolerance
        self.likelihood_min_std = float(likelihood_min_std)

    # ------------------------------------------------------------------ fitting

    def fit_cdf(self, raw: np.ndarray) -> ScoreCalibrator:
        """Empirical CDF of a sample of training raw scores, with an exponential tail."""
        raw = np.asarray(raw, dtype=float)
        probs = np.linspace(0.0, self.tail_quantile, 201)
        self.probs_ = probs
        self.scores_ = np.maximum.accumulate(np.quantile(raw, probs))
        self.tail_start_ = float(self.scores_[-1])
        excess = raw[raw > self.tail_start_] - self.tail_start_
        spread = float(np.std(raw)) if raw.size > 1 else 0.0
        mean_excess = float(excess.mean()) if excess.size else 0.0
        self.tail_scale_ = max(mean_excess, 0.05 * spread, 1e-6)
        return self

    def fit_likelihood(self, blocks: list[tuple[int, np.ndarray]], n_groups: int) -> None:
        """Per-account mean and spread of the short-averaged probit score.

        ``blocks`` holds ``(code, raw scores of that account's recent training rows in time
        order)``; code ``n_groups`` alone means "no account has its own statistics".
        """
        mean = np.zeros(n_groups + 1)
        std = np.ones(n_groups + 1)
        std_row = np.ones(n_groups + 1)  # of single rows: for averages over fewer rows
        known = []
        for code, raw in blocks:
            if not raw.size:
                continue
            probit = self.probit(raw)
            new_series = np.zeros(raw.size, dtype=bool)
            new_series[0] = True
            avg = rolling_mean_by_group(probit, new_series, self.short_window)
            mean[code] = avg.mean()
            std[code] = avg.std() if avg.size > 1 else 1.0
            std_row[code] = probit.std() if probit.size > 1 else 1.0
            if code < n_groups:
                known.append(code)
        if known:  # unknown accounts: typical values over the known ones
            mean[-1], std[-1] = np.median(mean[known]), np.median(std[known])
            std_row[-1] = np.median(std_row[known])
        self.mean_ = mean
        self.std_ = np.maximum(std, getattr(self, "likelihood_min_std", MIN_LIKELIHOOD_STD))
        self.row_std_ = np.maximum(std_row, self.std_)

    def fit_range(self, levels_by_code: list[tuple[int, np.ndarray]], n_groups: int, k: int):
        """Padded training range of each account's level columns (pooled code: no check)."""
        low = np.full((n_groups + 1, k), -np.inf)
        high = np.full((n_groups + 1, k), np.inf)
        width = np.full((n_groups + 1, k), np.inf)
        if k:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no check
                for code, block in levels_by_code:
                    lo, hi = np.nanmin(block, axis=0), np.nanmax(block, axis=0)
                    pad = self.range_tolerance * (hi - lo)
                    ok = np.isfinite(lo) & np.isfinite(hi)
                    low[code] = np.where(ok, lo - pad, -np.inf)
                    high[code] = np.where(ok, hi + pad, np.inf)
                    # a constant level: measure excess against its magnitude instead
                    span = np.where(hi - lo > 1e-12, hi - lo, np.maximum(np.abs(hi), 1.0))
                    width[code] = np.where(ok, span, np.inf)
        self.range_low_, self.range_high_, self.range_width_ = low, high, width

    # ------------------------------------------------------------------ scoring

    def cdf(self, raw) -> np.ndarray:
        """Training CDF of raw scores (the exponential tail above ``tail_quantile``)."""
        raw = np.asarray(raw, dtype=float)
        body = np.interp(raw, self.scores_, self.probs_, left=0.0)
        return np.where(raw > self.tail_start_, 1.0 - np.exp(self._log_tail(raw)), body)

    def _log_tail(self, raw: np.ndarray) -> np.ndarray:
        """``log(1 - cdf)`` in the exponential tail (exact however far out)."""
        excess = np.maximum(raw - self.tail_start_, 0.0)
        return np.log1p(-self.tail_quantile) - excess / self.tail_scale_

    def probit(self, raw) -> np.ndarray:
        """Normal quantile of the CDF, 0 at or below the median, unbounded above.

        Rows below the median are just typical: they count as 0, not as evidence against an
        anomaly (else one very ordinary row would cancel an unusual one in the short average).
        """
        raw = np.asarray(raw, dtype=float)
        body = np.interp(raw, self.scores_, self.probs_, left=0.0)
        out = ndtri(np.clip(body, 0.5, 1.0 - 1e-12))
        tail = raw > self.tail_start_
        if tail.any():
            out[tail] = np.maximum(-ndtri_exp(self._log_tail(raw[tail])), 0.0)
        return out

    def log10_tail(self, raw, codes: np.ndarray, new_series: np.ndarray) -> np.ndarray:
        """``-log10`` of the Gaussian tail probability of each row's short-window average."""
        k = self.short_window
        avg, count = rolling_mean_by_group(self.probit(raw), new_series, k, return_counts=True)
        # An average over fewer rows (an account's first rows in this call, e.g. on-demand
        # scoring of its latest row) spreads more: widen towards the single-row spread.
        spread = np.minimum(self.std_[codes] * np.sqrt(k / count), self.row_std_[codes])
        z = (avg - self.mean_[codes]) / spread
        return -log_ndtr(-z) / _LN10

    def range_log10_tail(self, levels: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``L`` of the range check: 0 inside the padded range, >= ``RANGE_BASE_L`` outside."""
        levels = np.asarray(levels, dtype=float)
        with np.errstate(invalid="ignore"):
            below = self.range_low_[codes] - levels
            above = levels - self.range_high_[codes]
            excess = np.nan_to_num(np.maximum(below, above), nan=-1.0)
            rel = np.where(excess > 0, excess / self.range_width_[codes], -1.0)
        worst = rel.max(axis=1) if rel.shape[1] else np.full(levels.shape[0], -1.0)
        return np.where(worst > 0, RANGE_BASE_L + RANGE_SLOPE_L * worst, 0.0)

    def transform(
        self, raw, codes: np.ndarray, new_series: np.ndarray, levels: np.ndarray | None = None
    ) -> np.ndarray:
        """Calibrated score of each row (rows of one account in time order)."""
        if self.method == "cdf":
            return np.clip(self.cdf(raw), 0.0, 1.0)
        L = self.log10_tail(raw, codes, new_series)
        if levels is not None and levels.shape[1]:
            L = np.maximum(L, self.range_log10_tail(levels, codes))
        return score_of_log10_tail(L)
