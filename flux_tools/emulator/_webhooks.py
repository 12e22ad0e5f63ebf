"""Webhooks as Replicate sends them: signed POSTs of the prediction on its events.

A create may carry ``webhook`` (a URL) and ``webhook_events_filter`` (any of ``start``,
``output``, ``logs``, ``completed``; all by default). Each delivery is the prediction's JSON with
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` headers (``v1,`` + base64 of the
HMAC-SHA256 of ``{id}.{timestamp}.{body}`` under the secret that
``GET /v1/webhooks/default/secret`` answers as ``{"key": "whsec_..."}``), which the official
clients' ``validate``/``validateWebhook`` check.

The emulator sends webhooks only to loopback addresses: a create naming another host is refused
(422), so a test never reaches out of the machine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx2

from .._base.urls import is_loopback
from ._state import Problem

EVENTS = ("start", "output", "logs", "completed")


@dataclass(frozen=True)
class Hook:
    url: str
    events: frozenset[str]


@dataclass(frozen=True)
class Delivery:
    """One webhook the emulator sent (``status`` None when it could not be delivered)."""

    prediction_id: str
    event: str
    url: str
    status: int | None
    headers: dict[str, str]
    body: str


def _invalid(field: str, description: str) -> Problem:
    fields = [{"type": "invalid", "field": field, "description": description}]
    detail = f"- {field}: {description}"
    return Problem(422, detail, "Input validation failed", invalid_fields=fields)


def parse_hook(payload: Any) -> Hook | None:
    """The create's webhook, None without one; a 422 for a bad URL or filter."""
    if not isinstance(payload, dict) or payload.get("webhook") in (None, ""):
        return None
    url = payload["webhook"]
    try:
        parsed = httpx2.URL(str(url))
    except Exception:
        raise _invalid("webhook", "Does not match format 'uri'") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise _invalid("webhook", "Does not match format 'uri'")
    if not is_loopback(parsed.host):
        raise _invalid(
            "webhook",
            "The emulator delivers webhooks only to loopback addresses (127.0.0.1, ::1, localhost)",
        )
    wanted = payload.get("webhook_events_filter")
    if wanted is None:
        return Hook(str(url), frozenset(EVENTS))
    if not isinstance(wanted, list) or not all(w in EVENTS for w in wanted):
        raise _invalid(
            "webhook_events_filter", f"Each item must be one of the following: {', '.join(EVENTS)}"
        )
    return Hook(str(url), frozenset(wanted))


class Signer:
    """The account's signing secret, and the headers of one delivery."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(24)
        self.secret = "whsec_" + base64.b64encode(self._key).decode()

    def headers(self, body: str) -> dict[str, str]:
        webhook_id = "msg_" + secrets.token_hex(12)
        timestamp = str(int(time.time()))
        digest = hmac.new(
            self._key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256
        ).digest()
        return {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": timestamp,
            "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        }


class Deliveries:
    """What was sent, in order. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._sent: list[Delivery] = []

    def add(self, delivery: Delivery) -> None:
        with self._lock:
            self._sent.append(delivery)
            self._lock.notify_all()

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self._sent)

    def wait_for(self, count: int, timeout: float) -> list[Delivery]:
        """Once at least ``count`` are recorded (a delivery is recorded after its receiver
        answered, so a receiver can see a webhook before this does): all of them so far."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._sent) >= count, timeout):
                raise TimeoutError(f"{len(self._sent)} of {count} webhooks after {timeout} s")
            return list(self._sent)

    def clear(self) -> None:
        with self._lock:
            self._sent.clear()
