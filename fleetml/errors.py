"""Errors a user can act on.

The API maps them to HTTP answers, the CLI to messages and exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass


class FleetmlError(Exception):
    """Base class for errors fleetml raises on purpose."""


class NotFound(FleetmlError):
    """The named thing does not exist (HTTP 404)."""


class Conflict(FleetmlError):
    """The request contradicts the stored state (HTTP 409)."""


@dataclass(frozen=True)
class ItemError:
    """One bad item of a batch: its index (row number for files), the field and the reason."""

    index: int
    field: str
    reason: str

    def as_dict(self) -> dict:
        return {"index": self.index, "field": self.field, "reason": self.reason}


class InvalidBatch(FleetmlError):
    """A batch was rejected whole; ``errors`` lists every bad item (HTTP 422)."""

    def __init__(self, message: str, errors: list[ItemError]):
        super().__init__(message)
        self.message = message
        self.errors = errors

    def as_dict(self, limit: int | None = None) -> dict:
        errors = self.errors if limit is None else self.errors[:limit]
        return {
            "detail": self.message,
            "error_count": len(self.errors),
            "errors": [e.as_dict() for e in errors],
        }


class InvalidInput(FleetmlError):
    """A single request or argument is invalid (HTTP 422 / CLI usage error).

    ``field`` names the offending input where there is one (``query.from``, ``body.group``).
    """

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field
