"""Champions as served models, and the set of them a process serves (with hot reload).

:class:`ModelSet` loads each family's ``@champion`` at start and, at most every
``settings.model_check_s`` seconds, asks the registry whether ``@champion`` moved; a new version
is loaded beside the old one and swapped in with one assignment, so no request ever sees a
half-loaded model. A family whose champion is missing, fails to load or is not a fleetml bundle
of that family is *degraded*: its documented heuristic (:mod:`fleetml.serving.fallback`) answers,
:meth:`ModelSet.degraded` says why, and ``/readyz`` reports it. When a newer champion fails to
load while an older one serves, the older one keeps serving and the family is reported degraded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fleetml.features.config import FeatureConfig
from fleetml.serving.anomaly import MODEL_NAME as ANOMALY_MODEL
from fleetml.serving.base import empty_result
from fleetml.serving.fallback import HeuristicAnomaly, HeuristicRisk
from fleetml.serving.risk import MODEL_NAME as RISK_MODEL

log = logging.getLogger("fleetml.serving")

FAMILIES: dict[str, str] = {"anomaly": ANOMALY_MODEL, "risk": RISK_MODEL}


# --------------------------------------------------------------------------- served champions


class ServedAnomaly:
    """An anomaly bundle (:class:`fleetml.models.anomaly.AnomalyModel`) as a served model.

    Besides the protocol it exposes the three steps the live loop runs across ticks: raw forest
    scores (:meth:`raw_scores`), the calibration with each account's earlier scores as context
    (:meth:`calibrate`) and the alert rule (:attr:`rule`).
    """

    family = "anomaly"
    fallback = False

    def __init__(self, bundle, version: int | None):
        for attr in ("detector", "rule", "feature_columns"):
            if not hasattr(bundle, attr):
                raise TypeError(f"not an anomaly bundle: it has no {attr!r}")
        self.bundle = bundle
        self.version = version
        self.detector = bundle.detector
        self.rule = bundle.rule
        #: the habituation of the reported score (None: it is the calibrated score)
        self.habituation = getattr(bundle, "habituation", None)
        self.feature_columns = list(bundle.feature_columns)
        self.feature_config = bundle.feature_config or FeatureConfig()
        self.metric_kinds = dict(bundle.metric_kinds or {})
        likelihood = getattr(self.detector, "calibration", "cdf") == "likelihood"
        #: earlier raw scores of an account that a new row's calibrated score depends on
        self.context_rows = int(self.detector.short_window) - 1 if likelihood else 0

    def lookback_ms(self) -> int:
        return int(self.feature_config.lookback_ms())

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = self.bundle.predict(frame)
        return _as_result(out, "anomaly", score="anomaly_score", flag="is_anomaly")

    def predict_latest(self, frame: pd.DataFrame) -> pd.DataFrame:
        from fleetml.features.latest import latest_matrix

        m = latest_matrix(frame, kinds=self.metric_kinds, config=self.feature_config)
        X = select_columns(m.values, m.columns, self.feature_columns)
        accounts = m.account_id.astype(object)
        scores = self.calibrate(self.raw_scores(X, accounts), accounts, X)
        flags = self.rule.apply(scores, accounts)  # one row per account: no earlier context
        return pd.DataFrame(
            {
                "ts": pd.to_datetime(m.ts_ms, unit="ms", utc=True),
                "account_id": m.account_id.astype(str),
                "family": "anomaly",
                "horizon": "",
                "score": scores,
                "flag": flags,
                "top_metrics": self.top_metrics(X, accounts, flags),
            }
        )

    def raw_scores(self, X: np.ndarray, accounts) -> np.ndarray:
        """The forest's raw score per row (not comparable across versions)."""
        det = self.detector
        return det.packed_.score(det._normalise(np.asarray(X, float), accounts))

    def calibrate(self, raw: np.ndarray, accounts, X: np.ndarray | None = None) -> np.ndarray:
        """Calibrated scores; rows of one account in time order, earlier ones as context."""
        return self.detector.calibrate(raw, accounts, X=X)

    def top_metrics(self, X: np.ndarray, accounts, flags: np.ndarray) -> list[str]:
        top = [""] * len(flags)
        rows = np.flatnonzero(flags)
        if rows.size:
            names = self.detector.top_features_array(
                X[rows], groups=np.asarray(accounts, dtype=object)[rows], k=3
            )
            for r, n in zip(rows, names, strict=True):
                top[r] = ";".join(n)
        return top


