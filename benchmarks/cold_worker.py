"""A fresh process's first generation: ``python benchmarks/cold_worker.py '{"client": ...,
"base_url": ..., "prompt": ...}'`` prints the prediction id and when the client returned
(``time.monotonic()``, shared by every process on the machine). flux-tools reads its learned
durations from ``FLUX_CACHE_DIR`` (empty: a first run on this machine)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

MODEL = "black-forest-labs/flux-pro"
TOKEN = "r8_benchmark-token-0123456789"


def main() -> None:
    options: dict[str, Any] = json.loads(sys.argv[1])
    model = options.get("model", MODEL)
    if options["client"] == "flux-tools":
        from flux_tools import FluxClient
        from flux_tools._drivers.durations import durations_for_api

        # The emulator stands for a remote API here: its priors apply, as against Replicate's
        # (on loopback a client assumes none by default).
        durations = durations_for_api(options["base_url"], priors=True)
        with FluxClient(
            TOKEN, base_url=options["base_url"], model=model, durations=durations
        ) as client:
            url = client.generate(prompt=options["prompt"]).urls[0]
    else:
        from replicate.client import Client

        output = Client(api_token=TOKEN, base_url=options["base_url"].removesuffix("/v1")).run(
            model, input={"prompt": options["prompt"]}
        )
        url = str(getattr(output, "url", output))
    returned = time.monotonic()
    print(json.dumps({"id": url.split("/files/")[1].split("/")[0], "returned": returned}))


if __name__ == "__main__":
    main()
