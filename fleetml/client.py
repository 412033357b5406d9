"""A small synchronous Python client for the fleetml HTTP API.

>>> from fleetml.client import Client
>>> with Client("http://127.0.0.1:8000", api_key) as fleet:           # doctest: +SKIP
...     fleet.ingest([{"account_id": "wa-1", "ts": 1767225600, "values": {"cpu_pct": 12.5}}],
...                  register=True)
...     at_risk = fleet.predictions(at_risk=True)

Every 4xx/5xx answer raises :class:`FleetmlError` with the server's ``detail`` and the list of
bad items (``errors``). Reads that page (``predictions``, ``alerts``, ``jobs``) follow
``next_cursor`` and return one list. GET requests are retried a couple of times when the
connection fails or drops (a server restarting); writes are never retried, so a failed write
surfaces at once (ingest is idempotent: sending the batch again is safe).

It needs only httpx and imports nothing of fleetml beyond ``fleetml.errors``, so using it does
not load the ML stack.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import httpx

from fleetml import __version__
from fleetml.errors import FleetmlError as _FleetmlErrorBase

#: Connection failures after which a GET is sent again: nothing was answered yet, and a GET
#: changes nothing. Read timeouts are not among them (a slow query would run three times).
_RETRYABLE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.RemoteProtocolError)


class FleetmlError(_FleetmlErrorBase):
    """The API answered 4xx or 5xx.

    Attributes
    ----------
    status : int
        The HTTP status (401 missing or bad key, 403 role, 404 unknown, 422 invalid, 503 retry).
    detail : str
        The server's sentence saying what was wrong and what to do.
    errors : list of dict
        For batches, every bad item as ``{"index", "field", "reason"}``; often empty.
    """

    def __init__(self, status: int, detail: str, errors: list[dict] | None = None):
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail
        self.errors = list(errors or [])


def _encode(value: Any) -> Any:
    """JSON for what the stdlib encoder refuses: datetimes and numpy scalars."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    raise TypeError(f"cannot send {type(value).__name__} as JSON: {value!r}")


def _error_from(response: httpx.Response) -> FleetmlError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return FleetmlError(response.status_code, body["detail"], body.get("errors") or [])
    text = response.text.strip()[:500] or response.reason_phrase
    return FleetmlError(response.status_code, text)


def _query(**params: Any) -> dict[str, Any]:
    """Query parameters without the unset ones; booleans as ``true``/``false``."""
    out = {}
    for name, value in params.items():
        if value is None:
            continue
        out[name] = ("true" if value else "false") if isinstance(value, bool) else value
    return out