class ServedRisk:
    """A risk bundle (:class:`fleetml.models.risk.RiskModel`) as a served model."""

    family = "risk"
    fallback = False

    def __init__(self, bundle, version: int | None):
        for attr in ("horizons", "feature_columns", "risk_matrix"):
            if not hasattr(bundle, attr):
                raise TypeError(f"not a risk bundle: it has no {attr!r}")
        self.bundle = bundle
        self.version = version
        self.horizons = tuple(bundle.horizons)
        self.thresholds = dict(bundle.thresholds)
        self.feature_columns = list(bundle.feature_columns)
        self.feature_config = bundle.feature_config or FeatureConfig()
        self.metric_kinds = dict(bundle.metric_kinds or {})

    def lookback_ms(self) -> int:
        return int(self.feature_config.lookback_ms())

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        return _as_result(self.bundle.predict(frame), "risk", score="risk", flag="at_risk")

    def predict_latest(self, frame: pd.DataFrame) -> pd.DataFrame:
        out = self.bundle.predict_latest(frame)
        return _as_result(out, "risk", score="risk", flag="at_risk")

    def risk_of(self, account_ids, ts_ms, X: np.ndarray) -> dict[str, np.ndarray]:
        """Calibrated risk per horizon (and ``enforcement_<h>``) of feature rows, as arrays:
        the bundle's own ``risk_matrix``, so serving combines the horizons exactly as batch
        scoring does (monotone across horizons)."""
        X = np.asarray(X, dtype=np.float64)
        ids = pd.DataFrame(
            {"ts": np.asarray(ts_ms, dtype=np.int64), "account_id": np.asarray(account_ids)}
        )
        wide = self.bundle.risk_matrix(ids, X)
        return {c: wide[c].to_numpy(dtype=float) for c in wide.columns if c not in ids.columns}


def _as_result(out: pd.DataFrame, family: str, *, score: str, flag: str) -> pd.DataFrame:
    if not len(out):
        return empty_result({"top_metrics": "str"} if family == "anomaly" else None)
    result = pd.DataFrame(
        {
            "ts": out["ts"].to_numpy(),
            "account_id": out["account_id"].astype(str).to_numpy(),
            "family": family,
            "horizon": out["horizon"].astype(str).to_numpy() if "horizon" in out else "",
            "score": out[score].to_numpy(dtype=float),
            "flag": out[flag].to_numpy(dtype=bool),
        }
    )
    for extra in ("top_metrics", "enforcement_risk"):
        if extra in out:
            result[extra] = out[extra].to_numpy()
    return result


def select_columns(values: np.ndarray, columns: list[str], wanted: list[str]) -> np.ndarray:
    """The ``wanted`` feature columns of a matrix (absent features are NaN)."""
    index = {c: i for i, c in enumerate(columns)}
    out = np.full((values.shape[0], len(wanted)), np.nan)
    take = [(j, index[c]) for j, c in enumerate(wanted) if c in index]
    if take:
        dst, src = zip(*take, strict=True)
        out[:, list(dst)] = values[:, list(src)]
    return out


# --------------------------------------------------------------------------- the set


@dataclass
class Slot:
    """What serves one family now."""

    model: object
    version: int | None
    fallback: bool
    reason: str | None
    loaded_at: float
    champion: int | None = None  # the registry's champion when last checked


def heuristic_model(family: str, reason: str):
    """The heuristic that answers for ``family`` when its model is missing or failed."""
    return HeuristicAnomaly(reason) if family == "anomaly" else HeuristicRisk(reason)


