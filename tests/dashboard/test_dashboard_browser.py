"""The dashboard in a real browser (headless chromium through Playwright): every page loads on a
simulated fleet without console errors and shows its data; an ops user acknowledges an alert and
accepts a recommendation through the UI and the API shows the change; a runtime key is refused;
the fleet page fits a phone. Screenshots of every page are saved (see ``SHOTS``)."""

from __future__ import annotations

import pytest

from fleetml.dashboard import PAGES
from tests.dashboard.conftest import UI_TIMEOUT_MS, login, shot

pytestmark = pytest.mark.slow

#: What each page must show once its data loaded (a selector and a text in it).
EXPECT = {
    "fleet": ("#fleet-table tbody tr", "acc-1"),
    "alerts": ("#alerts-table tbody tr", "model_degraded"),
    "actions": ("#approval-queue tbody tr", "failover"),
    "recommendations": ("article.card", "add 2 servants"),
    "weights": ("#weights-table tbody tr", "m1"),
    "forecasts": ("h1", "Load forecasts"),
    "models": ("article.card", "anomaly"),
    "account": ("#charts h3", "msgs_sent"),
}


@pytest.mark.parametrize("name", [p for p in PAGES if p != "login"])
def test_every_page_loads_without_console_errors(page, fleet, name):
    login(page, fleet, "ops")
    url = f"{fleet.url}/ui/{name}" + ("?id=acc-1" if name == "account" else "")
    page.goto(url)
    selector, text = EXPECT[name]
    page.locator(selector, has_text=text).first.wait_for(timeout=UI_TIMEOUT_MS)
    if name == "account":  # the risk history is charted, each horizon against its threshold
        page.locator("#risk-chart .u-legend", has_text="threshold 1h").wait_for()
    if name == "forecasts":  # a past forecast against what happened, and the error over time
        page.locator("#overlay-chart .u-legend", has_text="actual").wait_for()
        page.locator("#error-chart .u-legend", has_text="sMAPE").wait_for()
    page.wait_for_load_state("networkidle")
    shot(page, name)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"{name} is {overflow}px wider than the window"
    assert page.locator("#notice").is_hidden(), page.locator("#notice").inner_text()
    assert page.problems == [], page.problems


def test_login_page_and_a_runtime_key_is_refused(page, fleet):
    page.goto(f"{fleet.url}/ui/fleet")
    page.wait_for_url("**/ui/login")  # no key: sent to log in
    shot(page, "login")
    page.fill("#key", fleet.keys["runtime"])
    page.click("button[type=submit]")
    refused = page.locator(".login .error")
    refused.wait_for()
    assert "Runtime keys cannot log in" in refused.inner_text()
    assert page.url.endswith("/ui/login")
    page.fill("#key", "fml_not-a-key")
    page.click("button[type=submit]")
    page.locator(".login .error", has_text="not valid").wait_for()
    assert page.problems == [] or all("401" in p for p in page.problems), page.problems


def test_ops_acknowledges_an_alert_and_the_api_shows_it(page, fleet):
    alerts = fleet.api("GET", "/v1/alerts", params={"state": "firing"}).json()["alerts"]
    target = alerts[0]
    login(page, fleet, "ops")
    page.goto(f"{fleet.url}/ui/alerts")
    row = page.locator(f"tr[data-alert='{target['id']}']")
    row.wait_for()
    page.fill("input[placeholder^='why']", "looking at it")
    row.locator("button.ack").click()
    row.locator("td", has_text="acknowledged").wait_for()
    after = fleet.api("GET", f"/v1/alerts/{target['id']}").json()
    assert after["state"] == "acknowledged"
    assert after["acknowledged_by"] == "test-ops"  # the logged-in key's name
    assert page.problems == [], page.problems


def test_ops_marks_a_false_alarm_and_the_models_page_counts_it(page, fleet):
    alerts = fleet.api("GET", "/v1/alerts", params={"state": "open"}).json()["alerts"]
    target = alerts[-1]
    login(page, fleet, "ops")
    page.goto(f"{fleet.url}/ui/alerts")
    row = page.locator(f"tr[data-alert='{target['id']}']")
    row.locator("button.false-alarm").click()
    page.wait_for_load_state("networkidle")
    kinds = {k["kind"]: k for k in fleet.api("GET", "/v1/alerts/precision").json()["kinds"]}
    assert kinds[target["kind"]]["false_alarm"] == 1
    page.goto(f"{fleet.url}/ui/models")
    cell = page.locator("#alert-precision tr", has_text=target["kind"])
    cell.wait_for()
    assert "0 %" in cell.inner_text()  # one judged, a false alarm
    assert page.problems == [], page.problems


def test_ops_accepts_a_recommendation_with_a_comment_and_the_api_shows_it(page, fleet):
    recs = fleet.api("GET", "/v1/recommendations", params={"state": "open"}).json()
    target = next(r for r in recs["recommendations"] if r["setting"] is None)
    login(page, fleet, "ops")
    page.goto(f"{fleet.url}/ui/recommendations")
    card = page.locator(f"article[data-recommendation='{target['id']}']")
    card.wait_for()
    card.locator("input[placeholder='comment']").fill("ordered two numbers")
    card.locator("button.accept").click()
    card.wait_for(state="detached")  # it left the open list
    after = fleet.api("GET", "/v1/recommendations", params={"state": "accepted"}).json()
    mine = next(r for r in after["recommendations"] if r["id"] == target["id"])
    assert (mine["decided_by"], mine["comment"]) == ("test-ops", "ordered two numbers")
    assert page.problems == [], page.problems


