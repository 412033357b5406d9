"""``POST /v1/route`` benchmark: how much server work one routing answer costs.

Goal: well under a millisecond of server work per answer. Three figures, each over the same
store (``--groups`` groups of ``--accounts`` accounts, weights written as a tick would, default
algorithm ``p2c_ewma``), every request reporting the outcome of the previous pick:

1. **The route table alone**: ``RouteTable.route`` timed with ``time.perf_counter`` around
   each call, median and p99 over ``--calls`` calls (the handler's own work: feed the report
   to the balancer, pick).
2. **The server in process**: the whole ASGI app (``create_app``: auth, middleware, body
   validation, the route table, orjson) called directly, no socket, against a bare FastAPI
   endpoint doing the minimum (read the body, parse it with orjson, answer fixed bytes) called
   the same way in the same process; p50/p99 of each and the ratio. This is server time
   without client or network noise.
3. **Over HTTP** (skip with ``--skip-http``): ``fleetml serve`` and the bare app, each started
   the same way (uvicorn[standard], one worker), sequential POSTs on one keep-alive connection
   (httpx); p50/p99 round trips and the ratio.

    PYTHONPATH=. python bench/route.py [--groups 100] [--accounts 20] [--calls 10000]

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GOAL_MS = 1.0
_BARE_ANSWER = (
    b'{"account_id":"acc-0001","group":"grp-0000","algorithm":"p2c_ewma","weight":10.0,'
    b'"hold":false,"reason":null,"reports_ignored":0}'
)


def create_bare_app() -> FastAPI:
    """The baseline: FastAPI, one POST /v1/route that parses the body and answers fixed bytes."""
    app = FastAPI()

    @app.post("/v1/route")
    async def route(request: Request) -> Response:
        orjson.loads(await request.body())
        return Response(_BARE_ANSWER, media_type="application/json")

    @app.get("/readyz")
    async def ready() -> Response:
        return Response(b"{}", media_type="application/json")

    return app


def quantiles(times_s: list[float]) -> dict:
    ms = sorted(t * 1000 for t in times_s)
    return {
        "p50_ms": round(statistics.median(ms), 4),
        "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 4),
        "n": len(ms),
    }


# ------------------------------------------------------------------------------- the store


def prepare(home: Path, *, groups: int, accounts: int) -> tuple[str, list[str]]:
    """Store the fleet and one tick's weights; returns a runtime key and the group names."""
    import numpy as np
    import pandas as pd

    from fleetml.config import get_settings
    from fleetml.ingest.files import import_accounts_frame
    from fleetml.store.engine import get_engine
    from fleetml.store.keys import create_key
    from fleetml.store.migrate import upgrade
    from fleetml.store.weights import write_weights

    engine = get_engine(get_settings(home))
    upgrade(engine)
    names = [f"grp-{g:04d}" for g in range(groups)]
    ids = [f"acc-{g:04d}-{a:03d}" for g in range(groups) for a in range(accounts)]
    group_of = np.repeat(names, accounts)
    rng = np.random.default_rng(0)
    weight = rng.uniform(5.0, 20.0, len(ids))
    with engine.begin() as conn:
        import_accounts_frame(
            conn,
            pd.DataFrame(
                {"account_id": ids, "role": "master", "group": group_of, "capacity": 20.0}
            ),
            actor="bench",
        )
        write_weights(
            conn,
            pd.DataFrame(
                {
                    "account_id": ids,
                    "group": group_of,
                    "weight": weight,
                    "target": weight,
                    "reasons": [[] for _ in ids],
                }
            ),
            ts_ms=int(time.time() * 1000),
            models={},
        )
        key, _ = create_key(conn, role="runtime", name="bench", actor="bench")
    return key, names


# ------------------------------------------------------------------------------- part 1


def table_alone(home: Path, names: list[str], calls: int) -> dict:
    from fleetml.config import get_settings
    from fleetml.serving.routing import RouteTable
    from fleetml.store.engine import get_engine

    table = RouteTable(get_engine(get_settings(home)), refresh_s=3600)
    t0 = time.perf_counter()
    table.refresh(force=True)
    load_s = time.perf_counter() - t0
    times = []
    previous: dict[str, str] = {}
    perf = time.perf_counter
    for i in range(calls + 1000):
        group = names[i % len(names)]
        last = previous.get(group)
        report = [(last, 120.0, True)] if last else ()
        t0 = perf()
        answer = table.route(group, report)
        dt = perf() - t0
        previous[group] = answer["account_id"]
        if i >= 1000:  # warm-up
            times.append(dt)
    out = quantiles(times)
    out["median_us"] = round(statistics.median(times) * 1e6, 2)
    out["load_s"] = round(load_s, 3)
    return out


# ------------------------------------------------------------------------------- part 2


