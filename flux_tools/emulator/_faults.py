"""Scripted misbehaviour: server-wide faults and the ``[emulator:...]`` prompt directives."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Literal

#: What a request reached: the prediction endpoints, the output files, and the rest of the API
#: the official clients call (``list`` of predictions, ``model`` descriptions and versions,
#: ``account``, the server-sent ``stream`` of a prediction, its ``web`` page, and ``upload``:
#: the Files API the official clients send file inputs to).
Endpoint = Literal[
    "create", "get", "cancel", "file", "list", "model", "account", "stream", "web", "upload"
]
FaultEndpoint = Literal[
    "create",
    "get",
    "cancel",
    "file",
    "list",
    "model",
    "account",
    "stream",
    "web",
    "upload",
    "any",
]
ENDPOINTS: tuple[Endpoint, ...] = (
    "create",
    "get",
    "cancel",
    "file",
    "list",
    "model",
    "account",
    "stream",
    "web",
    "upload",
)


#: Actions only the ``list`` endpoint takes (see :class:`Fault`).
LIST_ACTIONS = ("empty", "cut")


@dataclass
class Fault:
    """One scripted failure of the requests that reach ``endpoint`` (one of ``ENDPOINTS``, or
    ``"any"``).

    ``action`` is an HTTP status as text (``"429"``, ``"503"``...), ``"drop"`` (close the
    connection without answering) or ``"slow"`` (wait ``delay`` seconds, then answer normally).
    For the ``list`` endpoint, as gateways answer ``GET /predictions``: ``"empty"`` (a list with
    no prediction at all, as a gateway that does not really list answers) and ``"cut"`` (the
    page as it is, but without its ``next`` link: a listing that stops short).
    """

    endpoint: FaultEndpoint
    action: str
    times: int | None = 1
    retry_after: float | None = None
    delay: float = 0.0

    def __post_init__(self) -> None:
        if self.endpoint not in (*ENDPOINTS, "any"):
            raise ValueError(f"unknown fault endpoint {self.endpoint!r}")
        if self.action in LIST_ACTIONS:
            if self.endpoint != "list":
                raise ValueError(f"fault action {self.action!r} is for the list endpoint only")
        elif self.action not in ("drop", "slow") and not (
            self.action.isdigit() and 400 <= int(self.action) <= 599
        ):
            raise ValueError(
                "fault action must be a 4xx/5xx status, drop or slow (list: also empty, cut): "
                f"{self.action!r}"
            )
        if self.times is not None and self.times < 0:
            raise ValueError("fault times must be >= 0 (or None for forever)")
        if self.delay < 0 or (self.retry_after is not None and self.retry_after < 0):
            raise ValueError("fault delay and retry_after must be >= 0")

    @property
    def status(self) -> int | None:
        """The HTTP status this fault answers with, None for drop and slow."""
        return int(self.action) if self.action.isdigit() else None

    def matches(self, endpoint: Endpoint) -> bool:
        return self.endpoint == "any" or self.endpoint == endpoint


@dataclass
class _Armed:
    fault: Fault
    remaining: int | None


class FaultBook:
    """Faults consumed in order: the first one still armed for an endpoint takes the request.

    Counters live here, not on the Fault, so one Fault object can be added twice. Thread-safe:
    tests add faults from their own thread while the server consumes them.
    """

    def __init__(self, faults: list[Fault] | tuple[Fault, ...] = ()) -> None:
        self._lock = threading.Lock()
        self._armed = [_Armed(f, f.times) for f in faults]

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._armed.append(_Armed(fault, fault.times))

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def take(self, endpoint: Endpoint) -> Fault | None:
        with self._lock:
            for armed in self._armed:
                if not armed.fault.matches(endpoint):
                    continue
                if armed.remaining is None:
                    return armed.fault
                if armed.remaining > 0:
                    armed.remaining -= 1
                    return armed.fault
        return None


@dataclass
class Directives:
    """What the ``[emulator:...]`` markers in a prompt ask of one prediction."""

    fail: bool = False
    moderate: bool = False
    hang: bool = False
    latency: float | None = None
    queue: float | None = None
    faults: list[Fault] = field(default_factory=list)


_DIRECTIVE = re.compile(r"\[emulator:([^\]]*)\]")
_NUMBER = r"\d+(?:\.\d*)?"
_ENDPOINT_FAULT = re.compile(
    rf"(create|get|cancel|file)=(\d{{3}}|drop|slow({_NUMBER}))(?:x(\d+))?(?::ra=({_NUMBER}))?"
)
_TIMING = re.compile(rf"(latency|queue)=({_NUMBER})")


def parse_directives(prompt: str) -> Directives:
    """Read every ``[emulator:...]`` marker; an unknown one is an error, not silently ignored."""
    found = Directives()
    for match in _DIRECTIVE.finditer(prompt):
        text = match.group(1).strip()
        if text in ("fail", "moderate", "hang"):
            setattr(found, text, True)
        elif timing := _TIMING.fullmatch(text):
            setattr(found, timing.group(1), float(timing.group(2)))
        elif fault := _ENDPOINT_FAULT.fullmatch(text):
            endpoint, action, slow, times, retry_after = fault.groups()
            found.faults.append(
                Fault(
                    endpoint=endpoint,  # type: ignore[arg-type]  # the regex allows only endpoints
                    action="slow" if slow is not None else action,
                    delay=float(slow) if slow is not None else 0.0,
                    times=int(times) if times is not None else 1,
                    retry_after=float(retry_after) if retry_after is not None else None,
                )
            )
        else:
            raise ValueError(
                f"unknown emulator directive [emulator:{text}] (known: fail, moderate, hang, "
                "latency=S, queue=S, ENDPOINT=ACTION[xN][:ra=S])"
            )
    return found
