"""Benchmark HTTP batch ingest against the raw SQLite ceiling, on the same rows.

Starts ``fleetml serve`` as a subprocess on a fresh SQLite home, posts pre-serialised batches
(default 1,000 samples of 8 metrics each) from a few concurrent httpx clients, then inserts the
same rows with a raw ``sqlite3.executemany`` into a fresh store of the same table layout (same
pragmas: WAL, synchronous=FULL) and prints both rates and their ratio.

    PYTHONPATH=. python bench/ingest.py                 # 200,000 samples, 4 clients
    PYTHONPATH=. python bench/ingest.py --samples 500000 --clients 8 --sync NORMAL

The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

METRICS = [
    "cpu_pct",
    "mem_mb",
    "queue_depth",
    "rtt_ms",
    "messages_sent_total",
    "messages_failed_total",
    "reconnects_total",
    "battery_pct",
]
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def make_batches(n_samples: int, batch: int, n_accounts: int, n_metrics: int) -> list[list[dict]]:
    """Samples as a runtime sends them: every account reports each second, values vary."""
    names = METRICS[:n_metrics] + [f"extra_{i}" for i in range(max(0, n_metrics - len(METRICS)))]
    samples = []
    for i in range(n_samples):
        second, acct = divmod(i, n_accounts)
        samples.append(
            {
                "account_id": f"wa-{acct:05d}",
                "ts": T0 + second,
                "values": {
                    name: round((i * (j + 3)) % 997 * 0.1, 1) for j, name in enumerate(names)
                },
            }
        )
    return [samples[i : i + batch] for i in range(0, n_samples, batch)]


def prepare_home(home: Path, n_accounts: int, sync: str) -> tuple[str, dict[str, int]]:
    """Migrate a fresh store, register the accounts, create a runtime key."""
    from fleetml.config import Settings
    from fleetml.store.accounts import register_unknown
    from fleetml.store.engine import dispose_engines, get_engine
    from fleetml.store.keys import create_key
    from fleetml.store.migrate import upgrade

    settings = Settings(home=home, sqlite_synchronous=sync)
    settings.ensure_home()
    engine = get_engine(settings)
    upgrade(engine)
    with engine.begin() as conn:
        key, _ = create_key(conn, role="runtime", name="bench", actor="bench")
        pks = register_unknown(
            conn, [f"wa-{i:05d}" for i in range(n_accounts)], actor="bench", source="bench"
        )
    dispose_engines()
    return key, pks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, port: int, sync: str, workers: int) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "FLEETML_HOME": str(home),
        "FLEETML_SQLITE_SYNCHRONOUS": sync,
    }
    cmd = [sys.executable, "-m", "fleetml.cli", "serve", "--port", str(port)]
    cmd += ["--workers", str(workers), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"fleetml serve exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("fleetml serve did not become ready within 60 s")


async def post_all(url: str, key: str, bodies: list[bytes], clients: int) -> list[float]:
    """Post every body with ``clients`` concurrent connections; return per-request latencies."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
            while not queue.empty():
                body = queue.get_nowait()
                start = time.perf_counter()
                resp = await http.post("/v1/metrics", content=body)
                latencies.append(time.perf_counter() - start)
                if resp.status_code != 200:
                    raise SystemExit(f"ingest failed: {resp.status_code} {resp.text[:500]}")

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def raw_ceiling(home: Path, rows_by_batch: list[list[tuple]], sync: str) -> dict[str, float]:
    """Raw sqlite3.executemany of the same rows into the same table layout (fresh stores)."""
    results = {}
    for mode in ("one_transaction", "commit_per_batch"):
        sub = home / f"raw_{mode}"
        prepare_home(sub, 0, sync)  # same migrations, hence the same table layout
        con = sqlite3.connect(sub / "fleetml.db", isolation_level=None)
        for pragma in ("journal_mode=WAL", f"synchronous={sync}", "cache_size=-65536"):
            con.execute(f"PRAGMA {pragma}")
        sql = "INSERT INTO samples (account_pk, ts, vals) VALUES (?, ?, ?)"
        n = sum(len(rows) for rows in rows_by_batch)
        start = time.perf_counter()
        if mode == "one_transaction":
            con.execute("BEGIN")
            for rows in rows_by_batch:
                con.executemany(sql, rows)
            con.execute("COMMIT")
        else:
            for rows in rows_by_batch:
                con.execute("BEGIN")
                con.executemany(sql, rows)
                con.execute("COMMIT")
        results[mode] = n / (time.perf_counter() - start)
        con.close()
    return results


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its children (uvicorn workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:  # ppid
                pids.append(int(entry.name))
    for p in pids:
        try:
            fields = (Path("/proc") / str(p) / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def _prom_value(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def count_rows(home: Path) -> int:
    con = sqlite3.connect(home / "fleetml.db")
    try:
        return con.execute("SELECT count(*) FROM samples").fetchone()[0]
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--metrics", type=int, default=8)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--sync", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary home.")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="fleetml-bench-"))
    home = tmp / "http"
    key, pks = prepare_home(home, args.accounts, args.sync)
    batches = make_batches(args.samples, args.batch, args.accounts, args.metrics)
    warmup = make_batches(2 * args.batch, args.batch, args.accounts, args.metrics)
    for b in warmup:  # a disjoint time range, so warm-up rows do not overlap the measured ones
        for s in b:
            s["ts"] -= 10 * 86_400
    bodies = [orjson.dumps({"samples": b}) for b in batches]
    rows_by_batch = [
        [(pks[s["account_id"]], s["ts"] * 1000, orjson.dumps(s["values"]).decode()) for s in b]
        for b in batches
    ]

    port = free_port()
    proc = start_server(home, port, args.sync, args.workers)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(post_all(url, key, [orjson.dumps({"samples": b}) for b in warmup], 1))
        exposition_before = httpx.get(f"{url}/metrics", timeout=10).text
        cpu_before = cpu_seconds(proc.pid)
        start = time.perf_counter()
        latencies = asyncio.run(post_all(url, key, bodies, args.clients))
        elapsed = time.perf_counter() - start
        server_cpu = cpu_seconds(proc.pid) - cpu_before
        exposition = httpx.get(f"{url}/metrics", timeout=10).text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    stored = count_rows(home) - 2 * args.batch
    if stored != args.samples:
        raise SystemExit(f"expected {args.samples} stored rows, found {stored}")
    http_rate = args.samples / elapsed

    def delta(name: str) -> float:
        return _prom_value(exposition, name) - _prom_value(exposition_before, name)

    group = delta("fleetml_ingest_committed_batches_total") / max(
        1.0, delta("fleetml_ingest_commits_total")
    )
    raw = raw_ceiling(tmp, rows_by_batch, args.sync)
    latencies.sort()
    result = {
        "samples": args.samples,
        "batch": args.batch,
        "metrics_per_sample": args.metrics,
        "clients": args.clients,
        "workers": args.workers,
        "sqlite_synchronous": args.sync,
        "body_bytes_per_batch": round(sum(map(len, bodies)) / len(bodies)),
        "http_samples_per_s": round(http_rate),
        "http_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "http_p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
        "mean_batches_per_commit": round(group, 2),
        "server_cpu_s": round(server_cpu, 2),
        "server_samples_per_cpu_s": round(args.samples / server_cpu) if server_cpu else None,
        "raw_ceiling_rows_per_s": round(raw["one_transaction"]),
        "raw_commit_per_batch_rows_per_s": round(raw["commit_per_batch"]),
        "ratio_http_to_ceiling": round(http_rate / raw["one_transaction"], 3),
        "ratio_http_to_raw_commit_per_batch": round(http_rate / raw["commit_per_batch"], 3),
        "load_average_1m": os.getloadavg()[0],
    }
    print(
        f"HTTP ingest     : {http_rate:>10,.0f} samples/s  ({args.clients} clients, "
        f"batches of {args.batch}, {args.metrics} metrics; p50 {result['http_p50_ms']} ms, "
        f"p99 {result['http_p99_ms']} ms)"
    )
    print(
        f"server CPU      : {server_cpu:>10.2f} s  "
        f"({result['server_samples_per_cpu_s']:,} samples per CPU-second of the server; "
        f"{group:.2f} batches per commit)"
    )
    print(
        f"raw ceiling     : {raw['one_transaction']:>10,.0f} rows/s  "
        "(sqlite3.executemany, one transaction)"
    )
    print(
        f"raw per batch   : {raw['commit_per_batch']:>10,.0f} rows/s  "
        "(sqlite3.executemany, one commit per batch)"
    )
    print(
        f"ratio HTTP/ceiling {result['ratio_http_to_ceiling']:.3f}, "
        f"HTTP/raw-per-batch {result['ratio_http_to_raw_commit_per_batch']:.3f}"
    )
    print(json.dumps(result))
    if not args.keep:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