def test_only_admin_sees_the_policy_form(page, fleet):
    login(page, fleet, "ops")
    page.goto(f"{fleet.url}/ui/weights")
    page.locator("#weights-table tbody tr").first.wait_for()
    page.wait_for_load_state("networkidle")  # the role is known: hidden is not "not yet drawn"
    assert page.locator("form button", has_text="save policy").is_hidden()
    page.click("header button")  # log out
    login(page, fleet, "admin")
    page.goto(f"{fleet.url}/ui/weights")
    page.locator("#weights-table tbody tr").first.wait_for()
    # drawn once the session's role has loaded, which may come after the table (CI saw it late)
    save = page.locator("form button", has_text="save policy")
    save.wait_for(state="visible", timeout=UI_TIMEOUT_MS)
    assert save.is_visible()
    assert page.problems == [], page.problems


def test_the_fleet_page_fits_a_phone(browser, fleet):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    context.set_default_timeout(UI_TIMEOUT_MS)
    tab = context.new_page()
    try:
        login(tab, fleet, "ops")
        tab.locator("#fleet-table tbody tr", has_text="acc-1").first.wait_for()
        overflow = tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the page is {overflow}px wider than the phone"
        shot(tab, "fleet-phone")
    finally:
        context.close()


@pytest.fixture
def drifting_champions(fleet, monkeypatch):
    """Both families have a champion (v7) trained on the store's first three hours, with the
    default feature configuration: the server (a thread of this process) computes their drift
    for real over the fleet's samples; the clock reads the newest sample."""
    from fleetml.api.routers import models as models_router
    from fleetml.features import FeatureConfig, planned_columns
    from fleetml.services import clock, recommend
    from fleetml.services import drift as drift_service
    from fleetml.store.metrics import metric_kinds, time_range

    first, last = (int(t.value // 1_000_000) for t in time_range(fleet.engine))
    train = {"version": 7, "start_ms": first, "end_ms": first + 3 * 3_600_000}
    columns = planned_columns(sorted(metric_kinds(fleet.engine)), FeatureConfig(), peers=True)

    def champion(settings, family):
        return drift_service.Champion(
            family, 7, columns, FeatureConfig(), {}, train["start_ms"], train["end_ms"]
        )

    version = {"version": 7, "run_id": None, "created_at": None, "trained_at": None, "metrics": {}}
    view = {
        "families": {
            "anomaly": {"champion": version, "challenger": None},
            "risk": {"champion": version, "challenger": None},
            "forecast": {"champion": None, "challenger": None},
        },
        "available": True,
        "detail": None,
    }
    monkeypatch.setattr(models_router, "_registry_view", lambda settings: view)
    monkeypatch.setattr(drift_service, "load_champion", champion)
    monkeypatch.setattr(recommend, "champion_window", lambda settings, family: train)
    monkeypatch.setattr(clock, "fleet_now", lambda engine, settings, wall_ms=None: last)
    models_router.forget_registry_view()
    drift_service.forget_cache()
    yield
    models_router.forget_registry_view()
    drift_service.forget_cache()


def test_the_models_page_shows_drift_per_feature(page, browser, fleet, drifting_champions):
    api = fleet.api("GET", "/v1/models/risk/drift", role="ops").json()
    assert len(api["features"]) > 10 and api["feature_window"]["skipped"] is None
    login(page, fleet, "ops")
    page.goto(f"{fleet.url}/ui/models")
    risk = page.locator(".drift[data-family='risk']")
    rows = risk.locator("table.feature-drift tbody tr")
    rows.first.wait_for(timeout=UI_TIMEOUT_MS)
    assert rows.count() == 10  # the top ten, most drifted first
    shown = rows.locator("td:first-child").all_inner_texts()
    assert shown == [r["feature"] for r in api["features"][:10]]
    psis = [float(x) for x in rows.locator("td:nth-child(2)").all_inner_texts() if x != "–"]
    assert psis == sorted(psis, reverse=True)
    risk.locator("button.show-all").click()
    assert rows.count() == len(api["features"])
    colours = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll(
            ".drift[data-family='risk'] tr[data-level] .level")].map(
            (e) => [e.textContent, getComputedStyle(e).color]))"""
    )
    assert len(set(colours.values())) == len(colours) >= 2, colours  # one colour per level
    page.select_option("#drift-hours", "6")
    page.locator(".drift[data-family='risk'] p", has_text="last 6 h").wait_for()
    page.wait_for_load_state("networkidle")
    shot(page, "models-drift")
    assert page.problems == [], page.problems

    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.set_default_timeout(UI_TIMEOUT_MS)
    tab = phone.new_page()
    try:
        login(tab, fleet, "ops")
        tab.goto(f"{fleet.url}/ui/models")
        tab.locator(".drift[data-family='anomaly'] table.feature-drift tbody tr").first.wait_for()
        overflow = tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 1, f"the models page is {overflow}px wider than the phone"
        shot(tab, "models-phone")
    finally:
        phone.close()
