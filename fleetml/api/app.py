"""The application factory.

``create_app(settings)`` builds the app over one store; ``uvicorn --factory
fleetml.api.app:create_app`` (what ``fleetml serve`` runs) builds it from the environment.
Migrations are not run here: ``fleetml serve`` upgrades before starting, and ``/readyz`` answers
503 while the schema is behind.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from fleetml.api.auth import KeyCache
from fleetml.api.deps import ApiState
from fleetml.api.docs import install_docs
from fleetml.api.errors import install_error_handlers
from fleetml.api.guard import RequestGuard, check_path_params
from fleetml.api.openapi import openapi_builder
from fleetml.api.prometheus import ApiMetrics, PrometheusMiddleware, WriterCollector
from fleetml.config import Settings, get_settings
from fleetml.dashboard import install_dashboard
from fleetml.ingest.batch import BatchIngestor
from fleetml.serving.cache import PredictionCache
from fleetml.serving.models import ModelSet
from fleetml.serving.ondemand import OnDemandScorer
from fleetml.serving.routing import RouteTable

#: Router modules under ``fleetml.api.routers``, one per resource, each with ``router``.
ROUTERS = (
    # predictions first: the runtime's hot path, matched before every other route
    "predictions",
    "routing",  # POST /v1/route: the runtime asks it before every send, so matched early too
    "health",
    "metrics",
    "events",
    "accounts",
    "alerts",
    "keys",
    "audit",
    "forecasts",
    "models",
    "jobs",
    # decisions: routing weights, actions, recommendations, the decision record, group policies
    "weights",
    "actions",
    "recommendations",
    "decisions",
    "policies",
)


def create_app(settings: Settings | None = None, *, engine=None) -> FastAPI:
    """Build the API over the store of ``settings`` (default: from the environment)."""
    import importlib

    from fleetml.store.engine import get_engine

    settings = settings or get_settings()
    engine = engine or get_engine(settings)
    api_metrics = ApiMetrics()
    ingestor = BatchIngestor(
        engine,
        max_batch=settings.max_batch_samples,
        max_future_skew_s=settings.max_future_skew_s,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        models.start_watch()  # loads the champions now, then checks the registry periodically
        scheduler = None
        if os.environ.get("FLEETML_SERVE_WORKER") == "1":  # fleetml serve --worker
            from fleetml.scheduler.worker import start_embedded_worker

            scheduler = start_embedded_worker(settings, engine)
        yield
        if scheduler is not None:
            scheduler.stop()  # finish the running job, release the leader lock
        models.stop_watch()
        ingestor.close()  # commit what is queued, then stop the writer thread

    api_metrics.registry.register(WriterCollector(ingestor.writer))
    models = ModelSet(settings)

    app = FastAPI(
        lifespan=lifespan,
        dependencies=[Depends(check_path_params)],
        title="fleetml",
        version="0.1.0",
        docs_url=None,  # install_docs serves /docs and /redoc without a CDN
        redoc_url=None,
        description="Predictive operations for fleets of messaging-bot accounts. Every /v1 call "
        "needs 'Authorization: Bearer KEY' (roles: runtime, ops, admin).",
    )
    app.state.fleetml = ApiState(
        settings=settings,
        engine=engine,
        keys=KeyCache(settings.api_key_cache_s),
        metrics=api_metrics,
        ingestor=ingestor,
        models=models,
        predictions=PredictionCache(engine, stale_after_s=settings.stale_after_s),
        ondemand=OnDemandScorer(engine, models, max_rows=settings.score_max_rows),
        routes=RouteTable(engine, refresh_s=settings.route_refresh_s),
    )
    install_error_handlers(app)
    install_docs(app)
    install_dashboard(app)
    # Routers carry their own /v1 prefix so every route's path is its full template (what the
    # Prometheus labels and the 403 messages show), however FastAPI nests included routers.
    for name in ROUTERS:
        app.include_router(importlib.import_module(f"fleetml.api.routers.{name}").router)
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        max_inflight_body_bytes=settings.max_inflight_body_bytes,
    )
    app.add_middleware(PrometheusMiddleware, metrics=api_metrics)  # outermost: counts 413s too
    app.openapi = openapi_builder(app)
    return app
