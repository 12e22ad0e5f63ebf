"""One request as a flow: :class:`Requests` is what every flow sends through.

Where a request may go (the configured origin only: credentials never leave it), how it is
retried (never a create that may have arrived), what an error answer means, and the account's
budgets around each request. The vocabulary between flows and drivers is :mod:`.actions`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import httpx2
from pydantic import ValidationError

from .._base.errors import ConfigError, FluxAPIError, FluxConnectionError, FluxError, api_error
from .._base.urls import origin
from .._domain.limits import RateLimiter
from .._domain.polling import RetryPolicy
from .._domain.prediction import Prediction
from .._domain.shared import SharedLimiter
from .actions import MAX_REPLY_BYTES, Call, Flow, Reply, Sleep

#: The least time a request is given, even right at a deadline: the last poll before giving up
#: may still bring the finished image. A wait ends at most this much past its deadline.
MIN_CALL_SECONDS = 2.0
#: A request waiting for the account's budget is sent at the latest this long before its
#: deadline, so that its answer can still come in time.
LIMITER_ANSWER_MARGIN = 1.0


def was_sent(exc: httpx2.TransportError) -> bool:
    """Whether a failed request may have reached the server.

    Only failures to connect (or to get a pooled connection) prove that it did not.
    """
    return not isinstance(exc, httpx2.ConnectError | httpx2.ConnectTimeout | httpx2.PoolTimeout)


class Requests:
    """One request at a time as a flow, for one API: URLs, retries, errors, budgets."""

    def __init__(
        self,
        base_url: str,
        *,
        retry: RetryPolicy,
        limiter: RateLimiter | SharedLimiter,
        clock: Callable[[], float],
        rng: Any,
        secrets: tuple[str | None, ...] = (),
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = retry
        self.limiter = limiter
        self._clock = clock
        self._rng = rng
        self._secrets = secrets
        self._origin = origin(self.base_url)

    # -- URLs ---------------------------------------------------------------------------------

    def prediction_url(self, prediction_id: str, suffix: str = "") -> str:
        return f"{self.base_url}/predictions/{quote(prediction_id, safe='')}{suffix}"

    def follow(self, advertised: str | None, fallback: str) -> str:
        # The API's own urls are followed only on the configured origin: a gateway may answer
        # with urls on api.replicate.com, and the gateway's key must never be sent there.
        if advertised:
            try:
                if origin(advertised) == self._origin:
                    return advertised
            except httpx2.InvalidURL:
                pass
        return fallback

    def model_url(self, model: str, suffix: str = "") -> str:
        owner, name = model.split("/")
        return f"{self.base_url}/models/{quote(owner, safe='')}/{quote(name, safe='')}{suffix}"

    # -- one request, with retries --------------------------------------------------------------

    def send(
        self,
        call: Call,
        *,
        deadline: float | None,
        prediction_id: str | None = None,
        persistent: bool = False,
    ) -> Flow[Reply]:
        """Send ``call``, retrying what is safe to retry.

        ``persistent`` (the polls of a wait): a retryable failure is retried until the deadline,
        however many times, never given up on earlier. The error raised then is the last one.
        """
        idempotent = call.kind != "create"
        attempt = 0
        while True:
            left = None if deadline is None else max(MIN_CALL_SECONDS, deadline - self._clock())
            outcome = yield replace(call, time_left=left)
            error: FluxError
            if isinstance(outcome, Reply):
                if outcome.too_large:
                    raise self._too_large(call, outcome, prediction_id)
                if outcome.status < 400:
                    return outcome
                api_err = api_error(
                    outcome.status,
                    outcome.body,
                    dict(outcome.headers),
                    secrets=self._secrets,
                    prediction_id=prediction_id,
                )
                error, retry_after = api_err, api_err.retry_after
                retry = self.retry.should_retry(
                    attempt=attempt,
                    idempotent=idempotent,
                    status=outcome.status,
                    persistent=persistent,
                )
            else:
                assert isinstance(outcome, httpx2.TransportError), "a Call gets a Reply or an error"
                sent = was_sent(outcome)
                error = self._connection_error(call, outcome, sent, prediction_id)
                retry_after = None
                retry = self.retry.should_retry(
                    attempt=attempt, idempotent=idempotent, sent=sent, persistent=persistent
                )
            delay = self.retry.delay(attempt, retry_after, self._rng) if retry else None
            if delay is None and retry and persistent and retry_after is not None:
                delay = retry_after  # a long Retry-After: wait it out if the deadline allows
            if delay is None or (deadline is not None and self._clock() + delay > deadline):
                if call.kind == "create" and isinstance(error, FluxAPIError):
                    error.nothing_created()
                raise error
            attempt += 1
            yield Sleep(delay)

    def _too_large(self, call: Call, reply: Reply, prediction_id: str | None) -> FluxAPIError:
        created = (
            " The prediction may have been created and may be billed: check your recent "
            "predictions before retrying."
            if call.kind == "create"
            else ""
        )
        return FluxAPIError(
            f"HTTP {reply.status}: the API answered {call.method} {httpx2.URL(call.url).path} "
            f"with a body over {MAX_REPLY_BYTES} bytes; it was not read further.{created}",
            status=reply.status,
            prediction_id=prediction_id,
        )

    def _connection_error(
        self, call: Call, exc: httpx2.TransportError, sent: bool, prediction_id: str | None
    ) -> FluxConnectionError:
        what = type(exc).__name__
        where = f"{call.method} {httpx2.URL(call.url).path}"
        if call.kind == "create" and sent:
            return FluxConnectionError(
                f"The connection failed after the create request was sent ({what} on {where}). "
                "The prediction may have been created and may be billed; it was NOT sent again "
                "to avoid paying twice. Check your recent predictions before retrying.",
                maybe_created=True,
            )
        return FluxConnectionError(
            f"Could not reach the API at {self.base_url} ({what} on {where}). "
            "Check the network and FLUX_BASE_URL, then try again.",
            prediction_id=prediction_id,
        )

    def prediction(self, reply: Reply, kind: str = "get") -> Prediction:
        try:
            return Prediction.model_validate_json(reply.body)
        except ValidationError:
            created = (
                " A prediction may have been created: check your recent predictions before "
                "retrying."
                if kind == "create"
                else ""
            )
            raise FluxAPIError(
                f"HTTP {reply.status}: the API answered with something that is not a "
                "prediction. Is the base URL a Replicate-compatible predictions API?" + created,
                status=reply.status,
            ) from None

    # -- the predictions endpoints ------------------------------------------------------------

    def get(
        self,
        prediction: Prediction | str,
        *,
        deadline: float | None = None,
        persistent: bool = False,
    ) -> Flow[Prediction]:
        pid = prediction if isinstance(prediction, str) else prediction.id
        advertised = (
            None if isinstance(prediction, str) or not prediction.urls else prediction.urls.get
        )
        url = self.follow(advertised, self.prediction_url(pid))
        reply = yield from self.send(
            Call("GET", url, "get"), deadline=deadline, prediction_id=pid, persistent=persistent
        )
        return self.prediction(reply)

    def cancel(
        self, prediction: Prediction | str, *, deadline: float | None = None
    ) -> Flow[Prediction]:
        pid = prediction if isinstance(prediction, str) else prediction.id
        advertised = (
            None if isinstance(prediction, str) or not prediction.urls else prediction.urls.cancel
        )
        url = self.follow(advertised, self.prediction_url(pid, "/cancel"))
        reply = yield from self.send(
            Call("POST", url, "cancel"), deadline=deadline, prediction_id=pid
        )
        return self.prediction(reply)

    # -- the account's request budgets (the drivers call these around each Call) ----------------

    def slot(self, call: Call) -> tuple[float, Call]:
        """Book the account's budget for ``call``: the seconds to wait before sending it, and
        the call to send then. A call with a deadline is never made late by the wait."""
        if isinstance(self.limiter, SharedLimiter):
            raise ConfigError(
                "A limiter shared by replicas (FLUX_STATE_URL) books its slots with a round trip "
                "to the state server: use it with AsyncFluxClient, not the blocking FluxClient."
            )
        return self.delayed(call, self.limiter.acquire(call.kind, deadline=self.latest(call)))

    def latest(self, call: Call) -> float | None:
        """The latest time (on the limiter's clock) at which ``call`` may be sent; None: any."""
        if call.time_left is None:
            return None
        return self._clock() + max(0.0, call.time_left - LIMITER_ANSWER_MARGIN)

    def delayed(self, call: Call, delay: float) -> tuple[float, Call]:
        """``call`` sent ``delay`` seconds from now: its time left shrinks by the wait."""
        if delay > 0 and call.time_left is not None:
            call = replace(call, time_left=max(MIN_CALL_SECONDS, call.time_left - delay))
        return delay, call

    def replied(self, call: Call, reply: Reply) -> None:
        """What an answer says of the account's budgets (``ratelimit-*`` headers, a 429)."""
        if isinstance(self.limiter, RateLimiter):
            self.limiter.observe(call.kind, reply.status, reply.headers)