class _AsgiCaller:
    """Call an ASGI app with one POST, no socket: the server's own time per request."""

    def __init__(self, app, headers: list[tuple[bytes, bytes]]):
        self.app = app
        self.headers = headers

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        status, chunks = 0, []
        sent = False

        async def receive():
            nonlocal sent
            if sent:
                await asyncio.sleep(3600)  # a disconnect never comes within a request
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [*self.headers, (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }
        await self.app(scope, receive, send)
        return status, b"".join(chunks)


async def _timed_posts(caller: _AsgiCaller, names: list[str], calls: int) -> list[float]:
    previous: dict[str, str] = {}
    times = []
    perf = time.perf_counter
    for i in range(calls + 500):
        group = names[i % len(names)]
        last = previous.get(group)
        report = [{"account_id": last, "latency_ms": 120.0, "ok": True}] if last else []
        body = orjson.dumps({"group": group, "report": report})
        t0 = perf()
        status, answer = await caller.post("/v1/route", body)
        dt = perf() - t0
        if status != 200:
            raise SystemExit(f"POST /v1/route answered {status}: {answer[:300]!r}")
        previous[group] = orjson.loads(answer)["account_id"]
        if i >= 500:
            times.append(dt)
    return times


def in_process(home: Path, key: str, names: list[str], calls: int) -> dict:
    from fleetml.api import create_app
    from fleetml.config import get_settings

    json_headers = [(b"content-type", b"application/json"), (b"host", b"bench")]
    fleet = _AsgiCaller(
        create_app(get_settings(home)),
        [*json_headers, (b"authorization", f"Bearer {key}".encode())],
    )
    bare = _AsgiCaller(create_bare_app(), json_headers)

    async def run() -> dict:
        out: dict = {"bare": [], "fleetml": []}
        for _ in range(2):  # alternate, so drift of the machine hits both alike
            out["bare"] += await _timed_posts(bare, names, calls // 2)
            out["fleetml"] += await _timed_posts(fleet, names, calls // 2)
        return out

    times = asyncio.run(run())
    result = {name: quantiles(t) for name, t in times.items()}
    result["ratio_p50"] = round(result["fleetml"]["p50_ms"] / result["bare"]["p50_ms"], 2)
    result["ratio_p99"] = round(result["fleetml"]["p99_ms"] / result["bare"]["p99_ms"], 2)
    result["fleetml_extra_p50_ms"] = round(
        result["fleetml"]["p50_ms"] - result["bare"]["p50_ms"], 4
    )
    return result


# ------------------------------------------------------------------------------- part 3


def over_http(home: Path, key: str, names: list[str], posts: int) -> dict:
    import httpx

    from bench.serving import _env, free_port, start_server, stop

    env = _env(home)
    bare_port, fleet_port = free_port(), free_port()
    opts = ["--factory", "--host", "127.0.0.1", "--log-level", "warning", "--no-access-log"]
    bare = start_server(
        [sys.executable, "-m", "uvicorn", "bench.route:create_bare_app", "--port",
         str(bare_port), *opts],
        env,
        f"http://127.0.0.1:{bare_port}/readyz",
    )  # fmt: skip
    fleet = start_server(
        [sys.executable, "-m", "fleetml.cli", "serve", "--port", str(fleet_port),
         "--log-level", "warning"],
        env,
        f"http://127.0.0.1:{fleet_port}/readyz",
    )  # fmt: skip

    def run(port: int, auth: str | None) -> list[float]:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {auth}"
        previous: dict[str, str] = {}
        times = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for i in range(posts + 100):
                group = names[i % len(names)]
                last = previous.get(group)
                report = [{"account_id": last, "latency_ms": 120.0}] if last else []
                body = orjson.dumps({"group": group, "report": report})
                t0 = time.perf_counter()
                resp = client.post("/v1/route", content=body, headers=headers)
                dt = time.perf_counter() - t0
                if resp.status_code != 200:
                    raise SystemExit(f"POST /v1/route answered {resp.status_code}: {resp.text}")
                previous[group] = resp.json()["account_id"]
                if i >= 100:
                    times.append(dt)
        return times

    try:
        times: dict = {"bare": [], "fleetml": []}
        for _ in range(2):
            times["bare"] += run(bare_port, None)
            times["fleetml"] += run(fleet_port, key)
    finally:
        stop(bare)
        stop(fleet)
    result = {name: quantiles(t) for name, t in times.items()}
    result["ratio_p50"] = round(result["fleetml"]["p50_ms"] / result["bare"]["p50_ms"], 2)
    result["ratio_p99"] = round(result["fleetml"]["p99_ms"] / result["bare"]["p99_ms"], 2)
    return result


# ------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=100)
    parser.add_argument("--accounts", type=int, default=20, help="accounts per group")
    parser.add_argument("--calls", type=int, default=10_000, help="timed calls of parts 1, 2")
    parser.add_argument("--posts", type=int, default=2_000, help="HTTP requests per run")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="fleetml-bench-route-"))
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("FLEETML_")}
    os.environ["FLEETML_HOME"] = str(home)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    result: dict = {
        "groups": args.groups,
        "accounts_per_group": args.accounts,
        "load_average": round(os.getloadavg()[0], 2),
        "goal": f"server work per answer well under {GOAL_MS} ms",
    }
    try:
        key, names = prepare(home, groups=args.groups, accounts=args.accounts)
        result["route_table"] = table_alone(home, names, args.calls)
        result["asgi_in_process"] = in_process(home, key, names, args.calls)
        if not args.skip_http:
            result["http"] = over_http(home, key, names, args.posts)
        server_p50 = result["asgi_in_process"]["fleetml"]["p50_ms"]
        result["met"] = server_p50 < GOAL_MS
        _print_table(result)
    finally:
        print(json.dumps(result, default=str))
        from fleetml.store.engine import dispose_engines

        dispose_engines()
        os.environ.pop("FLEETML_HOME", None)
        os.environ.update(saved)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
    return result


def _print_table(result: dict) -> None:
    table = result["route_table"]
    print(
        f"RouteTable.route alone: median {table['median_us']} us, p99 {table['p99_ms']} ms "
        f"({table['n']} calls; table load {table['load_s']} s)"
    )
    for part in ("asgi_in_process", "http"):
        if part not in result:
            continue
        r = result[part]
        print(
            f"{part:16s} bare p50 {r['bare']['p50_ms']:.3f} ms p99 {r['bare']['p99_ms']:.3f} | "
            f"fleetml p50 {r['fleetml']['p50_ms']:.3f} ms p99 {r['fleetml']['p99_ms']:.3f} | "
            f"ratio p50 {r['ratio_p50']} p99 {r['ratio_p99']}"
        )


if __name__ == "__main__":
    main()