class ModelSet:
    """The served model of every family in this process (see the module docstring).

    Parameters
    ----------
    settings
        Where the registry is (``settings.tracking_uri``) and how often to check it.
    champion_version, load
        Injectable for tests: ``champion_version(family) -> int | None`` and
        ``load(family, version) -> served model``.
    """

    def __init__(
        self,
        settings,
        *,
        families=tuple(FAMILIES),
        champion_version: Callable[[str], int | None] | None = None,
        load: Callable[[str, int], object] | None = None,
    ):
        self.settings = settings
        self.families = tuple(families)
        self._champion_version = champion_version or self._registry_champion
        self._load = load or self._registry_load
        self._slots: dict[str, Slot] = {}
        self._checked = 0.0
        self._lock = threading.Lock()
        self._watch: threading.Thread | None = None
        self._stop = threading.Event()

    # registry access (lazy: importing mlflow costs a second)
    def _registry_champion(self, family: str) -> int | None:
        from fleetml.serving import registry

        if registry.registry_missing(self.settings):
            return None  # the embedded registry was never created: nothing trained yet

        registry.configure_mlflow(self.settings)
        return registry.get_champion_version(FAMILIES[family])

    def _registry_load(self, family: str, version: int):
        from fleetml.serving import registry

        registry.configure_mlflow(self.settings)
        bundle = registry.load_bundle(FAMILIES[family], version=version)
        return (
            ServedAnomaly(bundle, version) if family == "anomaly" else ServedRisk(bundle, version)
        )

    # ------------------------------------------------------------------ lifecycle
    def refresh(self, *, force: bool = False) -> list[str]:
        """Check the registry (at most every ``model_check_s`` unless ``force``) and swap in
        moved champions; returns the families whose served model changed."""
        now = time.monotonic()
        if not force and self._slots and now - self._checked < self.settings.model_check_s:
            return []
        with self._lock:
            self._checked = now
            changed = []
            for family in self.families:
                if self._refresh_family(family):
                    changed.append(family)
            return changed

    def _refresh_family(self, family: str) -> bool:
        slot = self._slots.get(family)
        try:
            champion = self._champion_version(family)
        except Exception as exc:  # noqa: BLE001 - an unreachable registry must not stop serving
            reason = f"registry unreachable: {type(exc).__name__}: {exc}"[:300]
            if slot is None:
                self._slots[family] = Slot(
                    heuristic_model(family, reason), None, True, reason, now_s()
                )
                return True
            slot.reason = reason
            return False
        if (
            slot is not None
            and slot.champion == champion
            and not (slot.fallback and champion is not None and slot.version != champion)
        ):
            return False
        if champion is None:
            reason = f"{FAMILIES[family]} has no @champion yet; train one (fleetml train {family})"
            new = Slot(heuristic_model(family, reason), None, True, reason, now_s(), champion)
        else:
            try:
                model = self._load(family, champion)
                new = Slot(model, champion, False, None, now_s(), champion)
            except Exception as exc:  # noqa: BLE001 - corrupt or incompatible: degrade, don't die
                reason = (
                    f"champion version {champion} of {FAMILIES[family]} failed to load: "
                    f"{type(exc).__name__}: {exc}"
                )[:500]
                log.error("%s", reason)
                if slot is not None and not slot.fallback:
                    slot.reason = reason + f"; still serving version {slot.version}"
                    slot.champion = champion
                    return False
                new = Slot(heuristic_model(family, reason), None, True, reason, now_s(), champion)
        if slot is not None and slot.version == new.version and slot.fallback == new.fallback:
            slot.champion = champion
            slot.reason = new.reason
            return False
        self._slots[family] = new
        log.info(
            "serving %s: %s",
            family,
            f"version {new.version}" if not new.fallback else f"fallback ({new.reason})",
        )
        return True

    def ensure_loaded(self) -> None:
        """Load every family now unless a first load already happened."""
        if len(self._slots) < len(self.families):
            self.refresh(force=True)

    def get(self, family: str):
        """The model serving ``family`` now (a champion or its fallback)."""
        slot = self._slots.get(family)
        if slot is None:
            self.refresh(force=True)
            slot = self._slots[family]
        return slot.model

    def mark_failed(self, family: str, exc: BaseException) -> object:
        """A served model raised while scoring: serve the fallback until the champion moves."""
        reason = f"scoring with version failed: {type(exc).__name__}: {exc}"[:500]
        log.error("%s: %s", family, reason)
        with self._lock:
            slot = self._slots.get(family)
            champion = slot.champion if slot else None
            self._slots[family] = Slot(
                heuristic_model(family, reason), None, True, reason, now_s(), champion
            )
        return self._slots[family].model

    def versions(self) -> dict[str, int | None]:
        return {f: s.version for f, s in self._slots.items()}

    def degraded(self) -> dict[str, str]:
        """family -> reason, for every family not served by its current champion."""
        return {f: s.reason or "degraded" for f, s in self._slots.items() if s.reason}

    def status(self) -> dict[str, dict]:
        """What ``/v1/models`` and ``/readyz`` show: per family version, loaded, fallback."""
        return {
            f: {
                "version": s.version,
                "champion": s.champion,
                "loaded": not s.fallback,
                "fallback": s.fallback,
                "reason": s.reason,
                "loaded_at": int(s.loaded_at * 1000),
            }
            for f, s in self._slots.items()
        }

    # ------------------------------------------------------------------ background watch
    def start_watch(self) -> None:
        """Check the registry in a daemon thread every ``model_check_s`` (API processes)."""
        if self._watch is not None:
            return
        interval = max(float(self.settings.model_check_s), 1.0)

        def loop():
            try:
                self.refresh(force=True)  # champions load at start, off the request path
            except Exception:  # noqa: BLE001 - keep watching
                log.exception("model load failed")
            while not self._stop.wait(interval):
                try:
                    self.refresh(force=True)
                except Exception:  # noqa: BLE001 - keep watching
                    log.exception("model refresh failed")

        self._watch = threading.Thread(target=loop, name="fleetml-model-watch", daemon=True)
        self._watch.start()

    def stop_watch(self) -> None:
        self._stop.set()


def now_s() -> float:
    return time.time()
