"""flux-tools' own client against the emulator in the mode the official clients need (HTTPS),
next to them: the same emulator serves all three."""

from __future__ import annotations

import pytest

from flux_tools import AsyncFluxClient, FluxClient

from .conftest import Factory


def test_sync_client_over_https_in_one_request(
    make_emulator: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = make_emulator(https=True)
    assert emulator.ca_bundle is not None
    monkeypatch.setenv("SSL_CERT_FILE", emulator.ca_bundle)
    with FluxClient(api_token=emulator.token, base_url=emulator.base_url) as client:
        result = client.generate(prompt="a test image")
    assert result.status == "succeeded"
    assert result.urls[0].startswith(emulator.origin + "/files/")
    # The blocking answer ("processing" with the output) is used at once: no poll.
    assert [(r.method, r.path) for r in emulator.stats.requests] == [
        ("POST", "/v1/models/black-forest-labs/flux-pro/predictions")
    ]


async def test_async_client_over_https_when_the_wait_runs_out(
    make_emulator: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = make_emulator(https=True)
    assert emulator.ca_bundle is not None
    monkeypatch.setenv("SSL_CERT_FILE", emulator.ca_bundle)
    async with AsyncFluxClient(
        api_token=emulator.token, base_url=emulator.base_url, sync_wait=1
    ) as client:
        result = await client.generate(prompt="slow [emulator:latency=1.5]")
    assert result.status == "succeeded" and result.urls
    assert emulator.stats.gets >= 1  # "starting" after the 1 s wait: it went on polling
