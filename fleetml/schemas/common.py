"""Shapes shared by every endpoint: the error answer and the text and JSON the store can hold."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, Field

from fleetml.vocab import ACCOUNT_ID_RE, NAME_MAX, TEXT_MAX, json_problem, text_problem


def _text(value: str) -> str:
    reason = text_problem(value)
    if reason is not None:
        raise ValueError(reason)
    return value


def _json_object(value: dict[str, Any]) -> dict[str, Any]:
    problem = json_problem(value)
    if problem is not None:
        path, reason = problem
        raise ValueError(f"{path}: {reason}" if path else reason)
    return value


#: A name people give (a group, a key): 1-128 characters, no NUL, valid Unicode.
Name = Annotated[str, Field(min_length=1, max_length=NAME_MAX), AfterValidator(_text)]
#: Free text (a note, a comment): at most 2,000 characters, no NUL, valid Unicode.
Text = Annotated[str, Field(max_length=TEXT_MAX), AfterValidator(_text)]
#: An account id: 1-128 of letters, digits and ``_ . : @ + -``.
AccountId = Annotated[str, Field(min_length=1, max_length=128, pattern=ACCOUNT_ID_RE.pattern)]
#: A JSON object stored as it came: finite numbers, text as :data:`Text` (any length), <= 32 deep.
JsonObject = Annotated[dict[str, Any], AfterValidator(_json_object)]


class ErrorItem(BaseModel):
    """One bad item: its position in the batch (null for request-level problems), field, reason."""

    index: int | None = Field(default=None, examples=[3])
    field: str = Field(examples=["values.cpu_pct"])
    reason: str = Field(examples=["NaN is not a finite number"])


class ErrorResponse(BaseModel):
    """Every 4xx/5xx answer: a sentence saying what went wrong and, for batches, every bad item."""

    detail: str
    error_count: int | None = None
    errors: list[ErrorItem] = Field(default_factory=list)
