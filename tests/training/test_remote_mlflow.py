"""Training registers and serving loads through a remote MLflow tracking server, not only the
embedded SQLite store: MLflow 3 logs models as LoggedModels, and a server accepts one as a
version's source only with its model id (the local store is lenient)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    if shutil.which("mlflow") is None:
        pytest.skip("the mlflow command is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
            "--artifacts-destination", str(tmp_path / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_version_registers_promotes_and_loads_through_a_tracking_server(
    mlflow_server, tmp_path, monkeypatch
):
    from fleetml.config import Settings
    from fleetml.models.forecast import ForecastBundle
    from fleetml.serving import registry as serving_registry
    from fleetml.training import registry
    from fleetml.training.forecast_cli import log_to_mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    settings = Settings(home=tmp_path / "home", mlflow_tracking_uri=mlflow_server)
    registry.clear_cache()
    _, version, _ = log_to_mlflow(
        settings,
        bundle=ForecastBundle({}, metric_kinds={"cpu": "gauge"}),
        params={"horizon": "24h"},
        metrics={"smape": 10.0, "mase": 0.8, "n_scored": 1},
        choices={},
        summaries={},
        promote=True,
    )
    assert version == 1
    assert serving_registry.get_champion_version("fleetml-forecast", settings=settings) == 1
    info = serving_registry.version_info("fleetml-forecast", 1, settings=settings)
    assert info["run_id"] and "champion" in info["aliases"]
    bundle = serving_registry.load_bundle("fleetml-forecast", version=1, settings=settings)
    assert bundle.metric_kinds == {"cpu": "gauge"}  # downloaded from the server's artifacts
    assert not (tmp_path / "home" / "mlflow.db").exists()  # nothing fell back to the local store
