"""The detector, the first step of anomaly detection: features in, a raw anomaly score out.

:class:`IsolationForestDetector` (scikit-learn contract) normalises every feature per account
(median and robust scale learned in ``fit``), grows an isolation forest and returns its *raw*
score (:meth:`~IsolationForestDetector.score_samples`, higher is more anomalous). It owns a fitted
:class:`~fleetml.models.anomaly_calibration.ScoreCalibrator` (``calibrator_``, the second step)
so that :meth:`~IsolationForestDetector.anomaly_score` returns the calibrated score in [0, 1);
the alert rule (third step) is :class:`~fleetml.models.anomaly_rule.AlertRule`.

For every flagged point :meth:`IsolationForestDetector.top_features` names the metrics that
contributed most (largest robust deviation from the account's normal). Scoring evaluates the
trees' arrays directly (vectorised traversal of all trees at once) instead of calling
scikit-learn per row: one account scores in tens of microseconds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import IsolationForest
from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data

from fleetml.models.anomaly_calibration import (
    METHODS as CALIBRATIONS,
)
from fleetml.models.anomaly_calibration import (
    ScoreCalibrator,
)
from fleetml.models.anomaly_ensemble import (
    SCORERS,
    CombinedScorer,
    DeviationScorer,
    FeatureTailScorer,
)

#: Robust z-scores are clipped to this magnitude so a single wild value cannot stretch the
#: forest's random split ranges and hide every other anomaly.
Z_CLIP = 50.0
_EULER = 0.5772156649


def _average_path_length(n: np.ndarray) -> np.ndarray:
    """Average path length of an unsuccessful BST search over ``n`` points (Liu et al. 2008)."""
    n = np.asarray(n, dtype=float)
    out = np.zeros_like(n)
    two = n == 2
    big = n > 2
    out[two] = 1.0
    out[big] = 2.0 * (np.log(n[big] - 1.0) + _EULER) - 2.0 * (n[big] - 1.0) / n[big]
    return out


#: Rows per account (evenly spaced) used for its normalisation statistics; medians of this many
#: samples are as good as the full history and keep training linear in accounts.
MAX_STATS_ROWS = 2048
#: Rows (drawn at random) the forest is grown from: 100 trees x 256 samples never need more.
MAX_FIT_ROWS = 50_000
#: Training rows scored in-sample to learn the per-account likelihood statistics (the most recent
#: ``likelihood_window`` rows of each account, shortened evenly when the total exceeds this).
MAX_LIKELIHOOD_ROWS = 200_000


def _nanmedian_columns(block: np.ndarray) -> np.ndarray:
    """Column medians ignoring NaN (NaN for an all-NaN column), with one sort of the block.

    ``np.nanmedian`` falls back to a per-column Python loop when NaN are present.
    """
    if block.shape[0] == 0:
        return np.full(block.shape[1], np.nan)
    ordered = np.sort(block, axis=0)  # NaN sort last
    valid = np.sum(~np.isnan(block), axis=0)
    lo = np.maximum((valid - 1) // 2, 0)
    hi = np.maximum(valid // 2, 0)
    cols = np.arange(block.shape[1])
    med = 0.5 * (ordered[lo, cols] + ordered[hi, cols])
    return np.where(valid > 0, med, np.nan)


def _column_stats(block: np.ndarray) -> np.ndarray:
    """Per-column median, 1.4826 MAD and standard deviation (NaN-aware), as a (3, n_cols) array."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        # all-NaN columns (a metric absent from this account) are expected: handled by callers
        warnings.simplefilter("ignore", RuntimeWarning)
        center = _nanmedian_columns(block)
        mad = 1.4826 * _nanmedian_columns(np.abs(block - center))
        std = np.nanstd(block, axis=0)
    return np.vstack([center, mad, std])


def metric_of(feature: str) -> str:
    """Metric a feature derives from: the part before ``__`` (``cpu__mean_1h`` -> ``cpu``)."""
    return str(feature).split("__", 1)[0]


