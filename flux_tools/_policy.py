"""Pure decisions about waiting and retrying: no I/O and no sleeping, so they are tested once.

- :func:`is_terminal`: when a prediction is over.
- :class:`RetryPolicy`: whether a failed request may be sent again, and after how long.
- :class:`PollSchedule`: when to poll next, quick at first, then backing off to a cap; once a
  model's usual duration is known (:class:`DurationStats`), it sleeps until the prediction is
  likely done and polls densely around that time instead.
"""

from __future__ import annotations

import random
import statistics
from collections import deque
from dataclasses import dataclass, field

#: ``aborted`` (a deadline passed before the prediction started) is final too: a client that
#: misses it polls forever, as both official Python clients did.
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled", "aborted"})


def is_terminal(status: str) -> bool:
    return status in TERMINAL_STATUSES


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a request again.

    Reads (get) and cancels are idempotent: retried on connection errors, 429, 502, 503 and 504.
    A create is not: a second one is a second paid prediction. It is retried only when the server
    certainly did not accept it: a 429, or a connection that failed before the request was sent.
    """

    max_retries: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    #: A server asking for a longer pause than this is not waited for.
    max_retry_after: float = 60.0
    retry_statuses: frozenset[int] = frozenset({429, 502, 503, 504})

    def should_retry(
        self,
        *,
        attempt: int,
        idempotent: bool,
        status: int | None = None,
        sent: bool = True,
    ) -> bool:
        """``attempt`` counts retries already made; ``status`` is None for a transport failure,
        where ``sent`` says whether the request may have reached the server."""
        if attempt >= self.max_retries:
            return False
        if status is not None:
            return status == 429 if not idempotent else status in self.retry_statuses
        return idempotent or not sent

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``; None when the server's
        ``Retry-After`` is longer than we are willing to wait."""
        if retry_after is not None:
            if retry_after > self.max_retry_after:
                return None
            # A little jitter on top, so many clients released together do not collide again.
            return retry_after + rng.uniform(0, min(0.25, retry_after * 0.1 + 0.05))
        ceiling = min(self.max_delay, self.base_delay * (2**attempt))
        return rng.uniform(ceiling / 2, ceiling)  # "equal jitter": never zero, never in lockstep


@dataclass
class DurationStats:
    """Recent run times per model, learned from finished predictions.

    The window it reports, low to high quantile of recent durations, is where a prediction of
    that model usually finishes.
    """

    size: int = 32
    minimum_samples: int = 2
    _samples: dict[str, deque[float]] = field(default_factory=dict)

    def observe(self, model: str, seconds: float) -> None:
        if 0 < seconds < 3600:
            self._samples.setdefault(model, deque(maxlen=self.size)).append(seconds)

    def window(self, model: str) -> tuple[float, float] | None:
        samples = self._samples.get(model)
        if not samples or len(samples) < self.minimum_samples:
            return None
        ordered = sorted(samples)
        if len(ordered) < 10:
            low, high = ordered[0], ordered[-1]
        else:
            deciles = statistics.quantiles(ordered, n=10)
            low, high = deciles[0], deciles[-1]
        # Widen a little: durations vary more than a handful of samples show.
        spread = max(high - low, 0.1 * high, 0.1)
        return max(0.0, low - spread * 0.1), high + spread * 0.1


@dataclass(frozen=True)
class PollSchedule:
    """How long to sleep before the next poll.

    Without knowledge of the model: ``initial``, growing by ``factor`` up to ``cap``. With a
    learned window: sleep until it opens (never more than ``max_quiet`` at once, so progress
    keeps flowing), poll every ``window_step`` inside it, and back off past it.
    """

    initial: float = 0.25
    factor: float = 1.5
    cap: float = 3.0
    minimum: float = 0.05
    max_quiet: float = 15.0
    polls_per_window: int = 8

    def next_delay(
        self,
        elapsed: float,
        previous: float | None,
        window: tuple[float, float] | None = None,
    ) -> float:
        """``elapsed``: seconds since the prediction was created; ``previous``: the last delay."""
        backoff = self.initial if previous is None else min(self.cap, previous * self.factor)
        if window is not None:
            low, high = window
            step = min(self.cap, max(self.minimum, (high - low) / self.polls_per_window))
            if elapsed < low - step:
                return max(self.minimum, min(self.max_quiet, low - elapsed))
            if elapsed < high:
                return step
            # Past the usual window: back off from the dense step, not from the long sleep.
            backoff = step if previous is None or previous > step * 4 else backoff
        return max(self.minimum, backoff)
