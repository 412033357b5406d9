"""MLflow glue shared by every model family (anomaly, risk, forecast).

One *bundle* per model family travels through MLflow: a plain picklable Python object that holds
everything serving needs (estimator, calibrator, threshold, feature list, ...) and exposes
``predict(frame) -> DataFrame``. :func:`log_bundle` stores it as a joblib artifact inside an MLflow
``pyfunc`` model whose wrapper (:class:`BundleModel`) simply calls ``bundle.predict``, so whatever
loads the model (:func:`load_bundle`, ``mlflow.pyfunc.load_model``, ``mlflow models serve``) runs
exactly the code used in training.

Versions are tracked with aliases and tags, never stages (deprecated in MLflow 3):

* every registered version gets the alias ``challenger`` (:func:`register_version`);
* :func:`promote` moves the alias ``champion`` to a version and tags the previous champion;
* :func:`get_champion_version` answers "what serves now?".

Typical use from a training pipeline::

    from fleetml.training import registry

    with registry.start_run("fleetml-anomaly", settings=settings, run_name="train") as run:
        registry.log_params({"n_estimators": 100})
        registry.log_metrics({"f1": 0.8})
        info = registry.log_bundle(bundle, pip_requirements=registry.default_pip_requirements())
        version = registry.register_version(
            "fleetml-anomaly", info.model_uri, run_id=run.info.run_id
        )
    if gate_passed or registry.get_champion_version("fleetml-anomaly") is None:
        registry.promote("fleetml-anomaly", version)
    bundle = registry.load_bundle("fleetml-anomaly")  # the champion

mlflow is imported inside functions only: importing it costs about a second and most ``fleetml``
commands never need it.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fleetml.config import Settings

from fleetml.serving.registry import (  # noqa: F401 - the read side, re-exported
    BUNDLE_FILE,
    CHALLENGER,
    CHAMPION,
    _client,
    _configured,
    clear_cache,
    configure_mlflow,
    get_alias_version,
    get_champion_version,
    load_bundle,
    resolve_version,
    version_info,
)
from fleetml.serving.registry import model_uri as model_uri  # noqa: E402,F401

#: Packages a serving environment needs for every fleetml bundle.
BASE_REQUIREMENTS = ("numpy", "pandas", "scikit-learn", "joblib", "cloudpickle")


def ensure_experiment(name: str, *, settings: Settings | None = None) -> str:
    """Return the id of experiment ``name``, creating it with the configured artifact location.

    With a local (SQLite) store the artifacts go under ``<home>/mlartifacts``; with a remote
    tracking server the server decides (its default artifact root or proxied artifacts).
    """
    client = _client(settings)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if _configured["uri"].startswith("sqlite"):
        location = _configured["artifact_location"]
    return client.create_experiment(name, artifact_location=location)


@contextlib.contextmanager
def start_run(
    experiment: str,
    *,
    settings: Settings | None = None,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """Start an MLflow run in ``experiment`` (created when missing); yields the active run.

    The run ends FAILED if the block raises, FINISHED otherwise.
    """
    import mlflow

    configure_mlflow(settings)
    exp_id = ensure_experiment(experiment)
    str_tags = {k: _tag_value(v) for k, v in (tags or {}).items()}
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name, tags=str_tags) as run:
        yield run


def _tag_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return json.dumps(value, default=str)


# --------------------------------------------------------------------------- logging helpers


def log_params(params: Mapping[str, Any]) -> None:
    """Log parameters of the active run (values turned into strings; long ones truncated)."""
    import mlflow

    mlflow.log_params({k: _tag_value(v)[:6000] for k, v in params.items()})


def log_metrics(metrics: Mapping[str, Any], *, prefix: str = "") -> None:
    """Log the finite numeric entries of ``metrics`` to the active run (others are skipped)."""
    import math

    import mlflow

    clean = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            clean[f"{prefix}{key}"] = number
    if clean:
        mlflow.log_metrics(clean)


def set_tags(tags: Mapping[str, Any]) -> None:
    """Set tags on the active run (data range, feature count, ...)."""
    import mlflow

    mlflow.set_tags({k: _tag_value(v) for k, v in tags.items()})


def log_dict(obj: Any, artifact_file: str) -> None:
    """Log a JSON/YAML-serialisable object as an artifact of the active run."""
    import mlflow

    mlflow.log_dict(json.loads(json.dumps(obj, default=str)), artifact_file)


def log_text(text: str, artifact_file: str) -> None:
    """Log a text artifact (e.g. a summary) to the active run."""
    import mlflow

    mlflow.log_text(text, artifact_file)


def log_figure(figure: Any, artifact_file: str) -> None:
    """Log a matplotlib figure as an image artifact of the active run, then close it."""
    import matplotlib.pyplot as plt
    import mlflow

    mlflow.log_figure(figure, artifact_file)
    plt.close(figure)


def log_feature_config(config: Any) -> None:
    """Log the feature settings a model was trained with (None: the defaults it then uses) as
    the artifact ``feature_config.json`` (a valid ``--features`` file) and one ``feature.<field>``
    parameter per field, so runs can be compared in the MLflow UI."""
    from fleetml.features.files import dump_feature_config

    data = dump_feature_config(config)
    log_dict(data, "feature_config.json")
    log_params({f"feature.{k}": _param_value(v) for k, v in data.items()})


def _param_value(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value) or "(none)"
    return _tag_value(value)


# --------------------------------------------------------------------------- bundles


def default_pip_requirements(extra: tuple[str, ...] = ()) -> list[str]:
    """Pinned pip requirements for a bundle, from the versions installed here.

    Passing requirements explicitly skips MLflow's slow dependency inference (several seconds).
    """
    reqs = []
    for pkg in (*BASE_REQUIREMENTS, *extra, "mlflow"):
        try:
            reqs.append(f"{pkg}=={metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            reqs.append(pkg)
    try:
        reqs.append(f"fleetml=={metadata.version('fleetml')}")
    except metadata.PackageNotFoundError:
        pass  # running from a checkout: the serving side must have fleetml on its path
    return reqs


def _bundle_model_class():
    """Build (once) the pyfunc wrapper class; it subclasses an mlflow class, hence the laziness."""
    cls = globals().get("_BundleModelClass")
    if cls is not None:
        return cls
    import mlflow.pyfunc

    class BundleModel(mlflow.pyfunc.PythonModel):
        """MLflow pyfunc wrapper around a fleetml bundle: ``predict`` calls ``bundle.predict``."""

        def __init__(self):
            self.bundle = None

        def load_context(self, context):
            import joblib

            self.bundle = joblib.load(context.artifacts["bundle"])

        def predict(self, context, model_input, params=None):
            return self.bundle.predict(model_input)

    BundleModel.__module__ = __name__
    BundleModel.__qualname__ = "BundleModel"
    globals()["_BundleModelClass"] = BundleModel
    return BundleModel


def __getattr__(name: str):
    # Lets pickle (and users) find ``fleetml.training.registry.BundleModel`` without importing
    # mlflow when this module is imported.
    if name == "BundleModel":
        return _bundle_model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def log_bundle(
    bundle: Any,
    *,
    name: str = "model",
    pip_requirements: list[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Any:
    """Log ``bundle`` as a pyfunc model of the active run and return MLflow's ``ModelInfo``.

    ``bundle`` must be picklable and have ``predict(frame)``. ``info.model_uri`` is what
    :func:`register_version` takes. A bundle with a ``feature_config`` also gets it logged
    (:func:`log_feature_config`).
    """
    import joblib
    import mlflow.pyfunc

    from fleetml.features import FeatureConfig

    if isinstance(getattr(bundle, "feature_config", False), FeatureConfig | None):
        log_feature_config(bundle.feature_config)
    wrapper = _bundle_model_class()()
    with tempfile.TemporaryDirectory(prefix="fleetml-bundle-") as tmp:
        path = Path(tmp) / BUNDLE_FILE
        joblib.dump(bundle, path, compress=3)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=wrapper,
            artifacts={"bundle": str(path)},
            pip_requirements=pip_requirements or default_pip_requirements(),
            metadata=dict(metadata or {}),
        )


def register_version(
    name: str,
    model_uri: str,
    *,
    run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
    alias: str | None = CHALLENGER,
    settings: Settings | None = None,
) -> int:
    """Register ``model_uri`` as a new version of ``name`` and point ``alias`` at it.

    Creates the registered model when missing. Returns the new version number.
    """
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description=f"fleetml {name}: see docs; aliases champion/challenger."
        )
    # MLflow 3 logs a model as a LoggedModel (``models:/m-<id>``): a tracking server accepts
    # that as a version's source only with its model id (the local store is lenient)
    model_id = None
    if model_uri.startswith("models:/m-") and model_uri.count("/") == 1:
        model_id = model_uri.removeprefix("models:/")
    mv = client.create_model_version(
        name,
        source=model_uri,
        run_id=run_id,
        tags={k: _tag_value(v) for k, v in (tags or {}).items()},
        description=description,
        model_id=model_id,
    )
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return int(mv.version)


def promote(
    name: str, version: int, *, reason: str = "", settings: Settings | None = None
) -> int | None:
    """Move the ``champion`` alias of ``name`` to ``version``; return the previous champion.

    The new champion is tagged ``promoted_at`` / ``promotion_reason``; the one it replaces is
    tagged ``retired_at`` (aliases, not stages, carry the state).
    """
    import datetime as dt

    client = _client(settings)
    previous = get_champion_version(name)
    now = dt.datetime.now(dt.UTC).isoformat()
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_model_version_tag(name, str(version), "promoted_at", now)
    client.set_model_version_tag(name, str(version), "promotion_reason", reason or "manual")
    if previous is not None and previous != int(version):
        client.set_model_version_tag(name, str(previous), "retired_at", now)
    return previous


def apply_promotion_rule(
    name: str,
    version: int,
    *,
    champion_version: int | None,
    force: bool,
    gate_passed: bool,
    gate_reason: str,
    sanity_passed: bool = True,
    sanity_reason: str = "",
    settings: Settings | None = None,
) -> tuple[bool, str]:
    """The promotion rule every model family shares; returns ``(promoted, reason)``.

    * ``force`` (``--promote``) always promotes; the reason still names a failed gate or sanity
      check ("promoted although its gate failed: ...").
    * A version failing its family's *sanity check* (e.g. an anomaly model alerting several times
      per account-day) is never promoted otherwise, not even the first one: without a champion,
      serving falls back to its heuristics, which is safer than a model that cries wolf.
    * The first version registered while no champion exists becomes champion when it passes the
      sanity check, even if its promotion gate failed (there is nothing better); the reason says
      so ("promoted as first version although its gate failed: ...").
    * Later versions need both the gate and the sanity check.
    """
    gate_note = "" if gate_passed else f"its gate failed: {gate_reason}"
    sanity_note = "" if sanity_passed else f"its sanity check failed: {sanity_reason}"
    failed = " and ".join(n for n in (gate_note, sanity_note) if n)
    if force:
        promoted = True
        reason = "forced with --promote" + (f"; promoted although {failed}" if failed else "")
    elif not sanity_passed:
        promoted = False
        first = "first version " if champion_version is None else ""
        reason = f"not promoted: {first}failed its sanity check: {sanity_reason}" + (
            "; no champion exists, so serving uses its heuristic fallback"
            if champion_version is None
            else ""
        )
        reason += "; use --promote to force"
    elif champion_version is None:
        promoted = True
        reason = (
            f"promoted as first version although {gate_note}"
            if gate_note
            else f"first version: no champion existed; gate passed: {gate_reason}"
        )
    else:
        promoted = gate_passed
        reason = gate_reason if gate_passed else f"not promoted: {gate_reason}"
    if promoted:
        promote(name, version, reason=reason, settings=settings)
    return promoted, reason


def decide_promotion(
    name: str,
    version: int,
    *,
    champion_version: int | None,
    force: bool,
    gate_passed: bool,
    gate_reason: str,
    sanity_passed: bool,
    sanity_reason: str,
    warnings: list[str] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Apply :func:`apply_promotion_rule` and return the fields every ``train`` command prints
    about it (version, champion, promotion, gate, sanity check, warnings)."""
    promoted, reason = apply_promotion_rule(
        name,
        version,
        champion_version=champion_version,
        force=force,
        gate_passed=gate_passed,
        gate_reason=gate_reason,
        sanity_passed=sanity_passed,
        sanity_reason=sanity_reason,
        settings=settings,
    )
    return {
        "model": name,
        "version": version,
        "champion": version if promoted else champion_version,
        "previous_champion": champion_version,
        "promoted": promoted,
        "promotion_reason": reason,
        "gate_passed": gate_passed,
        "gate_reason": gate_reason,
        "sanity_passed": sanity_passed,
        "sanity_reason": sanity_reason,
        "promoted_despite_failed_gate": promoted and not (gate_passed and sanity_passed),
        "warnings": list(warnings or [])
        + promotion_warnings(
            promoted=promoted, gate_passed=gate_passed, sanity_passed=sanity_passed, reason=reason
        ),
    }


def promotion_warnings(
    *, promoted: bool, gate_passed: bool, sanity_passed: bool, reason: str
) -> list[str]:
    """The human-readable warnings a training run must print about its promotion outcome."""
    if (promoted and not (gate_passed and sanity_passed)) or (not promoted and not sanity_passed):
        return [reason]
    return []
