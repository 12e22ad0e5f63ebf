"""One client in a fresh process: many generations at once, with its own CPU time and memory.

``python benchmarks/worker.py '{"client": "flux-tools"|"replicate", "base_url": ..., "n": 1000,
"warmup": 10}'`` prints one JSON line. Only the measured client's library is imported, so the
peak RSS is that client's (plus the interpreter's).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

MODEL = "black-forest-labs/flux-pro"
Generate = Callable[[str], Awaitable[str]]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _flux_tools(base_url: str, body: Callable[[Generate], Awaitable[None]]) -> None:
    from flux_tools import AsyncFluxClient

    async with AsyncFluxClient("r8_benchmark", base_url=base_url, model=MODEL) as client:

        async def generate(prompt: str) -> str:
            result = await client.generate(prompt=prompt)
            return result.urls[0]

        await body(generate)


async def _replicate(base_url: str, body: Callable[[Generate], Awaitable[None]]) -> None:
    from replicate.client import Client

    # The official client takes the origin: it adds /v1 itself.
    client = Client(api_token="r8_benchmark", base_url=base_url.removesuffix("/v1"))

    async def generate(prompt: str) -> str:
        output = await client.async_run(MODEL, input={"prompt": prompt})
        url = getattr(output, "url", output)  # a FileOutput for https URLs, else the str
        return url if isinstance(url, str) else repr(url)

    await body(generate)


async def _main(options: dict[str, Any]) -> dict[str, Any]:
    n, warmup = int(options["n"]), int(options.get("warmup", 0))
    returned: dict[str, float] = {}
    errors: Counter[str] = Counter()
    result: dict[str, Any] = {}

    async def one(generate: Generate, prompt: str, record: bool) -> None:
        try:
            url = await generate(prompt)
        except Exception as exc:
            errors[type(exc).__name__] += 1
            return
        if not isinstance(url, str) or "/files/" not in url:
            # The official client returns the output of a create answered "processing" (a
            # gateway ignoring Prefer: wait, under load) as if it were final: None.
            errors[f"returned {url!r} instead of a URL"] += 1
            return
        if record:
            returned[url.split("/files/")[1].split("/")[0]] = time.monotonic()

    async def body(generate: Generate) -> None:
        # Learned durations are part of a long-running client: both clients get the same
        # warm-up generations, unmeasured.
        await asyncio.gather(*(one(generate, f"warm-up {i}", False) for i in range(warmup)))
        result["warmup_errors"] = dict(errors)
        errors.clear()
        cpu0, wall0 = _cpu(), time.monotonic()
        result["started"] = wall0
        await asyncio.gather(*(one(generate, f"burst {i}", True) for i in range(n)))
        result["wall"] = time.monotonic() - wall0
        result["cpu"] = _cpu() - cpu0

    runner = _flux_tools if options["client"] == "flux-tools" else _replicate
    await runner(options["base_url"], body)
    result.update(
        returned=returned,
        errors=dict(errors),
        maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(_main(json.loads(sys.argv[1])))))
