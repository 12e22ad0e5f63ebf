"""Generate many images concurrently with AsyncFluxClient, offline against the emulator.

    python examples/batch.py [COUNT] [OUT_DIR]

One client (one connection pool) serves every request; a semaphore bounds how many predictions
are in flight, as a real account's rate limits would want. Failures are reported per prompt
without stopping the others. With a real token, drop the emulator: ``AsyncFluxClient()`` reads
FLUX_API_TOKEN / REPLICATE_API_TOKEN (and FLUX_BASE_URL for a gateway).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from flux_tools import AsyncFluxClient, FluxError
from flux_tools.emulator import Emulator

SUBJECTS = ["a fox", "a lighthouse", "a teapot", "a bicycle", "a cactus", "a whale"]
STYLES = ["watercolor", "pixel art", "studio photo", "ink sketch"]


async def generate_all(client: AsyncFluxClient, prompts: list[str], out_dir: Path) -> int:
    in_flight = asyncio.Semaphore(20)

    async def one(prompt: str) -> str:
        async with in_flight:
            try:
                result = await client.generate(prompt=prompt, aspect_ratio="3:2")
                (path,) = await result.asave(out_dir)
            except FluxError as exc:
                return f"FAILED {prompt!r}: {exc}"
            return f"{path.name}  {prompt!r} (seed {result.seed})"

    lines = await asyncio.gather(*(one(p) for p in prompts))
    for line in lines:
        print(line)
    return sum(not line.startswith("FAILED") for line in lines)


async def main(count: int, out_dir: Path) -> int:
    prompts = [f"{SUBJECTS[i % 6]}, {STYLES[i % 4]}" for i in range(count)]
    # Each image takes ~1.5 s on the emulator; together they take about as long as one.
    with Emulator(latency=1.5, latency_jitter=0.5, image_scale=0.25) as emulator:
        async with AsyncFluxClient(api_token="offline", base_url=emulator.base_url) as client:
            started = time.monotonic()
            done = await generate_all(client, prompts, out_dir)
            elapsed = time.monotonic() - started
    print(f"{done}/{count} images in {elapsed:.1f} s, saved to {out_dir}")
    return 0 if done == count else 1


if __name__ == "__main__":
    args = sys.argv[1:]
    count = int(args[0]) if args else 24
    out_dir = Path(args[1] if len(args) > 1 else "flux-images/batch").resolve()
    sys.exit(asyncio.run(main(count, out_dir)))
