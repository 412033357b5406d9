"""The bare FastAPI baseline of bench/serving.py: the same routes, no fleetml work.

Started exactly like ``fleetml serve`` (uvicorn[standard], factory, one worker), so the ratio
measures fleetml's own cost per request.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

_BODY = orjson.dumps(
    {
        "account_id": "acc",
        "group": "g",
        "computed_at": "2026-01-01T00:00:00Z",
        "data_until": "2026-01-01T00:00:00Z",
        "stale": False,
        "anomaly": {"score": 0.1, "is_anomaly": False, "top_metrics": [], "model_version": 1},
        "risk": [
            {"horizon": h, "risk": 0.01, "at_risk": False, "model_version": 1}
            for h in ("1h", "6h", "24h")
        ],
        "fallback": False,
        "models": {"anomaly": 1, "risk": 1},
    }
)


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/predictions/{account_id}")
    async def prediction(account_id: str) -> Response:
        return Response(_BODY, media_type="application/json")

    @app.post("/v1/predictions/{account_id}/score")
    async def score(account_id: str, request: Request) -> Response:
        await request.body()
        return Response(_BODY, media_type="application/json")

    return app
