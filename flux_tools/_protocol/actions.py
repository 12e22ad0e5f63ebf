"""What a flow asks of its driver: the whole vocabulary between the sans-IO flows and the two
drivers (``FluxClient`` and ``AsyncFluxClient`` in :mod:`flux_tools._drivers.client`).

A flow is a generator that yields actions (:class:`Call`, :class:`Sleep`, :class:`Report`,
:class:`LoadImage`, :class:`Spend`) and receives each one's :data:`Outcome`.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import httpx2

from .._domain.prediction import Prediction
from .._domain.pricing import Hold

T = TypeVar("T")

#: Largest API answer read (a prediction with inline ``data:`` outputs is the largest honest
#: one): a gateway's endless body fails at this size instead of filling the memory.
MAX_REPLY_BYTES = 32 * 1024 * 1024


class ImageLoader(Protocol):
    """Reads local image files for image inputs (the drivers' ``LocalImages``)."""

    @property
    def max_bytes(self) -> int: ...

    def load(self, source: str, field: str) -> str | None: ...


@dataclass(frozen=True)
class Call:
    """Send one HTTP request. ``kind`` decides how it may be retried."""

    method: Literal["GET", "POST"]
    url: str
    kind: Literal["create", "get", "cancel"]
    json: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    read_timeout: float | None = None  # None: the client's configured read timeout
    #: Seconds the whole exchange may take, body included (None: no limit but the timeouts).
    #: The drivers end a request that outlasts it, however slowly its body trickles in.
    time_left: float | None = None


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Report:
    """A state of the prediction, for the caller's progress callback."""

    prediction: Prediction


@dataclass(frozen=True)
class LoadImage:
    """Read a local image for an input field (file I/O stays in the drivers): the driver sends
    back its ``data:`` URI, or None when ``source`` is a prediction id with no saved file."""

    source: str
    field: str
    images: ImageLoader


@dataclass(frozen=True)
class Spend:
    """One step of a budget shared by replicas (its state is in the state server, so the driver
    does the round trip): ``reserve`` (answers the :class:`Hold`, or raises BudgetExceeded into
    the flow), ``release`` a hold whose create certainly made nothing, ``bind`` a hold to its
    prediction, ``settle`` a prediction that ended. An in-process budget is kept by the flow
    itself: no action."""

    step: Literal["reserve", "release", "bind", "settle"]
    model: str = ""
    usd: float | None = None
    hold: Hold | None = None
    prediction_id: str = ""
    status: str = ""


class StopWaiting:
    """The driver's answer to a :class:`Report` when it wants a soft wait over now (a server
    shutting down hands its predictions over): the wait returns the prediction as it is, not
    canceled, as when its budget runs out."""

    def __repr__(self) -> str:
        return "STOP_WAITING"


STOP_WAITING = StopWaiting()


@dataclass(frozen=True)
class Reply:
    """What the driver sends back for a :class:`Call` that got an HTTP answer."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    #: The body was cut at :data:`MAX_REPLY_BYTES`: not an answer to trust.
    too_large: bool = False


Action = Call | Sleep | Report | LoadImage | Spend
#: What a driver sends into a flow: a Reply or a transport error for a Call, a data URI (or
#: None) for a LoadImage, the Hold (or None) for a Spend, STOP_WAITING (or None) for a Report,
#: None otherwise.
Outcome = Reply | httpx2.TransportError | str | Hold | StopWaiting | None
Flow = Generator[Action, Outcome, T]


__all__ = [
    "MAX_REPLY_BYTES",
    "STOP_WAITING",
    "Action",
    "Call",
    "Flow",
    "ImageLoader",
    "LoadImage",
    "Outcome",
    "Reply",
    "Report",
    "Sleep",
    "Spend",
    "StopWaiting",
]