class PackedForest:
    """All trees of a fitted ``IsolationForest`` packed into flat arrays for vectorised scoring.

    Leaves point to themselves, so every row walks ``max_depth`` steps in lock-step through every
    tree; the expected path length of a leaf is precomputed. Results equal
    ``-IsolationForest.score_samples`` (inputs are cast to float32 exactly as the trees do).
    """

    def __init__(self, forest: IsolationForest):
        self.estimators = list(forest.estimators_)
        self.estimator_features = [np.asarray(f) for f in forest.estimators_features_]
        self.tree_leaf_length = []
        lefts, rights, feats, thrs, leaf_len, roots = [], [], [], [], [], []
        offset = 0
        max_depth = 0
        for est, features in zip(forest.estimators_, forest.estimators_features_, strict=True):
            tree = est.tree_
            n = tree.node_count
            idx = np.arange(n)
            is_leaf = tree.children_left < 0
            lefts.append(np.where(is_leaf, idx, tree.children_left) + offset)
            rights.append(np.where(is_leaf, idx, tree.children_right) + offset)
            feats.append(np.where(is_leaf, 0, np.asarray(features)[np.maximum(tree.feature, 0)]))
            # float32 inputs compared with float64 thresholds, as sklearn's trees do.
            thrs.append(np.where(is_leaf, np.inf, tree.threshold))
            depth = tree.compute_node_depths() - 1  # root at depth 0
            leaf_len.append(depth + _average_path_length(tree.n_node_samples))
            self.tree_leaf_length.append(leaf_len[-1])
            roots.append(offset)
            offset += n
            max_depth = max(max_depth, int(depth.max()))
        self.left = np.concatenate(lefts).astype(np.int32)
        self.right = np.concatenate(rights).astype(np.int32)
        self.feature = np.concatenate(feats).astype(np.int32)
        self.threshold = np.concatenate(thrs)
        self.leaf_length = np.concatenate(leaf_len)
        self.roots = np.asarray(roots, dtype=np.int32)
        self.max_depth = max_depth
        n_trees = len(roots)
        self.denominator = n_trees * float(_average_path_length([forest.max_samples_])[0])

    #: From this many rows on, per-tree compiled ``apply`` beats the numpy lock-step walk.
    batch_rows = 128

    def score(self, X: np.ndarray, *, chunk: int = 16384) -> np.ndarray:
        """Isolation score ``2 ** (-E[h(x)] / c(max_samples))`` in (0, 1]; higher is rarer."""
        X = np.asarray(X, dtype=np.float32)
        if X.shape[0] >= self.batch_rows:
            return self._score_by_tree(X)
        out = np.empty(X.shape[0])
        for start in range(0, X.shape[0], chunk):
            out[start : start + chunk] = self._score(X[start : start + chunk])
        return out

    def _score_by_tree(self, X: np.ndarray) -> np.ndarray:
        depths = np.zeros(X.shape[0])
        X = np.ascontiguousarray(X)
        every = np.arange(X.shape[1])
        for est, features, leaf_length in zip(
            self.estimators, self.estimator_features, self.tree_leaf_length, strict=True
        ):
            # trees drawn on every feature (max_features=1.0) read X as it is: no copy per tree
            sub = X if np.array_equal(features, every) else np.ascontiguousarray(X[:, features])
            leaves = est.apply(sub, check_input=False)
            depths += leaf_length[leaves]
        if self.denominator == 0:
            return np.ones(X.shape[0])
        return np.exp2(-depths / self.denominator)

    def _score(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        nodes = np.broadcast_to(self.roots, (n, self.roots.size)).copy()
        rows = np.arange(n)[:, None]
        for _ in range(self.max_depth):
            go_left = X[rows, self.feature[nodes]] <= self.threshold[nodes]
            nodes = np.where(go_left, self.left[nodes], self.right[nodes])
        depths = self.leaf_length[nodes].sum(axis=1)
        if self.denominator == 0:
            return np.ones(n)
        return np.exp2(-depths / self.denominator)


class IsolationForestDetector(BaseEstimator):
    """Isolation-forest anomaly detector with per-account normalisation and score calibration.

    Parameters
    ----------
    n_estimators : int, default=100
        Number of isolation trees.
    max_samples : int or float, default=256
        Rows drawn to build each tree (as in :class:`sklearn.ensemble.IsolationForest`).
    max_features : float, default=1.0
        Fraction of features drawn for each tree.
    normalize : {"robust", "none"}, default="robust"
        ``"robust"`` centres each feature on the account's training median and divides by its
        robust scale (1.4826 MAD, falling back to the standard deviation, then to 1), so accounts
        with different levels share one forest. Accounts unseen in ``fit`` use pooled statistics.
    min_group_samples : int, default=10
        Accounts with fewer training rows are normalised with the pooled statistics.
    tail_quantile : float, default=0.99
        Calibration: raw scores up to this training quantile map through the empirical CDF;
        beyond it an exponential tail fitted to the exceedances keeps extremes distinguishable.
    n_calibration : int, default=20_000
        Training rows (drawn at random when there are more) used to fit the calibration.
    calibration : {"likelihood", "cdf"}, default="likelihood"
        ``"cdf"``: the calibrated score is the training CDF above (every account has the same
        share of rows above any threshold). ``"likelihood"`` (an anomaly likelihood in the spirit
        of Numenta's): the CDF score is turned into a normal quantile (0 at or below the median),
        averaged over the account's last ``short_window`` rows of the batch, and compared with the
        mean and standard deviation that this average had over the account's last
        ``likelihood_window`` training rows (a wider spread for averages over fewer rows); with
        ``L = -log10 Q`` of the Gaussian tail probability ``Q`` the score is ``L / (L + 5)``
        (0.5 at ``Q = 1e-5``, never reaching 1, so it ranks rows across the whole range).
        A regular account then rarely scores high, and a change that is surprising *for this
        account* stands out. Rows of one account must come in time order; a row's score depends on
        the ``short_window - 1`` rows before it in the same call (so score a context of earlier
        rows with it when scoring in blocks).
    short_window : int, default=10
        Rows in the short moving average of the likelihood calibration.
    likelihood_window : int, default=4000
        Most recent training rows of an account whose averaged scores give its mean and spread.
    likelihood_min_std : float, default=1e-3
        Floor of that spread (probit units): with a higher floor a quiet account needs a larger
        change before it scores high (see
        :class:`~fleetml.models.anomaly_calibration.ScoreCalibrator`).
    range_columns : list of int or str, or None, default=None
        Level features (indices or names) checked against the account's training range: a row
        whose value leaves ``[min - tol * range, max + tol * range]`` of that account's training
        rows scores at least as high as a tail probability of 1e-10 (0.667), more the further it is
        outside (a metric at a level never seen before is surprising whatever the forest says).
        ``None`` disables the check.
    range_tolerance : float, default=0.05
        ``tol`` above, as a fraction of the account's training range.
    scorers : tuple of {"forest", "deviation", "tails"}, default=("forest", "deviation")
        Raw scorers combined by :class:`~fleetml.models.anomaly_ensemble.CombinedScorer`: the
        isolation forest, the largest per-account robust z-score over the features (which
        sees a large deviation in one feature that the forest dilutes among many), and the
        largest per-feature tail score (each feature's ``|z|`` through its own training CDF:
        :class:`~fleetml.models.anomaly_ensemble.FeatureTailScorer`); each is calibrated through
        its own training CDF and the largest counts. ``("forest",)`` is the forest alone. The
        shipped configuration (``AnomalyTrainConfig``) uses ``("forest", "tails")``.
    random_state : int, RandomState instance or None, default=None
        Seeds tree construction and the calibration sample.

    Attributes
    ----------
    forest_ : IsolationForest
        The fitted forest (on normalised features).
    packed_ : PackedForest or CombinedScorer
        The raw scorer every scoring path calls on normalised features: the forest's packed
        arrays, or their combination with the other ``scorers``.
    groups_ : ndarray of str
        Accounts with their own normalisation statistics.
    center_, scale_ : ndarray of shape (n_groups + 1, n_features)
        Per-account medians and robust scales; the last row holds the pooled statistics.
    calibrator_ : ScoreCalibrator
        The fitted calibrator (training CDF, likelihood statistics, level ranges).
    range_index_ : ndarray of int
        Columns of ``X`` checked against the account's training range.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Present when ``X`` had string column names.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 3))
    >>> det = IsolationForestDetector(random_state=0).fit(X, groups=np.repeat(["a", "b"], 250))
    >>> rows = [[0.0, 0.0, 0.0]] * 3 + [[6.0, -6.0, 6.0]] * 3  # a lasting change, in time order
    >>> det.anomaly_score(rows, groups=["a"] * 6).round(2)
    array([0.01, 0.01, 0.  , 0.2 , 0.69, 1.  ])
    """

    def __init__(
        self,
        n_estimators: int = 100,
        max_samples: int | float = 256,
        max_features: float = 1.0,
        normalize: str = "robust",
        min_group_samples: int = 10,
        tail_quantile: float = 0.99,
        n_calibration: int = 20_000,
        calibration: str = "likelihood",
        short_window: int = 10,
        likelihood_window: int = 4000,
        likelihood_min_std: float = 1e-3,
        range_columns=None,
        range_tolerance: float = 0.05,
        scorers: tuple[str, ...] = ("forest", "deviation"),
        random_state=None,
    ):
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.max_features = max_features
        self.normalize = normalize
        self.min_group_samples = min_group_samples
        self.tail_quantile = tail_quantile
        self.n_calibration = n_calibration
        self.calibration = calibration
        self.short_window = short_window
        self.likelihood_window = likelihood_window
        self.likelihood_min_std = likelihood_min_std
        self.range_columns = range_columns
        self.range_tolerance = range_tolerance
        self.scorers = scorers
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y=None, groups=None):
        """Learn per-account normalisation, the forest and the score calibration.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature matrix; NaN means "not available" and is treated as the account's median.
        y : ignored
        groups : array-like of shape (n_samples,), default=None
            Account id of every row; ``None`` treats all rows as one account.

        Returns
        -------
        self : IsolationForestDetector
        """
        if self.normalize not in ("robust", "none"):
            raise ValueError(f"normalize must be 'robust' or 'none', got {self.normalize!r}")
        if not 0.5 <= self.tail_quantile < 1.0:
            raise ValueError(f"tail_quantile must be in [0.5, 1), got {self.tail_quantile!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        if int(self.short_window) < 1 or int(self.likelihood_window) < 2:
            raise ValueError(
                "short_window must be >= 1 and likelihood_window >= 2, got "
                f"{self.short_window!r} and {self.likelihood_window!r}"
            )
        bad = [s for s in self.scorers if s not in SCORERS] or ([] if self.scorers else ["none"])
        if bad:
            raise ValueError(
                f"scorers must be a non-empty subset of {SCORERS}, got {self.scorers!r}"
            )
        X = validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan")
        groups = self._check_groups(groups, X.shape[0])
        rng = check_random_state(self.random_state)

        self.__dict__.pop("_code_of", None)
        self._fit_normalisation(X, groups)
        self.range_index_ = self._range_indices()
        X_all, groups_all = X, groups
        if X.shape[0] > MAX_FIT_ROWS:
            rows = np.sort(rng.choice(X.shape[0], MAX_FIT_ROWS, replace=False))
            X, groups = X[rows], groups[rows]
        Z = self._normalise(X, groups)
        self.forest_ = IsolationForest(
            n_estimators=self.n_estimators,
            # an integer larger than the data is what the data allows (sklearn warns otherwise)
            max_samples=(
                min(self.max_samples, Z.shape[0])
                if isinstance(self.max_samples, int | np.integer)
                else self.max_samples
            ),
            max_features=self.max_features,
            random_state=rng.randint(np.iinfo(np.int32).max),
        ).fit(Z)
        self.packed_ = PackedForest(self.forest_)
        scorers = tuple(getattr(self, "scorers", ("forest",)))
        if scorers != ("forest",):
            members = [("forest", self.packed_)] if "forest" in scorers else []
            if "deviation" in scorers:
                members.append(("deviation", DeviationScorer()))
            sample = Z
            if Z.shape[0] > self.n_calibration:
                sample = Z[rng.choice(Z.shape[0], self.n_calibration, replace=False)]
            if "tails" in scorers:
                members.append(("tails", FeatureTailScorer(self.tail_quantile).fit(sample)))
            # ``packed_`` is what every scoring path calls (serving too): the combination
            self.packed_ = CombinedScorer(members, sample, self.tail_quantile)

        if Z.shape[0] > self.n_calibration:
            Z = Z[rng.choice(Z.shape[0], self.n_calibration, replace=False)]
        self.calibrator_ = ScoreCalibrator(
            method=self.calibration,
            tail_quantile=self.tail_quantile,
            short_window=self.short_window,
            likelihood_window=self.likelihood_window,
            range_tolerance=self.range_tolerance,
            likelihood_min_std=getattr(self, "likelihood_min_std", 1e-3),
        ).fit_cdf(self.packed_.score(Z))
        self._fit_range(X_all, groups_all)
        if self.calibration == "likelihood":
            self._fit_likelihood(X_all, groups_all)
        return self

    @staticmethod
    def _check_groups(groups, n: int) -> np.ndarray:
        if groups is None:
            return np.full(n, "", dtype=object)
        groups = np.asarray(groups, dtype=object).astype(str)
        if groups.shape != (n,):
            raise ValueError(f"groups must have one entry per row ({n}), got shape {groups.shape}")
        return groups

    def _fit_normalisation(self, X: np.ndarray, groups: np.ndarray) -> None:
        n_features = X.shape[1]
        if self.normalize == "none":
            self.groups_ = np.array([], dtype=object)
            self.center_ = np.zeros((1, n_features))
            self.scale_ = np.ones((1, n_features))
            return
        uniq, codes = np.unique(groups, return_inverse=True)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(uniq.size + 1))
        keep, centers, mads, stds = [], [], [], []
        for g in range(uniq.size):  # one vectorised block per account, never per row
            rows = order[bounds[g] : bounds[g + 1]]
            if rows.size < self.min_group_samples:
                continue
            if rows.size > MAX_STATS_ROWS:  # evenly spaced over the account's history
                rows = rows[np.linspace(0, rows.size - 1, MAX_STATS_ROWS).astype(np.intp)]
            keep.append(uniq[g])
            stats = _column_stats(X[rows])
            centers.append(stats[0])
            mads.append(stats[1])
            stds.append(stats[2])
        pool = X
        if X.shape[0] > MAX_STATS_ROWS * 16:
            pool = X[np.linspace(0, X.shape[0] - 1, MAX_STATS_ROWS * 16).astype(np.intp)]
        pooled = _column_stats(pool) if pool.shape[0] else np.zeros((3, n_features))
        pooled[0] = np.where(np.isfinite(pooled[0]), pooled[0], 0.0)
        self.groups_ = np.asarray(keep, dtype=object).astype(str).astype(object)
        self.center_ = np.vstack([*centers, pooled[0]])
        self.center_ = np.where(np.isfinite(self.center_), self.center_, pooled[0])
        self.scale_ = self._robust_scale(
            np.vstack([*mads, pooled[1]]), np.vstack([*stds, pooled[2]])
        )

    def _range_indices(self) -> np.ndarray:
        cols = [] if self.range_columns is None else list(self.range_columns)
        names = list(getattr(self, "feature_names_in_", []))
        out = []
        for c in cols:
            if isinstance(c, str):
                if c not in names:
                    raise ValueError(f"range column {c!r} is not a feature; features: {names}")
                out.append(names.index(c))
            else:
                if not 0 <= int(c) < self.n_features_in_:
                    raise ValueError(f"range column {c!r} out of range ({self.n_features_in_})")
                out.append(int(c))
        return np.asarray(out, dtype=np.intp)

    def _group_blocks(self, groups: np.ndarray):
        """(code in ``groups_``, row indices in original order) per known account."""
        codes = self._group_codes(groups, groups.size)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(self.groups_) + 1))
        for g in range(len(self.groups_)):
            yield g, order[bounds[g] : bounds[g + 1]]

    def _fit_range(self, X: np.ndarray, groups: np.ndarray) -> None:
        k = self.range_index_.size
        blocks = [(g, X[np.ix_(r, self.range_index_)]) for g, r in self._group_blocks(groups)]
        self.calibrator_.fit_range(blocks if k else [], len(self.groups_), k)

    def _fit_likelihood(self, X: np.ndarray, groups: np.ndarray) -> None:
        """In-sample raw scores of each account's most recent rows, for the likelihood stats."""
        n_groups = len(self.groups_)
        tail = int(self.likelihood_window)
        if n_groups and n_groups * tail > MAX_LIKELIHOOD_ROWS:
            tail = max(MAX_LIKELIHOOD_ROWS // n_groups, 10 * int(self.short_window))
        blocks = [(g, rows[-tail:]) for g, rows in self._group_blocks(groups) if rows.size]
        if not blocks and X.shape[0]:  # no account has its own statistics: pool recent rows
            blocks = [(n_groups, np.arange(max(X.shape[0] - MAX_LIKELIHOOD_ROWS, 0), X.shape[0]))]
        raw = [(g, self.packed_.score(self._normalise(X[r], groups[r]))) for g, r in blocks]
        self.calibrator_.fit_likelihood(raw, n_groups)

    @staticmethod
    def _robust_scale(mad: np.ndarray, std: np.ndarray) -> np.ndarray:
        # MAD is zero when most values are equal (idle counters); the standard deviation then
        # still sees the rare moves, and a constant feature keeps scale 1.
        scale = np.where(np.isfinite(mad) & (mad > 1e-12), mad, std)
        return np.where(np.isfinite(scale) & (scale > 1e-12), scale, 1.0)

    # ------------------------------------------------------------------ scoring

    def _group_codes(self, groups, n: int) -> np.ndarray:
        pooled = len(self.groups_)
        if groups is None or pooled == 0:
            if groups is None and pooled == 1 and self.groups_[0] == "":
                return np.zeros(n, dtype=np.intp)
            return np.full(n, pooled, dtype=np.intp)
        groups = self._check_groups(groups, n)
        if n <= 64:  # on-demand scoring: a dict lookup beats building an index (~0.3 ms)
            code_of = self.__dict__.get("_code_of")
            if code_of is None:
                code_of = self.__dict__["_code_of"] = {g: i for i, g in enumerate(self.groups_)}
            return np.fromiter((code_of.get(g, pooled) for g in groups), np.intp, count=n)
        codes = pd.Index(self.groups_).get_indexer(groups)
        return np.where(codes < 0, pooled, codes)

    def _normalise(self, X: np.ndarray, groups) -> np.ndarray:
        codes = self._group_codes(groups, X.shape[0])
        Z = (X - self.center_[codes]) / self.scale_[codes]
        Z = np.clip(Z, -Z_CLIP, Z_CLIP)
        return np.nan_to_num(Z, nan=0.0)

    def _validated(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=np.float64, ensure_all_finite="allow-nan", reset=False)

    def transform_normalised(self, X, groups=None) -> np.ndarray:
        """Per-account robust z-scores the forest sees (clipped, NaN as 0)."""
        X = self._validated(X)
        return self._normalise(X, groups)

    def score_samples(self, X, groups=None) -> np.ndarray:
        """Raw anomaly score in (0, 1]: ``2 ** (-mean path length / c(max_samples))``.

        Higher is more anomalous (the opposite sign of scikit-learn's ``IsolationForest``).
        Depends on the forest, so it is *not* comparable across model versions: use
        :meth:`anomaly_score` for that.
        """
        Z = self.transform_normalised(X, groups)
        return self.packed_.score(Z)

    def score_array(self, X: np.ndarray, groups=None) -> np.ndarray:
        """Calibrated score of a float array with no input validation: the hot path for serving.

        ``X`` must hold the training feature columns in order (NaN allowed). Use
        :meth:`anomaly_score` unless the per-call validation cost (~0.3 ms) matters.
        """
        X = np.asarray(X, float)
        return self.calibrate(self.packed_.score(self._normalise(X, groups)), groups, X=X)

    def calibrate(self, raw, groups=None, *, X=None) -> np.ndarray:
        """Map raw scores to calibrated scores in [0, 1) with the fitted :attr:`calibrator_`.

        With ``calibration="cdf"`` a monotone map through the training CDF. With
        ``"likelihood"`` the anomaly likelihood of each row given the account's recent past in
        this call (rows of one account in time order); ``X`` (the features) adds the range check.
        """
        check_is_fitted(self)
        raw = np.asarray(raw, dtype=float)
        n = raw.size
        codes = self._group_codes(groups, n)
        new_series = np.ones(n, dtype=bool)
        new_series[1:] = codes[1:] != codes[:-1]
        if groups is not None and n > 1:
            g = np.asarray(groups, dtype=object)
            new_series[1:] |= g[1:] != g[:-1]  # unknown accounts share the pooled code
        levels = None
        if X is not None and self.range_index_.size:
            levels = np.asarray(X, dtype=float)[:, self.range_index_]
        return self.calibrator_.transform(raw, codes, new_series, levels)

    def __setstate__(self, state):
        # Bundles pickled before the calibrator was a step of its own kept its fitted state on
        # the detector: rebuild the calibrator from it so they still load and score.
        self.__dict__.update(state)
        self.__dict__.setdefault("likelihood_min_std", 1e-3)  # pickled before the parameter
        if "calibrator_" not in state and "calibration_scores_" in state:
            cal = ScoreCalibrator(
                method=state.get("calibration", "cdf"),
                tail_quantile=state["tail_quantile"],
                short_window=state.get("short_window", 10),
                likelihood_window=state.get("likelihood_window", 4000),
                range_tolerance=state.get("range_tolerance", 0.05),
            )
            cal.probs_ = state["calibration_probs_"]
            cal.scores_ = state["calibration_scores_"]
            cal.tail_start_, cal.tail_scale_ = state["tail_start_"], state["tail_scale_"]
            if "likelihood_mean_" in state:
                cal.mean_ = state["likelihood_mean_"]
                cal.std_ = state["likelihood_std_"]
                cal.row_std_ = state["likelihood_row_std_"]
            low = state.get("range_low_", np.full((len(state["groups_"]) + 1, 0), -np.inf))
            high = state.get("range_high_", np.full_like(low, np.inf))
            tol = state.get("range_tolerance", 0.05)
            with np.errstate(invalid="ignore"):
                width = (high - low) / (1.0 + 2.0 * tol)
            cal.range_low_, cal.range_high_ = low, high
            cal.range_width_ = np.where(np.isfinite(width) & (width > 0), width, np.inf)
            self.calibrator_ = cal
            self.range_index_ = state.get("range_index_", np.zeros(0, dtype=np.intp))

    def anomaly_score(self, X, groups=None) -> np.ndarray:
        """Calibrated anomaly score in [0, 1], comparable across accounts and model versions.

        With the likelihood calibration, rows of one account must be in time order (see
        ``calibration``).
        """
        X = self._validated(X)
        return self.calibrate(self.packed_.score(self._normalise(X, groups)), groups, X=X)

    def top_features(
        self, X, groups=None, *, k: int = 3, by_metric: bool = True
    ) -> list[list[str]]:
        """Per row, the ``k`` features (or metrics) deviating most from the account's normal.

        The contribution of a feature is its absolute per-account robust z-score; with
        ``by_metric`` features are grouped by metric (the name part before ``__``) and a metric
        counts with its largest feature.
        """
        return self._top_of(np.abs(self.transform_normalised(X, groups)), k, by_metric)

    def top_features_array(
        self, X: np.ndarray, groups=None, *, k: int = 3, by_metric: bool = True
    ) -> list[list[str]]:
        """:meth:`top_features` of a float array with no input validation (the serving hot
        path; ``X`` holds the training feature columns in order)."""
        check_is_fitted(self)
        return self._top_of(np.abs(self._normalise(np.asarray(X, float), groups)), k, by_metric)

    def _top_of(self, Z: np.ndarray, k: int, by_metric: bool) -> list[list[str]]:
        names = np.asarray(
            getattr(self, "feature_names_in_", [f"x{i}" for i in range(self.n_features_in_)]),
            dtype=object,
        )
        if by_metric:
            metrics = np.array([metric_of(n) for n in names], dtype=object)
            uniq, inverse = np.unique(metrics, return_inverse=True)
            per_metric = np.zeros((Z.shape[0], uniq.size))
            np.maximum.at(per_metric.T, inverse, Z.T) if Z.size else None
            Z, names = per_metric, uniq
        k = min(k, names.size)
        if k == 0 or Z.shape[0] == 0:
            return [[] for _ in range(Z.shape[0])]
        order = np.argsort(-Z, axis=1, kind="stable")[:, :k]
        picked = np.take_along_axis(Z, order, axis=1) > 0
        return [list(names[o][p]) for o, p in zip(order, picked, strict=True)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.requires_fit = True
        return tags
