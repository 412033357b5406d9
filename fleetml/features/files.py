"""Feature settings files: a :class:`FeatureConfig` as JSON or YAML, read and checked strictly.

A data scientist sets the feature builder's knobs in a file instead of code and passes it to
``fleetml train risk --features FILE`` (or ``train anomaly``); the trained model stores the
config, so scoring rebuilds the same features. A file holds any subset of the
:class:`FeatureConfig` fields (the rest keep their defaults)::

    {"mean_windows": ["10h", "30h", "60h"], "seasonal": false, "peers": false}

The fields are read from the dataclass itself (``dataclasses.fields`` and its type hints through
pydantic), so a field added to :class:`FeatureConfig` is accepted here without changes. Checks:
unknown keys, types (strict: ``1`` is not ``true``, a string is not a list), durations (fields
whose name ends in ``window(s)``, ``tolerance``, ``bucket``, ``halflife``/``halflives``,
``span(s)`` or ``lag(s)``, or whose default is made of durations: each value must be a positive
pandas duration such as ``"15min"``, ``"1h"``, ``"24h"``) and numbers (never negative, except
``n_jobs`` where a negative count follows joblib).
"""

from __future__ import annotations

import dataclasses
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd

from fleetml.features.config import FeatureConfig

_DURATION_SUFFIXES = (
    "window",
    "windows",
    "tolerance",
    "bucket",
    "halflife",
    "halflives",
    "span",
    "spans",
    "lag",
    "lags",
)
#: Numeric fields where a negative value means something (joblib: -1 = every core).
_NEGATIVE_OK = frozenset({"n_jobs"})


class FeatureConfigError(ValueError):
    """A feature settings file that cannot be used; the message names the file and the field."""


@cache
def _adapter():
    from pydantic import TypeAdapter

    return TypeAdapter(FeatureConfig)


def field_names() -> list[str]:
    """Every key a feature settings file may hold, in the dataclass's order."""
    return [f.name for f in dataclasses.fields(FeatureConfig)]


def load_feature_config(path: str | Path) -> FeatureConfig:
    """Read a feature settings file (``.json``, ``.yaml`` or ``.yml``) into a FeatureConfig.

    Raises
    ------
    FeatureConfigError
        The file is missing or unreadable, is not a mapping, holds an unknown key, or a value of
        the wrong type or range; the message names the file and the field.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FeatureConfigError(f"{path}: cannot read feature settings: {exc}") from exc
    data = _parse(text, path)
    return feature_config_from_dict(data, source=str(path))


def _parse(text: str, path: Path) -> Any:
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise FeatureConfigError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = "" if path.suffix.lower() == ".json" else " (use .yaml or .yml for YAML)"
        raise FeatureConfigError(f"{path}: not valid JSON{hint}: {exc}") from exc


def feature_config_from_dict(data: Any, *, source: str = "feature settings") -> FeatureConfig:
    """Check a mapping of FeatureConfig fields and build the config (``source`` names it in
    errors)."""
    from pydantic import ValidationError

    if not isinstance(data, dict):
        raise FeatureConfigError(
            f"{source}: expected a mapping of FeatureConfig fields at the top level, got "
            f"{type(data).__name__}"
        )
    valid = field_names()
    unknown = [k for k in data if k not in valid]
    if unknown:
        raise FeatureConfigError(
            f"{source}: unknown key {unknown[0]!r}"
            + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
            + f"; valid keys: {', '.join(valid)}"
        )
    try:
        # Through JSON text so validation is strict in JSON's terms: a YAML or JSON list fills
        # a tuple, but 1 is not a bool, 1.5 not an int, a string not a list.
        encoded = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise FeatureConfigError(f"{source}: values must be JSON-like: {exc}") from exc
    try:
        config = _adapter().validate_json(encoded, strict=True)
    except ValidationError as exc:
        raise FeatureConfigError(f"{source}: {_describe(exc)}") from exc
    except (TypeError, ValueError) as exc:  # raised by the dataclass itself
        raise FeatureConfigError(f"{source}: {exc}") from exc
    for name in data:
        problem = _check_value(name, getattr(config, name))
        if problem:
            raise FeatureConfigError(f"{source}: field {name!r}: {problem}")
    try:
        config.lookback_ms()
    except (TypeError, ValueError) as exc:
        raise FeatureConfigError(f"{source}: {exc}") from exc
    return config


def _describe(exc) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = err.get("loc", ())
        name = ".".join(str(p) for p in loc) or "(top level)"
        msg = err["msg"].replace("a valid array", "a list")  # JSON's and YAML's word for it
        parts.append(f"field {name!r}: {msg} (got {err.get('input')!r})")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


@cache
def _duration_fields() -> frozenset[str]:
    out = set()
    for f in dataclasses.fields(FeatureConfig):
        if f.name.endswith(_DURATION_SUFFIXES):
            out.add(f.name)
            continue
        default = f.default if f.default is not dataclasses.MISSING else None
        values = default if isinstance(default, tuple) else (default,)
        if values and all(isinstance(v, str) and _is_duration(v) for v in values):
            out.add(f.name)
    return frozenset(out)


def _is_duration(text: str) -> bool:
    if re.fullmatch(r"\s*[-+]?[\d.]+\s*", text):
        return False  # pandas reads a bare number as nanoseconds: surely not what was meant
    try:
        return pd.Timedelta(text) > pd.Timedelta(0)
    except (ValueError, TypeError):
        return False


def _check_value(name: str, value: Any) -> str | None:
    if name in _duration_fields():
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if item is not None and not (isinstance(item, str) and _is_duration(item)):
                return (
                    f"{item!r} is not a positive duration; use pandas durations such as "
                    "'15min', '1h', '24h', '7d'"
                )
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float) and value < 0 and name not in _NEGATIVE_OK:
        return f"must not be negative (got {value})"
    return None


def dump_feature_config(config: FeatureConfig | None) -> dict[str, Any]:
    """Every field of ``config`` (defaults when None) as plain JSON values; reading the result
    back with :func:`feature_config_from_dict` gives an equal config."""
    return _adapter().dump_python(config or FeatureConfig(), mode="json")
