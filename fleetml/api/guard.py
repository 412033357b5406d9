"""The request guard: what every request must satisfy before any route parses it.

A pure ASGI middleware (no per-request thread, no copy of small bodies), in this order:

1. **Size** (413): a body over ``max_body_bytes`` is refused from its ``Content-Length`` before
   a byte is read, or as soon as a streamed body passes the limit.
2. **Overload** (503 with ``Retry-After``): the bodies held by requests in flight are bounded
   by ``max_inflight_body_bytes``; past it a request is refused at once instead of queueing and
   growing the server's memory without bound.
3. **Content type** (415): a request body must be JSON (``application/json`` or ``*/*+json``).
4. **Text the store can hold** (422, naming the parameter or the body path): no NUL and no lone
   surrogate in a query parameter or any string or key of a JSON body. The body is scanned as
   bytes for the only escapes that produce them (``\\u0000``, ``\\ud800``..``\\udfff``); only a
   hit is parsed to name the field, so ingest pays a byte scan, not a parse.

5. **Nesting** (400): a body nested deeper than :data:`MAX_BODY_DEPTH` levels is refused,
   whatever the interpreter's recursion limit (Python's ``json`` goes as deep as that allows,
   and a library may raise it). The brackets bound the depth in one byte pass; only a body
   they do not clear is parsed to check.

Path parameters are known only once a route matched: :func:`check_path_params` is an
app-wide dependency applying the same rule to them.
"""

from __future__ import annotations

import json
import re
from email.message import Message
from urllib.parse import parse_qsl

import numpy as np
import orjson
from fastapi import Request

from fleetml.errors import InvalidInput
from fleetml.vocab import json_problem, text_problem

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A JSON escape that decodes to NUL or to a surrogate (a pair is legal: the slow path checks).
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
#: Deepest JSON nesting a request body may have (orjson's own limit, which the bulk ingest
#: parser applies; no fleetml route needs more than a few levels).
MAX_BODY_DEPTH = 1024
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = np.zeros(256, dtype=np.int8)
_BRACKET_STEP[list(b"[{")] = 1
_BRACKET_STEP[list(b"]}")] = -1


def error_body(detail: str, errors: list[dict] | None = None) -> bytes:
    """The one error shape, as bytes. ASCII-escaped, so no input can make it unserialisable."""
    return json.dumps({"detail": detail, "errors": errors or []}, ensure_ascii=True).encode()


def _is_json(content_type: str) -> bool:
    message = Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


class RequestGuard:
    def __init__(self, app, *, max_body_bytes: int, max_inflight_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_inflight = max_inflight_body_bytes
        self.inflight = 0  # body bytes held by requests being served (one event loop: no lock)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = self._query_problem(scope)
        if problem is not None:
            await _answer(send, 422, *problem)
            return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", ())}
        declared = headers.get(b"content-length")
        try:
            declared = int(declared) if declared is not None else 0
        except ValueError:
            await _answer(send, 400, "Content-Length is not a number", "header.content-length")
            return
        if declared > self.max_body_bytes:
            await self._too_large(send)
            return
        held = [0]  # this request's share of self.inflight, released when it is answered
        try:
            if await self._hold(held, declared, send):
                await self._with_body(scope, receive, send, headers, held)
        finally:
            self.inflight -= held[0]

    async def _hold(self, held: list[int], n: int, send) -> bool:
        """Count ``n`` more body bytes as held; False (answered 503) past the in-flight limit."""
        if n and self.inflight + n > self.max_inflight:
            await _answer(
                send,
                503,
                "the server is at its limit of request bodies in flight; retry shortly",
                None,
                headers=[(b"retry-after", b"1")],
            )
            return False
        self.inflight += n
        held[0] += n
        return True

    async def _with_body(self, scope, receive, send, headers, held: list[int]) -> None:
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(send)
                return
            if size > held[0] and not await self._hold(held, size - held[0], send):
                return  # a streamed body (no Content-Length) is counted as it arrives
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if body:
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            if not _is_json(content_type):
                shown = content_type or "none"
                await _answer(
                    send,
                    415,
                    f"the request body must be JSON (Content-Type: application/json), got {shown}",
                    "header.content-type",
                )
                return
            too_deep = _too_deep(body)
            if too_deep is not None:
                await _answer(send, 400, too_deep, "body")
                return
            problem = _body_problem(body)
            if problem is not None:
                await _answer(send, 422, *problem)
                return
        sent = False

        async def replay():
            nonlocal sent
            if sent:
                return await receive()  # after the body: wait for a disconnect
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, send) -> None:
        await _answer(
            send,
            413,
            f"the request body is over the limit of {self.max_body_bytes} bytes "
            "(FLEETML_MAX_BODY_BYTES); split the batch",
            "body",
        )

    @staticmethod
    def _query_problem(scope) -> tuple[str, str] | None:
        raw = scope.get("query_string", b"")
        if b"%00" not in raw and b"\x00" not in raw:
            return None  # a lone surrogate cannot come through UTF-8 percent-decoding
        for name, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
            for text in (name, value):
                if "\x00" in text:
                    return _named(f"query.{name.replace(chr(0), '')}", text_problem(text))
        return None


def _named(field: str, reason: str | None) -> tuple[str, str]:
    return f"{field}: {reason}", field


def _too_deep(body: bytes) -> str | None:
    """Why the body is nested too deep, or None. The brackets alone bound the depth from above
    (a bracket inside a string counts too), which costs a byte pass, not a parse: a large ingest
    batch is shallow and is never parsed here; only a body they do not clear is parsed."""
    brackets = body.translate(None, _NOT_BRACKETS)
    if len(brackets) < MAX_BODY_DEPTH:
        return None
    steps = _BRACKET_STEP[np.frombuffer(brackets, dtype=np.uint8)]
    if int(np.cumsum(steps, dtype=np.int32).max()) < MAX_BODY_DEPTH:
        return None
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            return f"request body is nested deeper than {MAX_BODY_DEPTH} levels"
    return None


def _body_problem(body: bytes) -> tuple[str, str] | None:
    if _SUSPECT_ESCAPE.search(body) is None:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: the route says so with its own 400
    problem = json_problem(parsed, max_depth=10_000)
    if problem is None or "nested" in problem[1] or "finite" in problem[1]:
        return None  # a legal surrogate pair or an escaped backslash; numbers are the route's
    path, reason = problem
    field = f"body.{path}" if path else "body"
    return f"{field}: {reason}", field


async def _answer(send, status: int, detail: str, field: str | None, *, headers=()) -> None:
    errors = [] if field is None else [{"index": None, "field": field, "reason": detail}]
    body = error_body(detail, errors)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def check_path_params(request: Request) -> None:
    """App-wide dependency: a path parameter follows the same text rule (422 naming it).
    ``async``: every request resolves it, and a sync dependency costs each one a hop to the
    thread pool (this one, sync, had halved the cached reads' requests per second)."""
    for name, value in request.path_params.items():
        if isinstance(value, str):
            reason = text_problem(value)
            if reason is not None:
                raise InvalidInput(f"path.{name}: {reason}", field=f"path.{name}")
