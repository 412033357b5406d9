"""The ops dashboard at ``/ui``: pages that read and act through the JSON API.

The pages are static HTML (one layout, one body per page) with Alpine.js components in
``static/app.js`` and uPlot charts, both vendored under ``static/vendor`` (see
``scripts/refresh-dashboard-assets.sh``): nothing loads from a CDN. Logging in checks the key with
``GET /v1/whoami`` and keeps it in the tab's ``sessionStorage``; every call then goes through the
API with that key, so the API's role checks are the dashboard's: a runtime key cannot log in,
ops review and act, admin also changes group policies.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from fleetml.errors import NotFound

HERE = Path(__file__).parent

#: Page name -> (title shown in the navigation, or None for pages outside it).
PAGES: dict[str, str | None] = {
    "fleet": "Fleet",
    "alerts": "Alerts",
    "actions": "Failovers",
    "recommendations": "Recommendations",
    "weights": "Weights",
    "forecasts": "Forecasts",
    "models": "Models",
    "account": None,
    "login": None,
}

router = APIRouter(include_in_schema=False)


@cache
def render(page: str) -> str:
    """The page's HTML: the shared layout around ``pages/<page>.html``."""
    layout = (HERE / "layout.html").read_text()
    body = (HERE / "pages" / f"{page}.html").read_text()
    nav = "\n".join(
        f'<a href="/ui/{name}" data-page="{name}">{title}</a>'
        for name, title in PAGES.items()
        if title is not None
    )
    title = PAGES[page] or page.title()
    return (
        layout.replace("{{title}}", title)
        .replace("{{page}}", page)
        .replace("{{nav}}", nav)
        .replace("{{body}}", body)
    )


@router.get("/ui")
def ui_root() -> RedirectResponse:
    return RedirectResponse("/ui/fleet")


@router.get("/ui/{page}", response_class=HTMLResponse)
def ui_page(page: str) -> HTMLResponse:
    if page not in PAGES:
        raise NotFound(f"no dashboard page {page!r}; pages: {', '.join(PAGES)}")
    return HTMLResponse(render(page), headers={"Cache-Control": "no-cache"})


def install_dashboard(app: FastAPI) -> None:
    """Serve the pages at ``/ui/<page>`` and their assets at ``/ui/static``."""
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="ui-static")
    app.include_router(router)
