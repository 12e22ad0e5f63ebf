"""The emulator in its own process, so that its CPU is never counted as a client's.

``python benchmarks/emulator_proc.py '{"honor_prefer_wait": false, ...}'`` prints one line,
``READY <base_url>``, then answers JSON commands, one a line on stdin, with one JSON line each:

- ``{"op": "completed", "ids": [...]}``: when each prediction became terminal (monotonic clock,
  which every process on a Linux machine shares), and when it was created.
- ``{"op": "requests", "ids": [...]}``: API requests (creates excluded, files excluded) naming
  each prediction: its reads, cancels and streams.
- ``{"op": "totals"}``: request counts by endpoint since the last reset (429s included).
- ``{"op": "inputs"}``: how many predictions are stored, and how many distinct inputs.
- ``{"op": "reset"}``: forget the counters.

It stops at end of input.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from flux_tools.emulator import Emulator


def main() -> None:
    options: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    with Emulator(**options) as emulator:
        print(f"READY {emulator.base_url}", flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            op = command["op"]
            answer: dict[str, Any]
            if op == "completed":
                done = emulator.stats.completed_at_monotonic
                predictions = emulator.predictions
                answer = {
                    pid: [predictions[pid].created, done.get(pid)]
                    for pid in command["ids"]
                    if pid in predictions
                }
            elif op == "requests":
                counts = dict.fromkeys(command["ids"], 0)
                for request in emulator.stats.requests:
                    parts = request.path.split("/")
                    for name in ("predictions", "stream"):  # reads, and streams opened
                        if name in parts and parts.index(name) + 1 < len(parts):
                            pid = parts[parts.index(name) + 1]
                            if pid in counts:
                                counts[pid] += 1
                answer = counts
            elif op == "totals":
                stats = emulator.stats
                answer = {
                    "creates": stats.creates,
                    "gets": stats.gets,
                    "cancels": stats.cancels,
                    "files": stats.files,
                    "lists": stats.lists,
                    "throttled": stats.throttled,
                    "predictions": stats.predictions_created,
                }
            elif op == "inputs":  # how many predictions, and how many distinct inputs
                inputs = [
                    json.dumps(p.input, sort_keys=True) for p in emulator.predictions.values()
                ]
                answer = {"predictions": len(inputs), "distinct": len(set(inputs))}

            elif op == "reset":
                emulator.reset_stats()
                answer = {}
            else:
                answer = {"error": f"unknown op {op!r}"}
            print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
