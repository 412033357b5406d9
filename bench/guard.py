"""What the request guard costs the ingest hot path: the same app with and without it.

Builds two APIs over two fresh SQLite homes in one process, one exactly as ``create_app`` makes
it and one with the request guard (size, in-flight budget, content type, NUL and surrogate scan)
taken out of the middleware stack, then posts the same pre-serialised batches to each in
alternation through the ASGI transport (no sockets) and compares the median time per request.

    PYTHONPATH=. python bench/guard.py                      # 200 batches of 1,000 samples
    PYTHONPATH=. python bench/guard.py --batch 100000 --batches 10

The last line of output is one JSON object with every figure; ``ratio`` is guarded / bare
(1.0 means the guard is free).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

METRICS = ["cpu_pct", "mem_mb", "queue_depth", "rtt_ms", "sent_total", "failed_total"]
T0 = 1_767_225_600


def _body(batch: int, size: int) -> bytes:
    samples = [
        {
            "account_id": f"wa-{i % 200:04d}",
            "ts": T0 + batch * size + i,
            "values": {m: (i * 7 + j) % 1000 / 10 for j, m in enumerate(METRICS)},
        }
        for i in range(size)
    ]
    return orjson.dumps({"samples": samples})


def _app(home: str, guarded: bool):
    from fleetml.api import create_app
    from fleetml.api.guard import RequestGuard
    from fleetml.config import Settings
    from fleetml.store.engine import get_engine
    from fleetml.store.keys import create_key
    from fleetml.store.migrate import upgrade

    settings = Settings(home=home)
    engine = get_engine(settings)
    upgrade(engine)
    with engine.begin() as conn:
        key, _ = create_key(conn, role="runtime", name="bench", actor="bench")
    app = create_app(settings)
    if not guarded:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not RequestGuard]
    return app, key


async def _run(args) -> dict:
    apps = {
        name: _app(tempfile.mkdtemp(prefix=f"fleetml-guard-{name}-"), name == "guarded")
        for name in ("guarded", "bare")
    }
    bodies = [_body(b, args.batch) for b in range(args.batches)]
    times: dict[str, list[float]] = {name: [] for name in apps}
    clients = {}
    for name, (app, key) in apps.items():
        transport = httpx.ASGITransport(app=app)
        clients[name] = httpx.AsyncClient(
            transport=transport,
            base_url="http://bench",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=120,
        )
    try:
        for i, body in enumerate(bodies):
            order = ("guarded", "bare") if i % 2 == 0 else ("bare", "guarded")
            for name in order:
                t0 = time.perf_counter()
                resp = await clients[name].post("/v1/metrics?register=true", content=body)
                elapsed = time.perf_counter() - t0
                if resp.status_code != 200:
                    raise SystemExit(f"{name}: HTTP {resp.status_code}: {resp.text[:300]}")
                if i >= args.warmup:
                    times[name].append(elapsed)
    finally:
        for client in clients.values():
            await client.aclose()
    med = {name: statistics.median(t) for name, t in times.items()}
    return {
        "batch_samples": args.batch,
        "batches_timed": len(times["bare"]),
        "body_bytes": len(bodies[0]),
        "median_ms_guarded": round(med["guarded"] * 1000, 3),
        "median_ms_bare": round(med["bare"] * 1000, 3),
        "ratio": round(med["guarded"] / med["bare"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000, help="samples per request")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    result = asyncio.run(_run(args))
    print(
        f"{result['batch_samples']} samples ({result['body_bytes']} bytes) a request: "
        f"{result['median_ms_guarded']} ms with the guard, {result['median_ms_bare']} ms "
        f"without (x{result['ratio']})"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