class Client:
    """The fleetml API over HTTP, authenticated with one API key.

    Parameters
    ----------
    base_url : str
        Where the API answers, e.g. ``http://127.0.0.1:8000`` (a path prefix is kept).
    api_key : str
        Sent as ``Authorization: Bearer KEY``; create one with ``fleetml keys create``.
    timeout : float
        Seconds to wait for a connection and for each read.
    transport : httpx.BaseTransport, optional
        For tests (``httpx.MockTransport``) or custom networking.
    retries : int
        How many times a GET is sent again after a connection failure.
    page_size : int
        The ``limit`` asked per page when a total ``limit`` is given to a paged read.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        retries: int = 2,
        page_size: int = 500,
    ) -> None:
        self.retries = retries
        self.page_size = page_size
        self._http = httpx.Client(
            base_url=base_url,
            timeout=timeout,
            transport=transport,
            headers={
                "Authorization": f"Bearer {api_key}",
                "User-Agent": f"fleetml-client/{__version__}",
                "Accept": "application/json",
            },
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- transport -------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """Send one request; the decoded JSON answer (None for an empty one), or raise."""
        content = None
        headers = {}
        if body is not None:
            # NaN goes out as NaN, which the server refuses per sample, rather than silently
            # becoming null ("not observed").
            content = json.dumps(body, default=_encode).encode()
            headers["Content-Type"] = "application/json"
        attempts = 1 + (self.retries if method == "GET" else 0)
        for attempt in range(attempts):
            try:
                response = self._http.request(
                    method, path, params=params, content=content, headers=headers
                )
                break
            except _RETRYABLE:
                if attempt + 1 == attempts:
                    raise
                time.sleep(0.25 * 2**attempt)
        if response.status_code >= 400:
            raise _error_from(response)
        if not response.content:
            return None
        return response.json()

    def _pages(
        self, path: str, key: str, params: dict[str, Any], limit: int | None
    ) -> Iterator[dict]:
        """Items under ``key`` of every page, following ``next_cursor``, at most ``limit``."""
        left = limit
        cursor = None
        while left is None or left > 0:
            page_params = dict(params)
            if left is not None:
                page_params["limit"] = min(left, self.page_size)
            if cursor is not None:
                page_params["cursor"] = cursor
            page = self._request("GET", path, params=page_params)
            items = page.get(key, [])
            if left is not None:
                items = items[:left]
                left -= len(items)
            yield from items
            cursor = page.get("next_cursor")
            if not cursor or not items:
                return

    # -- ingest ----------------------------------------------------------------------------

    def ingest(self, samples: list[dict], register: bool = False) -> dict:
        """Store metric samples (POST /v1/metrics), all or nothing.

        Each sample is ``{"account_id", "ts", "values": {metric: number or None}}``; ``ts`` is
        ISO-8601, epoch seconds or a ``datetime``. ``register=True`` registers unknown accounts
        as active masters instead of refusing the batch. Returns the counts stored
        (``samples``, ``rows``, ``values``, ``registered``). Replaying a batch is safe.
        """
        return self._request(
            "POST", "/v1/metrics", params=_query(register=register), body={"samples": samples}
        )

    def events(self, events: list[dict], register: bool = False) -> dict:
        """Store account events (POST /v1/events), all or nothing.

        Each event is ``{"account_id", "ts", "kind", "detail"}`` with ``kind`` one of
        GET /v1/event-kinds and ``detail`` free text, a dict or None. Returns
        ``{"events": stored, "registered": [...]}``.
        """
        return self._request(
            "POST", "/v1/events", params=_query(register=register), body={"events": events}
        )

    # -- predictions and forecasts ---------------------------------------------------------

    def predictions(
        self,
        *,
        group: str | None = None,
        account_ids: list[str] | None = None,
        at_risk: bool | None = None,
        is_anomaly: bool | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """The latest prediction of each account (GET /v1/predictions), every page.

        Filters are combined; ``account_ids`` is sent as repeated ``account_id``. ``limit``
        caps the total returned (default: all).
        """
        params = _query(group=group, at_risk=at_risk, is_anomaly=is_anomaly)
        if account_ids:
            params["account_id"] = list(account_ids)
        return list(self._pages("/v1/predictions", "predictions", params, limit))

    def prediction(self, account_id: str) -> dict:
        """One account's latest prediction (GET /v1/predictions/{account_id})."""
        return self._request("GET", f"/v1/predictions/{_segment(account_id)}")

    def score(self, account_id: str, samples: list[dict] | None = None) -> dict:
        """Score one account now (POST /v1/predictions/{account_id}/score).

        ``samples`` (same shape as :meth:`ingest`) are scored with the stored history without
        being stored; without them the stored history alone is scored.
        """
        return self._request(
            "POST",
            f"/v1/predictions/{_segment(account_id)}/score",
            body={"samples": list(samples or [])},
        )

    def forecasts(
        self,
        metric: str,
        *,
        group: str | None = None,
        account_id: str | None = None,
        horizon: str | int | None = None,
    ) -> dict:
        """The stored forecast of ``metric`` for a group or an account (GET /v1/forecasts)."""
        params = _query(metric=metric, group=group, account_id=account_id, horizon=horizon)
        return self._request("GET", "/v1/forecasts", params=params)

    def models(self) -> dict:
        """The champion (and challenger) of each model family (GET /v1/models)."""
        return self._request("GET", "/v1/models")

    # -- routing and actions (the runtime's side of decisions) -----------------------------

    def weights(self, group: str) -> dict:
        """The balancer weights of ``group`` with their reasons (GET /v1/weights), for a
        runtime that balances locally."""
        return self._request("GET", "/v1/weights", params={"group": group})

    def route(self, group: str, report: list[dict] | None = None) -> dict:
        """Which account of ``group`` takes the next message (POST /v1/route).

        ``report`` tells the balancer how the last sends went: ``{"account_id", "latency_ms",
        "ok"}`` each. An answer with ``hold: true`` means the group's share is held (platform
        enforcement): wait, never send it through another number.
        """
        return self._request("POST", "/v1/route", body={"group": group, "report": report or []})

    def actions(
        self,
        state: str | None = "pending",
        *,
        account_id: str | None = None,
        group: str | None = None,
        limit: int | None = None,
    ) -> list[dict]:
        """Actions for the runtime to carry out, newest first (GET /v1/actions), every page up
        to ``limit``; by default the pending ones (poll this, or take the webhook)."""
        params = _query(state=state, account_id=account_id, group=group)
        return list(self._pages("/v1/actions", "actions", params, limit))

    def ack_action(self, id: int, outcome: str = "ok", detail: str | None = None) -> dict:
        """Report how an action went (POST /v1/actions/{id}/ack): ``outcome`` ``ok`` or
        ``failed`` with a ``detail``. Acknowledging the same way twice is harmless."""
        body = {"outcome": outcome, **_query(detail=detail)}
        return self._request("POST", f"/v1/actions/{int(id)}/ack", body=body)

    # -- alerts, silences, jobs ------------------------------------------------------------

    def alerts(self, state: str | None = None, limit: int | None = None) -> list[dict]:
        """Alerts, optionally in one ``state`` (GET /v1/alerts), every page up to ``limit``."""
        return list(self._pages("/v1/alerts", "alerts", _query(state=state), limit))

    def ack_alert(self, id: int, note: str | None = None) -> dict:
        """Acknowledge an alert (POST /v1/alerts/{id}/ack); it stays open and keeps updating."""
        return self._request("POST", f"/v1/alerts/{int(id)}/ack", body=_query(note=note))

    def resolve_alert(self, id: int, note: str | None = None) -> dict:
        """Resolve an alert by hand (POST /v1/alerts/{id}/resolve)."""
        return self._request("POST", f"/v1/alerts/{int(id)}/resolve", body=_query(note=note))

    def alert_feedback(self, id: int, verdict: str, note: str | None = None) -> dict:
        """Say whether an alert was ``real`` or a ``false_alarm`` (POST /v1/alerts/{id}/feedback);
        the latest word counts in the alert precision per kind."""
        body = {"verdict": verdict, **_query(note=note)}
        return self._request("POST", f"/v1/alerts/{int(id)}/feedback", body=body)

    def silences(self) -> list[dict]:
        """Active silences (GET /v1/silences)."""
        return list(self._pages("/v1/silences", "silences", {}, None))

    def create_silence(self, **fields: Any) -> dict:
        """Create a silence (POST /v1/silences) from its fields.

        For example ``create_silence(group="g1", kind="failure_risk", ends_at=..., comment="x")``:
        matchers left out match anything.
        """
        return self._request("POST", "/v1/silences", body=fields)

    def delete_silence(self, id: int) -> dict | None:
        """End a silence now (DELETE /v1/silences/{id})."""
        return self._request("DELETE", f"/v1/silences/{int(id)}")

    def jobs(self, *, job: str | None = None, limit: int | None = None) -> list[dict]:
        """Scheduler job runs, newest first (GET /v1/jobs), every page up to ``limit``."""
        return list(self._pages("/v1/jobs", "runs", _query(job=job), limit))


def _segment(value: str) -> str:
    """``value`` as one URL path segment, whatever characters an account id holds."""
    return quote(str(value), safe="")
