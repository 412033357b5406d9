"""The registry's read side: which version is champion or challenger, and loading a bundle.

Serving (the API, the scheduler, ``fleetml score``, notebooks) reads models through this module
and never imports :mod:`fleetml.training`; :mod:`fleetml.training.registry` re-exports these
names and adds the write side (runs, logging, registering, promoting).

mlflow is imported inside functions only: importing it costs about a second.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fleetml.config import Settings

CHAMPION = "champion"
CHALLENGER = "challenger"
BUNDLE_FILE = "bundle.joblib"

_configured: dict[str, str] = {}


# --------------------------------------------------------------------------- configuration


def configure_mlflow(settings: Settings | None = None) -> str:
    """Point MLflow at the tracking/registry store of ``settings`` and return its URI.

    The URI is ``settings.tracking_uri``: ``FLEETML_MLFLOW_TRACKING_URI``, else
    ``MLFLOW_TRACKING_URI``, else SQLite at ``<home>/mlflow.db`` (MLflow 3 refuses the file store).
    Telemetry is disabled unless the user already chose otherwise.
    """
    from fleetml.config import get_settings

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # progress bars would interleave with the CLI's one-JSON-line output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    settings = settings or get_settings()
    if settings.tracking_uri.startswith("sqlite"):
        settings.ensure_home()
    uri = settings.tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    _configured["uri"] = uri
    _configured["artifact_location"] = settings.artifact_location
    return uri


def registry_missing(settings: Settings) -> str | None:
    """Why there is no model registry to read (a SQLite registry file not created yet), or None.

    Checking first spares importing mlflow (about a second) and creating an empty registry
    database just to learn that nothing was trained.
    """
    uri = settings.tracking_uri
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    if path in ("", ":memory:") or Path(path).exists():
        return None
    return f"no model registry yet at {path}; nothing has been trained"


def _client(settings: Settings | None = None):
    from mlflow import MlflowClient

    if settings is not None or "uri" not in _configured:
        configure_mlflow(settings)
    return MlflowClient(tracking_uri=_configured["uri"], registry_uri=_configured["uri"])


def get_alias_version(name: str, alias: str, *, settings: Settings | None = None) -> int | None:
    """Version number behind ``name@alias``, or ``None`` when the model or alias does not exist."""
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    try:
        return int(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def get_champion_version(name: str, *, settings: Settings | None = None) -> int | None:
    """Version number of ``name@champion``, or ``None`` when nothing is champion yet."""
    return get_alias_version(name, CHAMPION, settings=settings)


def version_info(name: str, version: int, *, settings: Settings | None = None) -> dict[str, Any]:
    """Version, run id, source, tags and aliases of one registered version, as a dict."""
    mv = _client(settings).get_model_version(name, str(version))
    return {
        "name": name,
        "version": int(mv.version),
        "run_id": mv.run_id,
        "source": mv.source,
        "tags": dict(mv.tags or {}),
        "aliases": list(getattr(mv, "aliases", []) or []),
    }


def run_json(run_id: str, artifact: str, *, settings: Settings | None = None) -> Any:
    """A JSON artifact a training run logged (``reliability.json``...), or None if it has none."""
    import mlflow
    from mlflow.exceptions import MlflowException

    _client(settings)  # configures the tracking URI
    try:
        return mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact}")
    except (MlflowException, OSError, ValueError):
        return None


def model_uri(name: str, *, version: int | None = None, alias: str = CHAMPION) -> str:
    """``models:/name/version`` when a version is given, else ``models:/name@alias``."""
    if version is not None:
        return f"models:/{name}/{int(version)}"
    return f"models:/{name}@{alias}"


def resolve_version(
    name: str,
    *,
    version: int | None = None,
    alias: str = CHAMPION,
    settings: Settings | None = None,
) -> int:
    """The version to use: ``version`` if given (checked to exist), else the one behind ``alias``.

    Raises ``LookupError`` with advice when there is none.
    """
    from mlflow.exceptions import MlflowException

    client = _client(settings)
    if version is not None:
        try:
            client.get_model_version(name, str(int(version)))
        except MlflowException as exc:
            raise LookupError(
                f"model {name!r} has no version {version}; list versions in the MLflow UI "
                f"(tracking URI {_configured['uri']})"
            ) from exc
        return int(version)
    found = get_alias_version(name, alias)
    if found is None:
        raise LookupError(
            f"model {name!r} has no {alias!r} version in {_configured['uri']}; "
            f"train one first (e.g. `fleetml train {name.removeprefix('fleetml-')}`)"
        )
    return found


_bundle_cache: dict[tuple[str, str, int], Any] = {}


def load_bundle(
    name: str,
    *,
    version: int | None = None,
    alias: str = CHAMPION,
    settings: Settings | None = None,
    use_pyfunc: bool = False,
) -> Any:
    """Load the bundle of ``name`` at ``version`` (or ``@alias``, default champion).

    By default the bundle artifact is downloaded and unpickled directly (fast, cached per process
    by tracking URI and version); ``use_pyfunc=True`` goes through ``mlflow.pyfunc.load_model``
    like an external server would. The bundle gains ``registered_version`` for reporting.
    """
    resolved = resolve_version(name, version=version, alias=alias, settings=settings)
    key = (_configured["uri"], name, resolved)
    if key in _bundle_cache and not use_pyfunc:
        return _bundle_cache[key]
    uri = model_uri(name, version=resolved)
    if use_pyfunc:
        import mlflow.pyfunc

        bundle = mlflow.pyfunc.load_model(uri).unwrap_python_model().bundle
    else:
        import joblib
        import mlflow.artifacts

        with tempfile.TemporaryDirectory(prefix="fleetml-load-") as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            matches = list(local.rglob(BUNDLE_FILE))
            if not matches:
                raise LookupError(f"{uri} holds no {BUNDLE_FILE}; was it logged with log_bundle?")
            bundle = joblib.load(matches[0])
    try:
        bundle.registered_version = resolved
    except AttributeError:
        pass
    _bundle_cache[key] = bundle
    return bundle


def clear_cache() -> None:
    """Forget loaded bundles and the configured URI (tests switching homes call this)."""
    _bundle_cache.clear()
    _configured.clear()
