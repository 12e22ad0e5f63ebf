"""Generate one image offline: start the emulator, generate through FluxClient, save the file.

Run it with ``./scripts/demo`` (or ``python examples/quickstart.py``). With a real token, drop the
emulator and the base URL: ``FluxClient()`` reads FLUX_API_TOKEN / REPLICATE_API_TOKEN.
"""

from __future__ import annotations

import sys
from pathlib import Path

from flux_tools import FluxClient
from flux_tools.emulator import Emulator


def main(out_dir: str = "flux-images") -> Path:
    with (
        Emulator(latency=1.0) as emulator,
        FluxClient("any-token", base_url=emulator.base_url) as client,
    ):
        print(f"emulator: {emulator.base_url}", file=sys.stderr)
        result = client.generate(
            prompt="The world's largest black forest cake, the size of a building",
            aspect_ratio="16:9",
            seed=42,
            on_progress=lambda p: print(f"  status: {p.status}", file=sys.stderr),
        )
        (path,) = client.save(result, Path(out_dir).resolve())
    print(f"prediction {result.prediction_id} ({result.model}, seed {result.seed})")
    print(f"url:  {result.urls[0]}")
    print(f"file: {path}")
    return path


if __name__ == "__main__":
    main(*sys.argv[1:])
