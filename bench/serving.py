"""Serving benchmark (issue 8 item 9), in one run, each figure against a baseline run the same way.

1. **Cached reads.** ``GET /v1/predictions/{account_id}`` of ``fleetml serve`` against a bare
   FastAPI endpoint (bench/_bare_app.py) started the same way (uvicorn[standard], factory, one
   worker), both loaded by ``wrk`` (Debian's package) with the same threads, connections and
   duration, alternating twice. Goal: fleetml >= 0.5x the bare requests/s.
2. **On-demand scoring.** ``POST /v1/predictions/{account_id}/score`` (no samples, and one posted
   sample) against the bare endpoint's POST, sequential requests on one keep-alive connection;
   goal: fleetml p50 <= 8x the bare p50.
3. **One tick over ``--accounts`` accounts** with one new sample each (anomaly plus three risk
   horizons, predictions written, alerts evaluated) in a fresh worker process, after its first
   tick filled the window; goal <= 2 s wall and peak RSS of that process <= 2 GB.

Models come from the product's own path: a simulated fleet is stored, ``fleetml train anomaly``
and ``fleetml train risk`` train and promote the champions. The large fleet copies the
simulated accounts' recent history (as far back as the live window reads for the trained
models' features) and the slices around the seasonal lags under new ids.

    PYTHONPATH=. python bench/serving.py [--accounts 10000] [--duration 10]

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETML_")}
    env.update(
        FLEETML_HOME=str(home),
        MLFLOW_DISABLE_TELEMETRY="true",
        PYTHONPATH=str(REPO),
        OMP_NUM_THREADS="1",
    )
    return env


def cli(home: Path, *args: str, timeout: float = 900) -> dict:
    """Run ``fleetml ARGS`` and return its last JSON line."""
    out = subprocess.run(
        [sys.executable, "-m", "fleetml.cli", *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if out.returncode != 0:
        raise SystemExit(f"fleetml {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1]) if lines else {"stdout": out.stdout}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cmd: list[str], env: dict, url: str) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"server {cmd} did not start")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)


def wrk(url: str, key: str | None, *, duration: int, connections: int, threads: int) -> dict:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if key:
        cmd += ["-H", f"Authorization: Bearer {key}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 60)
    rps = errors = 0.0
    p50 = None
    for line in out.stdout.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(parts[1])
        if line.strip().startswith("50%"):
            p50 = parts[1]
        if "Non-2xx" in line:
            errors = float(parts[-1])
    return {"rps": rps, "p50": p50, "non_2xx": errors}


def post_latency(url: str, key: str | None, body: bytes | None, n: int) -> dict:
    import httpx

    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    times = []
    with httpx.Client(timeout=30) as client:
        for i in range(n + 20):
            t0 = time.perf_counter()
            resp = client.post(url, content=body or b"", headers=headers)
            dt = time.perf_counter() - t0
            if resp.status_code != 200:
                raise SystemExit(f"POST {url} answered {resp.status_code}: {resp.text[:500]}")
            if i >= 20:
                times.append(dt * 1000)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p95_ms": round(times[int(0.95 * len(times))], 3),
        "n": n,
    }


# ------------------------------------------------------------------------------- preparation


def prepare_models(home: Path) -> dict:
    sim = cli(
        home,
        "simulate",
        "--masters",
        "6",
        "--servants",
        "2",
        "--days",
        "6",
        "--step",
        "5m",
        "--seed",
        "11",
        "--out",
        str(home / "sim"),
        "--into-home",
    )
    anomaly = cli(home, "train", "anomaly", "--promote")
    risk = cli(home, "train", "risk", "--promote")
    return {
        "sim_accounts": sim.get("accounts"),
        "anomaly_version": anomaly.get("version"),
        "risk_version": risk.get("version"),
    }


def build_large_fleet(home: Path, n_accounts: int) -> int:
    """Store ``n_accounts`` copies of the simulated accounts' recent history (as far back as the
    live window reads) and seasonal slices;
    returns the new sample time (ms) that the timed tick will score."""
    import numpy as np
    import pandas as pd

    from fleetml.config import get_settings
    from fleetml.features import FeatureConfig
    from fleetml.ingest.files import import_accounts_frame, import_metrics_frame
    from fleetml.serving.window import seasonal_lags_ms, tail_reach_ms
    from fleetml.store.engine import get_engine
    from fleetml.store.metrics import read_metrics, time_range

    settings = get_settings(home)
    engine = get_engine(settings)
    end = time_range(engine)[1]
    # as much history as the live window keeps for the models trained above (with the default
    # features; a settings file such as examples/features/risk-trends.json reads further back)
    reach = max(tail_reach_ms(FeatureConfig()), 24 * 3_600_000)
    pieces = [read_metrics(engine, start=end - pd.Timedelta(milliseconds=reach), end=end)]
    for lag in seasonal_lags_ms(FeatureConfig()):
        at = end - pd.Timedelta(milliseconds=lag)
        pieces.append(
            read_metrics(engine, start=at - pd.Timedelta("10min"), end=at + pd.Timedelta("10min"))
        )
    src = pd.concat(pieces, ignore_index=True).drop_duplicates(["account_id", "ts"])
    src_ids = sorted(src["account_id"].unique())
    by_src = {a: g.reset_index(drop=True) for a, g in src.groupby("account_id")}
    rng = np.random.default_rng(0)
    accounts = pd.DataFrame(
        {
            "account_id": [f"big-{i:05d}" for i in range(n_accounts)],
            "role": "master",
            "group": [f"bg-{i // 4:04d}" for i in range(n_accounts)],
        }
    )
    with engine.begin() as conn:
        import_accounts_frame(conn, accounts, actor="bench")
    chunk = 500
    for lo in range(0, n_accounts, chunk):
        parts = []
        for i in range(lo, min(lo + chunk, n_accounts)):
            part = by_src[src_ids[i % len(src_ids)]].copy()
            part["account_id"] = f"big-{i:05d}"
            cols = [c for c in part.columns if c not in ("ts", "account_id")]
            part[cols] = part[cols] * rng.uniform(0.9, 1.1)
            parts.append(part)
        with engine.begin() as conn:
            import_metrics_frame(
                conn,
                pd.concat(parts, ignore_index=True),
                register=False,
                actor="bench",
                max_future_s=10**12,
            )
    engine.dispose()
    return int(end.value // 1_000_000)


def tick_worker(home: Path, end_ms: int, n_accounts: int) -> None:
    """Child process: first tick (fills the window), one new sample per account, timed tick."""
    import numpy as np
    import pandas as pd

    from fleetml.config import get_settings
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.services.tick import LiveLoop
    from fleetml.store.engine import get_engine
    from fleetml.store.metrics import read_metrics

    settings = get_settings(home)
    engine = get_engine(settings)
    loop = LiveLoop(engine, settings)
    t0 = time.perf_counter()
    first = loop.run(now_ms=end_ms)
    fill_s = time.perf_counter() - t0
    recent = read_metrics(engine, start=pd.Timestamp(end_ms - 3_600_000, unit="ms", tz="UTC"))
    recent = recent[recent["account_id"].str.startswith("big-")]
    last = recent.sort_values("ts").groupby("account_id", sort=False).tail(1).copy()
    last["ts"] = pd.Timestamp(end_ms + 300_000, unit="ms", tz="UTC")  # one new sample each
    cols = [c for c in last.columns if c not in ("ts", "account_id")]
    last[cols] = last[cols] * np.random.default_rng(1).uniform(0.95, 1.05, (len(last), 1))
    with engine.begin() as conn:
        import_metrics_frame(conn, last, register=False, actor="bench", max_future_s=10**12)
    t0 = time.perf_counter()
    timed = loop.run(now_ms=end_ms + 300_000)
    wall = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "first_tick_s": round(fill_s, 2),
                "first_tick": {k: first[k] for k in ("accounts", "scored", "window_rows")},
                "tick_wall_s": round(wall, 3),
                "tick": timed,
                "new_samples": len(last),
                "peak_rss_gb": round(
                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3
                ),
            },
            default=str,
        )
    )


def http_parts(args, result: dict, home: Path, env: dict, key: str, account: str) -> None:
    """Parts 1 and 2: cached reads and on-demand scoring against the bare app."""
    bare_port, fleet_port = free_port(), free_port()
    uvicorn_opts = [
        "--factory",
        "--host",
        "127.0.0.1",
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    bare = start_server(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench._bare_app:create_app",
            "--port",
            str(bare_port),
            *uvicorn_opts,
        ],
        env,
        f"http://127.0.0.1:{bare_port}/v1/predictions/x",
    )
    fleet = start_server(
        [sys.executable, "-m", "fleetml.cli", "serve", "--port", str(fleet_port)],
        env,
        f"http://127.0.0.1:{fleet_port}/readyz",
    )
    try:
        bare_get = f"http://127.0.0.1:{bare_port}/v1/predictions/{account}"
        fleet_get = f"http://127.0.0.1:{fleet_port}/v1/predictions/{account}"
        kw = {
            "duration": args.duration,
            "connections": args.connections,
            "threads": args.threads,
        }
        runs = {"bare": [], "fleetml": []}
        wrk(bare_get, None, duration=2, connections=4, threads=1)  # warm-up
        wrk(fleet_get, key, duration=2, connections=4, threads=1)
        for _ in range(2):
            runs["bare"].append(wrk(bare_get, None, **kw))
            runs["fleetml"].append(wrk(fleet_get, key, **kw))
        bare_rps = statistics.mean(r["rps"] for r in runs["bare"])
        fleet_rps = statistics.mean(r["rps"] for r in runs["fleetml"])
        result["cached_get"] = {
            "bare_rps": round(bare_rps),
            "fleetml_rps": round(fleet_rps),
            "ratio": round(fleet_rps / bare_rps, 3),
            "goal": ">= 0.5",
            "runs": runs,
        }
        sample = json.dumps(
            {
                "samples": [
                    {
                        "account_id": account,
                        "ts": int(time.time()) - 30,
                        "values": {"cpu_pct": 55.0, "mem_mb": 900.0},
                    }
                ]
            }
        ).encode()
        bare_post = post_latency(
            f"http://127.0.0.1:{bare_port}/v1/predictions/{account}/score",
            None,
            None,
            args.posts,
        )
        fleet_post = post_latency(
            f"http://127.0.0.1:{fleet_port}/v1/predictions/{account}/score",
            key,
            None,
            args.posts,
        )
        fleet_post_sample = post_latency(
            f"http://127.0.0.1:{fleet_port}/v1/predictions/{account}/score",
            key,
            sample,
            args.posts,
        )
        result["score_on_demand"] = {
            "bare": bare_post,
            "fleetml": fleet_post,
            "fleetml_with_sample": fleet_post_sample,
            "ratio_p50": round(fleet_post["p50_ms"] / bare_post["p50_ms"], 2),
            "ratio_p50_with_sample": round(fleet_post_sample["p50_ms"] / bare_post["p50_ms"], 2),
            "goal": "<= 8",
        }
    finally:
        stop(bare)
        stop(fleet)


# ------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--duration", type=int, default=10, help="wrk seconds per run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--posts", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    parser.add_argument("--skip-http", action="store_true", help="only the tick part")
    parser.add_argument("--skip-tick", action="store_true", help="only the HTTP parts")
    parser.add_argument(
        "--tick-worker", nargs=3, metavar=("HOME", "END_MS", "N"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.tick_worker:
        tick_worker(Path(args.tick_worker[0]), int(args.tick_worker[1]), int(args.tick_worker[2]))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (apt-get install wrk)")
    home = Path(tempfile.mkdtemp(prefix="fleetml-bench-serving-"))
    result: dict = {"load_average": os.getloadavg()[0]}
    try:
        t0 = time.perf_counter()
        result["models"] = prepare_models(home)
        # the simulated fleet's clock is not the wall clock: tick as of its newest sample
        from fleetml.config import get_settings
        from fleetml.store.engine import get_engine
        from fleetml.store.metrics import time_range

        newest = time_range(get_engine(get_settings(home)))[1]
        result["tick_small"] = cli(home, "tick", "--now", newest.isoformat())
        if not result["tick_small"].get("scored"):
            raise SystemExit(f"the small tick scored nothing: {result['tick_small']}")
        out = cli(home, "keys", "create", "--role", "runtime", "--name", "bench")
        key = out.get("stdout", "").strip().splitlines()[-1] if "stdout" in out else None
        if not key:
            raise SystemExit("could not create a runtime key")
        account = "m000"
        result["prepare_s"] = round(time.perf_counter() - t0, 1)

        env = _env(home)
        if not args.skip_http:
            http_parts(args, result, home, env, key, account)
        if args.skip_tick:
            return
        t0 = time.perf_counter()
        end_ms = build_large_fleet(home, args.accounts)
        result["large_fleet_build_s"] = round(time.perf_counter() - t0, 1)
        child = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--tick-worker",
                str(home),
                str(end_ms),
                str(args.accounts),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if child.returncode != 0:
            raise SystemExit(f"tick worker failed:\n{child.stderr[-3000:]}")
        tick = json.loads(child.stdout.strip().splitlines()[-1])
        tick["goal"] = "<= 2 s wall, <= 2 GB peak"
        result["tick_large"] = tick
        result["load_average_end"] = os.getloadavg()[0]
    finally:
        print(json.dumps(result, default=str))
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            result["home"] = str(home)


if __name__ == "__main__":
    main()
