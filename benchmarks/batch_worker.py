"""One client in a fresh process: a batch of generations under the account's rate limits.

``python benchmarks/batch_worker.py '{"client": "flux-tools"|"replicate", "base_url": ...,
"n": 2000, "concurrency": 64, "out": DIR}'`` prints one JSON line: wall time, errors.

flux-tools runs its batch (``agenerate_many``: ledger, downloads); the official client runs
``async_run`` for each row under a semaphore of the same size, as a pipeline would, without
downloading (which only favours it).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

MODEL = "black-forest-labs/flux-pro"
TOKEN = "r8_benchmark-token-0123456789"


async def _flux_tools(options: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    from flux_tools import AsyncFluxClient, agenerate_many
    from flux_tools._drivers.durations import durations_for_api

    # The emulator stands for a remote API: its priors apply (none by default on loopback).
    durations = durations_for_api(options["base_url"], priors=True)
    async with AsyncFluxClient(
        TOKEN, base_url=options["base_url"], model=MODEL, durations=durations
    ) as client:
        started = time.monotonic()
        report = await agenerate_many(
            client, rows, options["out"], concurrency=int(options["concurrency"])
        )
        wall = time.monotonic() - started
        stats = client.limiter.stats()
    errors = Counter(o.status for o in report.rows if o.status not in ("saved", "skipped"))
    return {
        "wall": wall,
        "errors": dict(errors),
        "ok": report.status.done,
        "waited": stats.waited,
    }


async def _replicate(options: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    from replicate.client import Client

    client = Client(api_token=TOKEN, base_url=options["base_url"].removesuffix("/v1"))
    gate = asyncio.Semaphore(int(options["concurrency"]))
    errors: Counter[str] = Counter()
    ok = 0

    async def one(row: dict[str, Any]) -> None:
        nonlocal ok
        async with gate:
            try:
                output = await client.async_run(MODEL, input=row)
            except Exception as exc:
                errors[type(exc).__name__] += 1
                return
        url = getattr(output, "url", output)
        if isinstance(url, str) and "/files/" in url:
            ok += 1
        else:
            errors["no URL returned"] += 1

    started = time.monotonic()
    await asyncio.gather(*(one(row) for row in rows))
    return {"wall": time.monotonic() - started, "errors": dict(errors), "ok": ok}


def main() -> None:
    options: dict[str, Any] = json.loads(sys.argv[1])
    rows = [{"prompt": f"{options.get('tag', 'batch')} {i}"} for i in range(int(options["n"]))]
    runner = _flux_tools if options["client"] == "flux-tools" else _replicate
    print(json.dumps(asyncio.run(runner(options, rows))))


if __name__ == "__main__":
    main()
