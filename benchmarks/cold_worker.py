"""A fresh process's generations: ``python benchmarks/cold_worker.py '{"client": ...,
"base_url": ..., "prompt": ...}'`` prints the prediction id and when the client returned
(``time.monotonic()``, shared by every process on the machine). flux-tools reads its learned
durations from ``FLUX_CACHE_DIR`` (empty: a first run on this machine).

Options: ``model``; ``prior`` (flux-tools: the model's usual time in seconds, in place of the
registry's ``typical_seconds``, to plan from a prior that is right or wrong by a known factor);
``prompts`` (several generations at once, in threads, one client: an earlier process that
leaves what it learned in the cache); then a JSON list is printed, one entry a prompt.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

MODEL = "black-forest-labs/flux-pro"
TOKEN = "r8_benchmark-token-0123456789"


def main() -> None:
    options: dict[str, Any] = json.loads(sys.argv[1])
    model = options.get("model", MODEL)
    prompts: list[str] = options.get("prompts") or [options["prompt"]]
    if options["client"] == "flux-tools":
        from flux_tools import FluxClient
        from flux_tools._drivers.durations import durations_for_api

        # The emulator stands for a remote API here: its priors apply, as against Replicate's
        # (on loopback a client assumes none by default).
        durations = durations_for_api(options["base_url"], priors=True)
        prior = options.get("prior")
        if prior is not None:
            durations.prior = lambda _model: float(prior)
        client = FluxClient(TOKEN, base_url=options["base_url"], model=model, durations=durations)

        def generate(prompt: str) -> str:
            return client.generate(prompt=prompt).urls[0]
    else:
        from replicate.client import Client

        official = Client(api_token=TOKEN, base_url=options["base_url"].removesuffix("/v1"))

        def generate(prompt: str) -> str:
            output = official.run(model, input={"prompt": prompt})
            return str(getattr(output, "url", output))

    def one(prompt: str) -> dict[str, Any]:
        url = generate(prompt)
        returned = time.monotonic()
        return {"id": url.split("/files/")[1].split("/")[0], "returned": returned}

    with ThreadPoolExecutor(len(prompts)) as pool:
        results = list(pool.map(one, prompts))
    if options["client"] == "flux-tools":
        client.close()
    print(json.dumps(results if options.get("prompts") else results[0]))


if __name__ == "__main__":
    main()
