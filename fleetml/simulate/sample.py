"""The sample dataset that notebooks, tests and the quickstart use: made on demand, then cached.

``ensure_sample_data()`` writes ``data/sample/`` (10 masters x 3 servants x 7 days at 1-minute
steps, seed 7, about 400k metric rows, 9 MB of Parquet, about 10 s) the first time and returns the
cached files afterwards.
A ``sample.json`` stamp records the parameters; files made with other parameters are rebuilt.
"""

from __future__ import annotations

import json
from pathlib import Path

from fleetml.simulate.config import SimConfig

SAMPLE_SEED = 7
SAMPLE_CONFIG = SimConfig(masters=10, servants=3, days=7.0, step_s=60)
_REPO_ROOT = Path(__file__).resolve().parents[2]
_FILES = ("accounts.csv", "metrics.parquet", "events.csv", "ground_truth.json")
_VERSION = 2  # bump when the simulator's output changes, so cached samples are rebuilt


def default_sample_dir() -> Path:
    """data/sample/ in a source checkout; <home>/cache/sample when fleetml is installed."""
    if (_REPO_ROOT / "pyproject.toml").exists():
        return _REPO_ROOT / "data" / "sample"
    from fleetml.config import get_settings

    return get_settings().cache_dir / "sample"


def _stamp(config: SimConfig, seed: int) -> dict:
    return {"version": _VERSION, "seed": seed, "config": config.to_dict()}


def ensure_sample_data(
    path: str | Path | None = None,
    *,
    config: SimConfig | None = None,
    seed: int = SAMPLE_SEED,
    force: bool = False,
) -> dict[str, Path]:
    """Return the sample files under ``path`` (default data/sample/), simulating them if needed.

    Returns ``{"accounts", "metrics", "events", "ground_truth"}`` -> path. ``force`` rebuilds.
    """
    from fleetml.simulate.output import simulate_fleet, write_run

    out = Path(path) if path is not None else default_sample_dir()
    config = config or SAMPLE_CONFIG
    paths = {name.split(".")[0]: out / name for name in _FILES}
    stamp_path = out / "sample.json"
    stamp = _stamp(config, seed)
    fresh = (
        not force
        and stamp_path.exists()
        and all(p.exists() for p in paths.values())
        and json.loads(stamp_path.read_text()) == json.loads(json.dumps(stamp))
    )
    if not fresh:
        run = simulate_fleet(config, seed)
        write_run(run, out, fmt="parquet")
        stamp_path.write_text(json.dumps(stamp, indent=1))
    return paths


def load_sample_into_store(settings=None, *, path: str | Path | None = None):
    """Load the sample dataset into the store of ``settings`` (once) and return its engine.

    Notebooks and tutorials start here: an empty store gets the sample's accounts, metrics
    (counters declared) and events; a store that already holds samples is left as it is.
    """
    from fleetml.config import get_settings
    from fleetml.simulate.output import load_run
    from fleetml.store.engine import get_engine
    from fleetml.store.metrics import count_samples
    from fleetml.store.migrate import upgrade

    settings = settings or get_settings()
    settings.ensure_home()
    engine = get_engine(settings)
    upgrade(engine)
    if count_samples(engine) == 0:
        load_run(engine, ensure_sample_data(path), actor="sample")
    return engine


def main() -> None:  # python -m fleetml.simulate.sample [DIR]
    import sys

    paths = ensure_sample_data(sys.argv[1] if len(sys.argv) > 1 else None)
    print(json.dumps({k: str(v) for k, v in paths.items()}))


if __name__ == "__main__":
    main()
