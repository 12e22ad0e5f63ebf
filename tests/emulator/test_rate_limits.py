"""The emulator's rate limits, as Replicate enforces them: buckets, headers, 429 bodies."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import httpx2
import pytest

from flux_tools.emulator import RateLimit, RateLimits
from flux_tools.emulator.__main__ import _parser

from .conftest import AUTH, CREATE, Factory

EMULATOR_DEFAULTS = {"latency": 0.05, "queue_time": 0.0, "image_scale": 0.25}


def create(client: httpx2.Client, **headers: str) -> httpx2.Response:
    return client.post(CREATE, json={"input": {"prompt": "x"}}, headers=headers)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("replicate", RateLimits(RateLimit(600, 60), RateLimit(3000, 60))),
        ("replicate-low-credit", RateLimits(RateLimit(6, 60, burst=1), RateLimit(3000, 60))),
        ("creates=600/60,reads=3000/60", RateLimits(RateLimit(600, 60), RateLimit(3000, 60))),
        ("creates=6/60:burst=1", RateLimits(creates=RateLimit(6, 60, burst=1))),
        (" reads=50/1m ", RateLimits(reads=RateLimit(50, 60))),
        ("creates=10/0.5s", RateLimits(creates=RateLimit(10, 0.5))),
    ],
)
def test_parse(text: str, expected: RateLimits) -> None:
    assert RateLimits.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("creates", "creates"),
        ("writes=1/1", "writes"),
        ("creates=1/1,creates=2/1", "given twice"),
        ("creates=ten/60", "COUNT/SECONDS"),
        ("creates=0/60", "requests >= 1"),
        ("creates=1/60:burst=0", "burst >= 1"),
        ("", "nothing given"),
    ],
)
def test_parse_rejects_with_the_syntax(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        RateLimits.parse(text)


def test_command_line_flag_parses_and_refuses_bad_limits() -> None:
    args = _parser("x").parse_args(["--rate-limit", "creates=6/60:burst=1"])
    assert args.rate_limit == RateLimits(creates=RateLimit(6, 60, burst=1))
    bad = subprocess.run(
        [sys.executable, "-m", "flux_tools.emulator", "--rate-limit", "creates=lots"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "creates=600/60,reads=3000/60" in bad.stderr  # the usage names the syntax


def test_creates_burst_then_429_with_replicates_body_and_headers(make: Factory) -> None:
    emu = make(rate_limits="creates=3/60")
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        answers = [create(client) for _ in range(4)]
        read = client.get(f"/predictions/{answers[0].json()['id']}")
    assert [a.status_code for a in answers] == [201, 201, 201, 429]
    assert [a.headers["ratelimit-remaining"] for a in answers] == ["2", "1", "0", "0"]
    # one token comes back every 20 s; the bucket is full again after 60 s
    assert [int(a.headers["ratelimit-reset"]) for a in answers[:3]] == [20, 40, 60]
    throttled = answers[3]
    assert throttled.headers["retry-after"] == "20"
    assert throttled.json() == {
        "detail": "Request was throttled. Your rate limit resets in ~20s.",
        "status": 429,
        "retry_after": 20,
    }
    assert emu.stats.predictions_created == 3  # a refused create makes nothing
    assert emu.stats.throttled == 1
    assert read.status_code == 200  # reads have their own bucket (unlimited here)
    assert "ratelimit-remaining" not in read.headers


def test_low_credit_account_has_a_burst_of_one(make: Factory) -> None:
    emu = make(rate_limits="replicate-low-credit")
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        first, second = create(client), create(client)
        read = client.get(f"/predictions/{first.json()['id']}")
    assert (first.status_code, second.status_code) == (201, 429)
    assert second.headers["retry-after"] == "10"  # 6 a minute: one every 10 s
    assert read.status_code == 200
    assert read.headers["ratelimit-remaining"] == "2999"


def test_reads_bucket_covers_get_cancel_list_models_account(make: Factory) -> None:
    emu = make(rate_limits="reads=5/60")
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        prediction_id = create(client).json()["id"]
        reads = [
            client.get(f"/predictions/{prediction_id}"),
            client.post(f"/predictions/{prediction_id}/cancel"),
            client.get("/predictions"),
            client.get("/models/black-forest-labs/flux-pro"),
            client.get("/account"),
            client.get(f"/predictions/{prediction_id}"),
        ]
        another_create = create(client)
    assert [r.status_code for r in reads] == [200] * 5 + [429]
    assert [r.headers["ratelimit-remaining"] for r in reads] == ["4", "3", "2", "1", "0", "0"]
    assert another_create.status_code == 201


def test_errors_after_the_limiter_carry_its_headers(make: Factory) -> None:
    emu = make(rate_limits="creates=5/60")
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        invalid = client.post(CREATE, json={"input": {"prompt": "x", "steps": 99}})
    assert invalid.status_code == 422
    assert invalid.headers["ratelimit-remaining"] == "4"  # it was a request all the same


def test_unauthenticated_requests_do_not_spend(make: Factory) -> None:
    emu = make(rate_limits="creates=1/60")
    with httpx2.Client(base_url=emu.base_url) as client:
        refused = create(client)
        allowed = create(client, **AUTH)
    assert refused.status_code == 401
    assert allowed.status_code == 201


def test_each_token_is_an_account_with_its_own_buckets(make: Factory) -> None:
    emu = make(rate_limits="creates=1/60")
    with httpx2.Client(base_url=emu.base_url) as client:
        a1 = create(client, Authorization="Bearer a")
        a2 = create(client, Authorization="Bearer a")
        b1 = create(client, Authorization="Bearer b")
    assert (a1.status_code, a2.status_code, b1.status_code) == (201, 429, 201)


def test_tokens_refill_at_the_rate(make: Factory) -> None:
    emu = make(rate_limits="creates=20/1:burst=1")  # one every 50 ms
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        assert create(client).status_code == 201
        assert create(client).status_code == 429
        deadline = time.monotonic() + 10
        while (response := create(client)).status_code == 429:
            assert time.monotonic() < deadline, "the bucket never refilled"
            time.sleep(0.02)
    assert response.status_code == 201
    assert emu.stats.predictions_created == 2


def test_limits_can_change_while_running(make: Factory) -> None:
    emu = make()
    assert emu.rate_limits is None
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        assert [create(client).status_code for _ in range(3)] == [201] * 3
        emu.set_rate_limits(RateLimits(creates=RateLimit(1, 60)))
        assert [create(client).status_code for _ in range(2)] == [201, 429]
        emu.set_rate_limits(None)
        assert create(client).status_code == 201


def test_files_and_streams_are_not_limited(make: Factory) -> None:
    emu = make(rate_limits="reads=1/60")
    with httpx2.Client(base_url=emu.base_url, headers=AUTH) as client:
        doc = create(client, Prefer="wait").json()
        files = [client.get(doc["output"]).status_code for _ in range(3)]
        with client.stream("GET", doc["urls"]["stream"]) as stream:
            stream.read()
        assert stream.status_code == 200
    assert files == [200, 200, 200]
