"""The account's recent predictions (``GET /predictions``), as a flow."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from .._base.errors import FluxAPIError
from .._domain.prediction import Prediction
from .actions import Call, Flow
from .requests import Requests

#: Pages of ``GET /predictions`` read at most.
MAX_LIST_PAGES = 100


class PredictionList(list[Prediction]):
    """The predictions a listing gave, newest first, and whether it was read to its end.

    ``complete``: every page was read, down to a prediction older than the listing's
    ``created_after``, or to the last page (no ``next``). False when the listing was cut short:
    the page limit, or a ``next`` page on another origin (not followed: the token goes nowhere
    else); ``cut`` says which. A complete listing may still prove little: a gateway that lists
    nothing answers an empty one (see :func:`flux_tools._domain.batch.never_sent`).
    """

    complete: bool = True
    cut: str | None = None


def list_predictions(requests: Requests, after: datetime) -> Flow[PredictionList]:
    """The account's predictions created after ``after``, newest first (all pages)."""
    stamp = after.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    url: str | None = f"{requests.base_url}/predictions?created_after={stamp}"
    found = PredictionList()
    for _ in range(MAX_LIST_PAGES):
        if url is None:
            return found
        reply = yield from requests.send(Call("GET", url, "get"), deadline=None)
        try:
            page = json.loads(reply.body)
        except ValueError:
            raise FluxAPIError(
                "GET /predictions answered with something that is not a list of predictions",
                status=reply.status,
            ) from None
        results = page.get("results") if isinstance(page, dict) else None
        if not isinstance(results, list):
            raise FluxAPIError("GET /predictions answered without results", status=reply.status)
        oldest: datetime | None = None
        for item in results:
            try:
                prediction = Prediction.model_validate(item)
            except ValueError:
                continue
            found.append(prediction)
            if prediction.created_at is not None:
                created = prediction.created_at
                created = created if created.tzinfo else created.replace(tzinfo=timezone.utc)
                oldest = created if oldest is None else min(oldest, created)
        if oldest is not None and oldest < after:
            return found
        advertised = page.get("next")
        if not isinstance(advertised, str) or not advertised:
            return found  # the last page
        # Followed only on the configured origin (the token goes nowhere else).
        url = requests.follow(advertised, "") or None
        if url is None:
            found.complete, found.cut = False, "its next page is on another origin"
            return found
    found.complete, found.cut = False, f"more than {MAX_LIST_PAGES} pages"
    return found


__all__ = ["MAX_LIST_PAGES", "PredictionList", "list_predictions"]
