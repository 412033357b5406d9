"""/docs and /redoc work with no internet: the pages and every asset they load come from the app."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest


class _Links(HTMLParser):
    """Every src and href attribute of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs) -> None:
        self.urls.extend(value for name, value in attrs if name in ("src", "href") and value)


def _links(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize(
    ("page", "bundle"),
    [("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")],
)
def test_docs_page_and_its_assets_load_from_the_app(sqlite_api, page, bundle):
    client = sqlite_api.client
    resp = client.get(page)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    urls = _links(resp.text)
    assert any(u.endswith(bundle) for u in urls), urls
    own_host = urlsplit(str(client.base_url)).netloc
    for url in urls:
        parts = urlsplit(url)
        # Relative to the app, or (were it absolute) the app's own host: never a CDN.
        assert parts.scheme in ("", "http", "https") and parts.netloc in ("", own_host), url
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1_000, url
    assert "cdn." not in resp.text and "fonts.googleapis" not in resp.text


def test_swagger_ui_loads_this_apps_openapi_and_calls_no_validator(sqlite_api):
    html = sqlite_api.client.get("/docs").text
    assert "url: '/openapi.json'" in html
    assert '"validatorUrl": null' in html


def test_docs_follow_the_root_path_behind_a_proxy(sqlite_settings):
    from fastapi.testclient import TestClient

    from fleetml.api import create_app

    with TestClient(create_app(sqlite_settings), root_path="/fleet") as client:
        urls = _links(client.get("/docs").text)
    assert urls and all(u.startswith("/fleet/") for u in urls), urls


def test_a_missing_asset_is_a_404_in_the_error_shape(sqlite_api):
    resp = sqlite_api.client.get("/docs-assets/nope.js")
    assert resp.status_code == 404
    assert resp.json() == {"detail": "Not Found", "errors": []}
