"""Shared checks of the API's contract: generated requests never answer 5xx (schemathesis, from
/openapi.json), and the role matrix of a set of operations."""

from __future__ import annotations

from collections.abc import Callable

ALL = ("runtime", "ops", "admin")


def fuzz(app, auth: dict, select: Callable, *, max_examples: int = 25, modes=None, conform=True):
    """Call every operation ``select(operation)`` accepts with generated cases.

    Returns ``(checked, calls, failures)``: the operations, every status answered, and the
    failures: a 5xx always; with ``conform`` also an answer the OpenAPI document does not
    describe (an undocumented status, a body off its schema, a wrong content type). Failures are
    collected, not raised, so one run reports them all.
    """
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error]
    if conform:
        checks += [status_code_conformance, response_schema_conformance, content_type_conformance]
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checked, failures, calls = [], [], []
    for result in schema.get_all_operations():
        operation = result.ok()
        if not select(operation):
            continue
        checked.append(f"{operation.method.upper()} {operation.path}")
        if modes:
            strategy = st.one_of(*(operation.as_strategy(m) for m in modes))
        else:
            strategy = operation.as_strategy()

        @given(case=strategy)
        @settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def run(case):
            response = case.call(headers=auth)
            calls.append(response.status_code)
            try:
                case.validate_response(response, checks=checks, headers=auth)
            except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collected, reported
                failures.append((case.method, case.formatted_path, case.query, str(case.body)[:200],
                                 response.status_code, response.text[:300],
                                 str(exc).splitlines()[0][:200]))  # fmt: skip

        run()
    return checked, calls, failures


def check_roles(api, method: str, path: str, body, allowed) -> None:
    """401 without a key, 403 (naming the role) for a role not in ``allowed``, anything but
    401/403 and below 500 for one in it."""
    kw = {"json": body} if body is not None else {}
    anonymous = api.request(method, path, as_=None, **kw)
    assert anonymous.status_code == 401, anonymous.text
    for role in ALL:
        resp = api.request(method, path, as_=role, **kw)
        if role in allowed:
            assert resp.status_code not in (401, 403), (role, resp.status_code, resp.text)
            assert resp.status_code < 500, (role, resp.text)
        else:
            assert resp.status_code == 403, (role, resp.status_code, resp.text)
            assert role in resp.json()["detail"]
