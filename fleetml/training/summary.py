"""Helpers for the summaries training commands return and print as their last JSON line."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def json_ready(obj: Any) -> Any:
    """``obj`` with NaN/inf floats replaced by ``None`` so the printed JSON is strict."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if isinstance(obj, float | np.floating) and not math.isfinite(float(obj)):
        return None
    return obj
