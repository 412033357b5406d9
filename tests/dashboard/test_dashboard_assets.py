"""The dashboard loads nothing from elsewhere: every script and stylesheet is served by fleetml
from files inside the package, each vendored library has its licence beside it, and the refresh
script pins the versions that are committed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fleetml.dashboard import HERE, PAGES, render

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("page", sorted(PAGES))
def test_pages_reference_only_local_assets(page):
    html = render(page)
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs, "the page references its assets"
    for ref in refs:
        assert not re.match(r"^(https?:)?//", ref), f"{page} loads {ref} from elsewhere"
        if ref.startswith("/ui/static/"):
            assert (HERE / "static" / ref.removeprefix("/ui/static/")).is_file(), ref


def test_vendored_libraries_have_licences_and_pinned_versions():
    vendor = HERE / "static" / "vendor"
    versions = json.loads((vendor / "versions.json").read_text())
    script = (REPO / "scripts" / "refresh-dashboard-assets.sh").read_text()
    assert f'ALPINE="${{ALPINE:-{versions["alpinejs"]}}}"' in script
    assert f'UPLOT="${{UPLOT:-{versions["uplot"]}}}"' in script
    for licence in ("alpine.LICENSE", "uPlot.LICENSE"):
        assert "MIT License" in (vendor / licence).read_text()
    # the file is that version
    assert versions["alpinejs"] in (vendor / "alpine.min.js").read_text()


def test_the_pages_are_served_and_unknown_ones_are_404(sqlite_settings):
    from fastapi.testclient import TestClient

    from fleetml.api import create_app

    with TestClient(create_app(sqlite_settings)) as client:
        root = client.get("/ui", follow_redirects=False)
        assert root.headers["location"] == "/ui/fleet"
        page = client.get("/ui/alerts")
        assert page.status_code == 200 and 'x-data="alerts"' in page.text
        assert client.get("/ui/static/vendor/uPlot.iife.min.js").status_code == 200
        missing = client.get("/ui/nope")
        assert missing.status_code == 404 and "pages:" in missing.json()["detail"]
