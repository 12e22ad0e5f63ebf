"""The error texts and problem+json parsing: what a caller (or a model) reads when things fail."""

from __future__ import annotations

import json

import pytest

from flux_tools import (
    AuthenticationError,
    ContentModerated,
    FluxAPIError,
    Prediction,
    PredictionFailed,
    RateLimitError,
)
from flux_tools._base.errors import api_error, redact, retry_after_seconds

TOKEN = "r8_Secret0123456789"


def problem(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_problem_json_with_invalid_fields() -> None:
    body = problem(
        title="Input validation failed",
        detail="- input.steps: Must be less than or equal to 50",
        status=422,
        invalid_fields=[{"type": "number_lte", "field": "input.steps", "description": "<= 50"}],
    )
    error = api_error(422, body, {"content-type": "application/problem+json"})
    assert type(error) is FluxAPIError
    assert (error.status, error.title) == (422, "Input validation failed")
    assert error.invalid_fields[0]["field"] == "input.steps"
    assert "input.steps" in str(error) and "HTTP 422" in str(error)


def test_retry_after_from_the_header_or_the_body() -> None:
    body = problem(detail="Request was throttled.", status=429, retry_after=5)
    assert api_error(429, body, {}).retry_after == 5  # body only
    assert api_error(429, body, {"retry-after": "2"}).retry_after == 2  # the header first
    assert isinstance(api_error(429, body, {}), RateLimitError)
    assert retry_after_seconds("Wed, 21 Oct 2026 07:28:00 GMT", None) is None  # dates: our backoff
    assert retry_after_seconds(None, "1.5") == 1.5


def test_authentication_error_says_where_the_token_goes() -> None:
    error = api_error(401, problem(detail="You did not pass a valid authentication token"), {})
    assert isinstance(error, AuthenticationError)
    assert "FLUX_API_TOKEN" in str(error) and "env block" in str(error)


@pytest.mark.parametrize(
    "body",
    [
        problem(detail=f"bad token {TOKEN}", title=f"Bearer {TOKEN}"),
        f"<html>forbidden for Bearer {TOKEN}</html>".encode(),
        problem(invalid_fields=[{"field": TOKEN, "description": f"echo {TOKEN}"}]),
    ],
)
def test_a_token_echoed_by_the_server_is_redacted(body: bytes) -> None:
    error = api_error(403, body, {}, secrets=[TOKEN])
    assert TOKEN not in str(error) and TOKEN not in repr(error)
    assert TOKEN not in str(error.detail) and TOKEN not in str(error.title)
    assert "[redacted]" in str(error)


def test_non_json_errors_keep_a_short_detail() -> None:
    error = api_error(502, b"<html>" + b"x" * 5000 + b"</html>", {})
    assert error.status == 502 and error.detail is not None and len(error.detail) <= 300


def test_redact_ignores_empty_and_tiny_secrets() -> None:
    assert redact("abc", [None, "", "ab"]) == "abc"
    assert redact(f"x {TOKEN} y {TOKEN}", [TOKEN]) == "x [redacted] y [redacted]"


MODERATED = "The input or output was flagged as sensitive. (E005)"


@pytest.mark.parametrize(
    ("status", "error", "kind", "says"),
    [
        ("failed", MODERATED, ContentModerated, "Change the prompt"),
        ("failed", "CUDA out of memory", PredictionFailed, "CUDA out of memory"),
        ("aborted", None, PredictionFailed, "not billed"),
        ("canceled", None, PredictionFailed, "canceled"),
    ],
)  # fmt: skip
def test_prediction_failures_name_the_cause(
    status: str, error: str | None, kind: type[PredictionFailed], says: str
) -> None:
    prediction = Prediction(id="p1", status=status, error=error)
    failure = PredictionFailed.from_prediction(prediction)
    assert type(failure) is kind
    assert says in str(failure) and failure.prediction_id == "p1"
