"""The HTTP API: :func:`create_app` builds a FastAPI app over the configured store."""

from fleetml.api.app import create_app

__all__ = ["create_app"]
