"""What an API failure means (wait or fail) and what a call costs, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anthropic
import httpx2

from taskd.config import load_settings
from taskd.sdk.llm.failures import Refused, Unavailability, Unavailable, classify
from taskd.sdk.llm.prices import Usage, cost_of, price_of

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def status_error(status: int, error_type: str, headers: dict[str, str] | None = None) -> Exception:
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    body = {"type": "error", "error": {"type": error_type, "message": f"fake {error_type}"}}
    response = httpx2.Response(
        status, json=body, headers={"request-id": "req_1", **(headers or {})}, request=request
    )
    client = anthropic.Anthropic(api_key="x")
    return client._make_status_error(f"{status}", body=body, response=response)


def test_a_429_waits_until_retry_after() -> None:
    verdict = classify(status_error(429, "rate_limit_error", {"retry-after": "30"}), NOW)
    assert isinstance(verdict, Unavailable)
    assert verdict.kind is Unavailability.RATE_LIMITED
    assert verdict.until == NOW + timedelta(seconds=30)
    assert "rate_limit_error" in verdict.message and "req_1" in verdict.message


def test_without_retry_after_the_latest_reset_header_counts() -> None:
    headers = {
        "anthropic-ratelimit-requests-reset": (NOW + timedelta(seconds=5)).isoformat(),
        "anthropic-ratelimit-tokens-reset": (NOW + timedelta(seconds=40)).isoformat(),
        "anthropic-ratelimit-input-tokens-reset": (NOW - timedelta(seconds=5)).isoformat(),
    }
    verdict = classify(status_error(429, "rate_limit_error", headers), NOW)
    assert isinstance(verdict, Unavailable) and verdict.until == NOW + timedelta(seconds=40)


def test_retry_after_as_an_http_date_and_capped_at_a_week() -> None:
    date = "Wed, 02 Dec 2026 12:01:00 GMT"
    verdict = classify(status_error(429, "rate_limit_error", {"retry-after": date}), NOW)
    assert isinstance(verdict, Unavailable) and verdict.until == NOW + timedelta(minutes=1)
    far = classify(status_error(429, "rate_limit_error", {"retry-after": "99999999"}), NOW)
    assert isinstance(far, Unavailable) and far.until == NOW + timedelta(days=7)


def test_overload_server_errors_and_connections_wait_refusals_fail() -> None:
    overloaded = classify(status_error(529, "overloaded_error"), NOW)
    assert isinstance(overloaded, Unavailable)
    assert overloaded.kind is Unavailability.OVERLOADED
    # an overloaded_error event inside a 200 stream carries the status 200
    in_stream = classify(status_error(200, "overloaded_error"), NOW)
    assert isinstance(in_stream, Unavailable)
    assert in_stream.kind is Unavailability.OVERLOADED
    for status, kind in ((500, "api_error"), (503, "api_error"), (408, "timeout_error")):
        verdict = classify(status_error(status, kind), NOW)
        assert isinstance(verdict, Unavailable), status
        assert verdict.kind is Unavailability.SERVER_ERROR
    request = httpx2.Request("POST", "https://api.anthropic.com/v1/messages")
    lost = classify(anthropic.APIConnectionError(request=request), NOW)
    assert isinstance(lost, Unavailable)
    assert lost.kind is Unavailability.CONNECTION_ERROR
    for status, kind in (
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (413, "request_too_large"),
    ):
        verdict = classify(status_error(status, kind), NOW)
        assert isinstance(verdict, Refused), status
        assert verdict.status == status and kind in verdict.message
    assert classify(ValueError("not the API's"), NOW) is None


def test_prices_by_model_family_with_cache_and_batch_rates() -> None:
    prices = load_settings(None).llm.prices
    haiku = price_of("claude-haiku-4-5-20251001", prices)
    assert haiku is not None and (haiku.input, haiku.output) == (1.0, 5.0)
    assert price_of("claude-sonnet-4-5", prices) is not None
    assert price_of("claude-unknown-9", prices) is None
    usage = Usage(
        input_tokens=300, output_tokens=150, cache_write_tokens=1000, cache_read_tokens=10
    )
    full = cost_of(usage, haiku)
    # 300 x $1 + 150 x $5 + 1000 x $1.25 + 10 x $0.10, per million
    assert full == Decimal("0.002301")
    assert cost_of(usage, haiku, batch=True) == full / 2


def test_one_hour_cache_writes_cost_twice_the_input_price() -> None:
    prices = load_settings(None).llm.prices
    haiku = price_of("claude-haiku-4-5", prices)
    assert haiku is not None
    usage = Usage.of(
        {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 3000,
            "cache_creation": {
                "ephemeral_5m_input_tokens": 1000,
                "ephemeral_1h_input_tokens": 2000,
            },
        }
    )
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (3000, 2000)
    # 1000 x $1.25 + 2000 x $2, per million
    assert cost_of(usage, haiku) == Decimal("0.00525")


def test_a_price_must_be_finite() -> None:
    import pytest

    from taskd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"llm\.prices"):
        load_settings(None, llm={"prices": {"x": {"input": float("inf"), "output": 1}}})
