"""The cached sample dataset."""

from __future__ import annotations

import json

from fleetml.simulate import SimConfig
from fleetml.simulate.sample import ensure_sample_data

TINY = SimConfig(masters=1, servants=1, days=0.05)


def test_sample_data_is_made_once_then_cached(tmp_path):
    paths = ensure_sample_data(tmp_path, config=TINY)
    assert all(p.exists() for p in paths.values())
    stamp = json.loads((tmp_path / "sample.json").read_text())
    assert stamp["config"]["masters"] == 1
    mtime = paths["metrics"].stat().st_mtime_ns
    again = ensure_sample_data(tmp_path, config=TINY)
    assert again == paths and paths["metrics"].stat().st_mtime_ns == mtime
    ensure_sample_data(tmp_path, config=TINY.with_(days=0.06))
    assert paths["metrics"].stat().st_mtime_ns != mtime  # other parameters: rebuilt
