"""Webhooks as Replicate sends them, to a receiver on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from flux_tools.emulator import Emulator

AUTH = {"Authorization": "Bearer test-token"}
CREATE = "/models/black-forest-labs/flux-pro/predictions"


class Receiver:
    """A loopback HTTP server that keeps every POST it gets: (headers, body)."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], str]] = []
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # the stdlib names it
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length).decode()
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 10) -> list[tuple[dict[str, str], str]]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"got {len(self.received)} of {count} webhooks"
            time.sleep(0.02)
        return list(self.received)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(latency=0.2, queue_time=0.05, image_scale=0.125) as emulator:
        yield emulator


@pytest.fixture
def client(emu: Emulator) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=emu.base_url, headers=AUTH, timeout=20) as c:
        yield c


def verify(headers: dict[str, str], body: str, secret: str) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body}".encode()
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return headers["webhook-signature"] == f"v1,{expected}"


def test_all_events_signed_in_order(
    emu: Emulator, client: httpx2.Client, receiver: Receiver
) -> None:
    created = client.post(CREATE, json={"input": {"prompt": "x"}, "webhook": receiver.url})
    assert created.status_code == 201
    got = receiver.wait_for(4)
    docs = [json.loads(body) for _, body in got]
    assert [d["status"] for d in docs] == ["processing", "processing", "succeeded", "succeeded"]
    # The receiver answers before the emulator records the answer: wait for the record.
    deliveries = emu.wait_for_webhooks(4)
    assert [d.status for d in deliveries] == [204] * 4
    assert [d.event for d in deliveries] == ["start", "logs", "output", "completed"]
    assert docs[1]["logs"].startswith("Using seed: ")
    assert docs[3]["output"] == client.get(f"/predictions/{created.json()['id']}").json()["output"]
    secret = client.get("/webhooks/default/secret").json()["key"]
    assert secret == emu.webhook_secret and secret.startswith("whsec_")
    assert all(verify(headers, body, secret) for headers, body in got)
    assert not verify(got[0][0], got[0][1] + " ", secret)  # the check can fail
    assert len({h["webhook-id"] for h, _ in got}) == 4


def test_events_filter_and_a_canceled_prediction(client: httpx2.Client, receiver: Receiver) -> None:
    body = {
        "input": {"prompt": "x [emulator:hang]"},
        "webhook": receiver.url,
        "webhook_events_filter": ["completed"],
    }
    created = client.post(CREATE, json=body).json()
    time.sleep(0.3)
    assert receiver.received == []  # still running: nothing asked for yet
    client.post(f"/predictions/{created['id']}/cancel")
    ((_, sent),) = receiver.wait_for(1)
    assert json.loads(sent)["status"] == "canceled"
    time.sleep(0.2)
    assert len(receiver.received) == 1


LOOPBACK_HOOK = "http://127.0.0.1:9/hook"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"webhook": "https://hooks.example.invalid/hook"}, "webhook"),  # not loopback
        ({"webhook": "not a url"}, "webhook"),
        ({"webhook": LOOPBACK_HOOK, "webhook_events_filter": ["done"]}, "webhook_events_filter"),
    ],
)
def test_bad_webhooks_are_refused_before_anything_is_made(
    emu: Emulator, client: httpx2.Client, body: dict[str, Any], field: str
) -> None:
    response = client.post(CREATE, json={"input": {"prompt": "x"}, **body})
    assert response.status_code == 422
    assert response.json()["invalid_fields"][0]["field"] == field
    assert emu.stats.predictions_created == 0


def test_an_unreachable_receiver_is_recorded(emu: Emulator, client: httpx2.Client) -> None:
    receiver = Receiver()
    url = receiver.url
    receiver.close()  # nothing listens there any more
    client.post(
        CREATE,
        json={"input": {"prompt": "x"}, "webhook": url, "webhook_events_filter": ["completed"]},
    )
    (delivery,) = emu.wait_for_webhooks(1)
    assert (delivery.event, delivery.status) == ("completed", None)
