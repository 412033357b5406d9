"""Browser-test fixtures: a real fleetml server over a seeded store, driven by Playwright with
Debian's chromium (``apt-get install chromium``; ``.ci/run`` installs it). Without a browser the
tests are skipped with the reason, never silently passed."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
#: Screenshots of every page land here (a CI artefact; the ops walkthrough uses them).
SHOTS = Path(os.environ.get("FLEETML_SCREENSHOTS", REPO / "test-artifacts" / "screenshots"))


def _browser_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Fleet:
    """The server's URL, its keys by role, and the store's engine."""

    def __init__(self, url: str, keys: dict[str, str], engine, settings):
        self.url = url
        self.keys = keys
        self.engine = engine
        self.settings = settings

    def api(self, method: str, path: str, role: str = "admin", **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kw)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """fleetml serving a small fleet: three accounts with six hours of samples, one tick
    (predictions, alerts), two groups with a decided fleet (failover awaiting approval, weights,
    recommendations). Runs in a thread of this process with uvicorn."""
    import uvicorn

    from fleetml.api import create_app
    from fleetml.config import Settings
    from fleetml.ingest.files import import_metrics_frame
    from fleetml.services.forecasting import refresh_forecasts
    from fleetml.services.tick import LiveLoop
    from fleetml.store.engine import dispose_engines, get_engine
    from fleetml.store.migrate import upgrade
    from tests.api.conftest import _make_keys
    from tests.api.test_api_decisions import seed
    from tests.serving.conftest import small_fleet

    home = tmp_path_factory.mktemp("ui-home")
    settings = Settings(home=home)
    engine = get_engine(settings)
    upgrade(engine)
    keys = _make_keys(settings)
    frame = small_fleet(n_accounts=3, hours=6)
    with engine.begin() as conn:
        import_metrics_frame(conn, frame, register=True, actor="test")
    now = int(frame["ts"].max().value // 1_000_000)
    LiveLoop(engine, settings).run(now_ms=now)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)
    out = Fleet(url, keys, engine, settings)
    for account, group in (("m1", "eu"), ("m2", "us")):
        body = {"account_id": account, "group": group}
        assert out.api("POST", "/v1/accounts", json=body).status_code == 201
    for account, group in (("acc-0", "eu"), ("acc-1", "eu"), ("acc-2", "us")):
        assert out.api("PATCH", f"/v1/accounts/{account}", json={"group": group}).status_code == 200
    seed(engine)
    for back_min in (150, 120, 0):  # two past hourly jobs whose forecasts came true, and now
        refresh_forecasts(engine, settings, now_ms=now - back_min * 60_000)
    yield out
    server.should_exit = True
    thread.join(timeout=10)
    dispose_engines()


@pytest.fixture(scope="module")
def browser():
    path = _browser_path()
    if path is None:
        pytest.skip("no chromium on this machine: apt-get install chromium (.ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()


#: Waits for the page: generous, because CI runs these beside the rest of the suite on two
#: busy cores (a wait that passes returns as soon as its condition holds).
UI_TIMEOUT_MS = 90_000


@pytest.fixture
def page(browser):
    """A fresh tab that fails the test on any console error or uncaught page error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    tab = context.new_page()
    problems: list[str] = []
    tab.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None,
    )
    tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    tab.problems = problems
    yield tab
    context.close()


def login(page, fleet: Fleet, role: str = "ops") -> None:
    page.goto(f"{fleet.url}/ui/login")
    page.fill("#key", fleet.keys[role])
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/fleet")


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
