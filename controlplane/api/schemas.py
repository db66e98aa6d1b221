"""Shapes every endpoint shares."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ErrorDetail(BaseModel):
    field: str = Field(description="The field at fault, e.g. `verdicts[3].score`.")
    message: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer: what was wrong and what to do."""

    error: str = Field(description="A stable code, e.g. `invalid_input`, `conflict`.")
    message: str
    details: list[ErrorDetail] = Field(default_factory=list)
