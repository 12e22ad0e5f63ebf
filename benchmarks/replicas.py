"""Part 7: generations across three MCP server replicas that share one account.

Three ``flux-mcp --transport streamable-http --stateless`` replicas behind HAProxy share a Valkey
(the account's rate limits, budgets, journal) and a SeaweedFS bucket (the images); the emulator,
in its own process, enforces Replicate's 600 creates and 3000 other requests a minute (buckets
start full: a minute's burst) with run times within 3 s ± 0.5, ignoring ``Prefer: wait``
(every generation polls). After 30 warm-up generations (a deployed server has learned the model's
durations) and a pause that refills the account's buckets, real MCP clients (the SDK's
load balancer) call ``generate_image`` for every generation at once; each call waits for its
image (``FLUX_MCP_WAIT_SECONDS=180``): created under the shared limits, polled, downloaded,
stored in the bucket. Images are 256x256 and results text only (no preview), so that the
emulator's rendering and the previews do not weigh on the 2 cores the whole system shares.

Measured: wall time against the floor the create limit allows (the burst at once, the rest at
the rate, plus one run time: part 6's floor), 429s the emulator answered against every request
it counted, calls that ended in a rate-limit error, duplicates (a prompt created twice).

    .venv/bin/python benchmarks/replicas.py              # 1000 generations, about 2 minutes
    .venv/bin/python benchmarks/replicas.py --quick      # 60 generations, the harness only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.engines import (  # noqa: E402  (the repository's root, for the engines)
    free_ports,
    haproxy,
    seaweed,
    valkey,
)

PY = sys.executable
CREATES, READS, LATENCY = 600, 3000, 3.0
SESSIONS = 25
#: Generations before the measured ones (so that every replica has learned the model's
#: durations, as a deployed server has), and the pause that lets the account's buckets refill.
WARM_UP, REFILL_SECONDS = 30, 8.0


@dataclass
class Outcome:
    generations: int
    wall: float
    floor: float
    ok: int
    errors: dict[str, int]
    rate_limit_errors: int
    throttled: int
    requests: int
    duplicates: int
    creates: int

    def row(self) -> str:
        errors = ", ".join(f"{k}: {v}" for k, v in self.errors.items()) or "0"
        return (
            f"| flux-mcp, 3 replicas (Valkey, SeaweedFS, HAProxy) | {self.generations} | "
            f"{self.wall:.1f} | {self.floor:.1f} | {self.wall / self.floor:.2f} | {self.ok} | "
            f"{errors} | {self.rate_limit_errors} | {self.throttled} "
            f"({100 * self.throttled / max(1, self.requests):.2f} %) | "
            f"{self.requests / max(1, self.generations):.2f} | {self.duplicates} |"
        )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CPU: dict[str, float] = {}
TIMELINE: dict[str, float] = {}


def floor(n: int, creates_per_minute: float, burst: int, latency: float) -> float:
    """The least wall time the create limit allows (benchmarks/run.py, part 6)."""
    return max(0, n - burst) / (creates_per_minute / 60) + latency


class EmulatorProcess:
    """``emulator_proc.py`` in a subprocess, with its JSON-lines control channel."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [PY, str(HERE / "emulator_proc.py"), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        assert line[:1] == ["READY"], line
        self.base_url = line[1]

    def ask(self, op: str, **more: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"op": op, **more}) + "\n")
        self.proc.stdin.flush()
        answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@contextlib.contextmanager
def replicas(folder: Path, env: dict[str, str], count: int) -> Iterator[list[int]]:
    ports = free_ports(count)
    procs = []
    for index, port in enumerate(ports):
        out = folder / f"replica{index}"
        out.mkdir()
        log = (out / "stderr.log").open("wb")
        command = [PY, "-m", "mcp_server", "--transport", "streamable-http", "--stateless"]
        procs.append(
            subprocess.Popen(
                [*command, "--port", str(port)],
                env={**os.environ, **env, "FLUX_OUTPUT_DIR": str(out / "images")},
                cwd=out,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        )
    try:
        import httpx2

        for port in ports:
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx2.HTTPError):
                    if httpx2.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica on {port} not ready")
                time.sleep(0.2)
        yield ports
    finally:
        CPU["replicas"] = sum(cpu_seconds(p.pid) for p in procs if p.poll() is None)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


async def drive(url: str, prompts: list[str]) -> tuple[float, list[dict[str, Any]]]:
    """Every generation at once, through ``SESSIONS`` MCP client sessions."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    results: list[dict[str, Any]] = []

    async def session(number: int, prompts: list[str], started: anyio.Event) -> None:
        timeout = httpx2.Timeout(30, read=600)
        async with (
            httpx2.AsyncClient(timeout=timeout) as http,
            streamable_http_client(url, http_client=http) as streams,
            ClientSession(streams[0], streams[1]) as client,
        ):
            await client.initialize()
            await started.wait()

            async def one(prompt: str) -> None:
                try:
                    result = await client.call_tool(
                        "generate_image",
                        {"prompt": prompt, "aspect_ratio": "custom", "width": 256, "height": 256},
                    )
                    results.append(result.model_dump(mode="json", by_alias=True))
                except Exception as exc:
                    results.append({"isError": True, "content": [{"text": repr(exc)}]})

            async with anyio.create_task_group() as calls:
                for prompt in prompts:
                    calls.start_soon(one, prompt)

    started = anyio.Event()
    async with anyio.create_task_group() as group:
        for number in range(SESSIONS):
            group.start_soon(session, number, prompts[number::SESSIONS], started)
        await anyio.sleep(3)  # every session initialized
        began = time.monotonic()
        started.set()
    return time.monotonic() - began, results


def text(result: dict[str, Any]) -> str:
    return " ".join(str(c.get("text", "")) for c in result.get("content") or [])


def measure(n: int) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="flux-replicas-") as tmp:
        folder = Path(tmp)
        emulator = EmulatorProcess(
            {
                "honor_prefer_wait": False,
                "latency": LATENCY,
                "latency_jitter": 0.5,
                "rate_limits": f"creates={CREATES}/60,reads={READS}/60",
                "rng_seed": 7,
            }
        )
        try:
            with (
                valkey(folder / "valkey") as state,
                seaweed(folder / "seaweed") as store,
            ):
                env = {
                    "FLUX_BASE_URL": emulator.base_url,
                    "FLUX_API_TOKEN": "r8_benchmark-token-0123456789",
                    "FLUX_STATE_URL": state.url,
                    **store.env(),
                    "FLUX_MCP_WAIT_SECONDS": "180",
                    "FLUX_MCP_PREVIEW": "off",
                    "FLUX_MCP_CONTENT": "text",
                    "FLUX_MCP_LOG_LEVEL": "WARNING",
                    "FLUX_CACHE_DIR": str(folder / "cache"),
                }
                with replicas(folder, env, 3) as ports, haproxy(folder, ports) as lb:
                    # A deployed server knows the model's durations (learned, kept in the
                    # state server): a few generations first, then the buckets refill.
                    anyio.run(drive, lb.url, [f"warm-up {i}" for i in range(WARM_UP)])
                    time.sleep(REFILL_SECONDS)
                    emulator.ask("reset")
                    before = os.times()
                    prompts = [f"replicas benchmark image {i}" for i in range(n)]
                    wall, results = anyio.run(drive, lb.url, prompts)
                    began = time.monotonic() - wall  # when the calls were let go
                    CPU["client"] = (
                        os.times().user - before.user + os.times().system - before.system
                    )
                    CPU["valkey"] = cpu_seconds(state.proc.pid)
                    CPU["seaweedfs"] = cpu_seconds(store.proc.pid)
                    CPU["haproxy"] = cpu_seconds(lb.proc.pid)
            CPU["emulator"] = cpu_seconds(emulator.proc.pid)
            totals = emulator.ask("totals")
            ids = [(r.get("structuredContent") or {}).get("prediction_id") for r in results]
            times = emulator.ask("completed", ids=[i for i in ids if i])
            if times:
                creates = sorted(t[0] - began for t in times.values())
                done = max(t[1] or 0 for t in times.values()) - began
                TIMELINE.update(
                    first_create=creates[0],
                    create_600=creates[min(len(creates), CREATES) - 1],
                    last_create=creates[-1],
                    last_done=done,
                )
            inputs = emulator.ask("inputs")
        finally:
            emulator.close()
    errors: dict[str, int] = {}
    limited = 0
    samples: dict[str, int] = {}
    for result in results:
        if result.get("isError"):
            words = text(result)
            key = re.sub(r"[a-z0-9]{26}|replica\d", "<id>", words)[:400]
            samples[key] = samples.get(key, 0) + 1
            kind = "rate limit" if "rate limit" in words.lower() or "429" in words else "other"
            limited += kind == "rate limit"
            errors[kind] = errors.get(kind, 0) + 1
    requests = totals["creates"] + totals["gets"] + totals["cancels"] + totals["lists"]
    for words, count in sorted(samples.items(), key=lambda kv: -kv[1])[:5]:
        print(f"error x{count}: {words}", file=sys.stderr)
    return Outcome(
        generations=n,
        wall=wall,
        floor=floor(n, CREATES, CREATES, LATENCY),
        ok=sum(
            1
            for r in results
            if not r.get("isError")
            and (r.get("structuredContent") or {}).get("status") == "succeeded"
        ),
        errors=errors,
        rate_limit_errors=limited,
        throttled=totals["throttled"],
        requests=requests,
        duplicates=inputs["predictions"] - inputs["distinct"],
        creates=totals["predictions"],
    )


HEADER = (
    "| setup | generations | wall s | floor s | wall / floor | ok | errors | "
    "rate-limit errors to callers | 429s (of requests) | requests/gen | duplicates |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)
BEGIN, END = "<!-- replicas: written by benchmarks/replicas.py -->", "<!-- /replicas -->"


def one_process_figure(results: str) -> str:
    """Part 6's flux-tools row (one process under the same limits), as RESULTS.md has it."""
    section = results.split("## 6.", 1)[-1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells and cells[0] == "flux-tools" and len(cells) > 3:
            return f"{cells[3]}× the floor ({cells[1]} s against {cells[2]} s)"
    return "see part 6"


def write(outcome: Outcome, met: bool, took: float) -> None:
    """The part 7 section of benchmarks/RESULTS.md, between its markers (added if missing)."""
    path = HERE / "RESULTS.md"
    results = path.read_text(encoding="utf-8")
    block = "\n".join(
        [
            BEGIN,
            "## 7. Replicas sharing one account",
            "",
            f"{outcome.generations} generations across three `flux-mcp --stateless` replicas "
            "behind HAProxy, sharing a Valkey (rate limits, budgets, journal) and a SeaweedFS "
            "bucket (images), through real MCP clients (25 SDK sessions, every call at once), "
            f"against the emulator enforcing {CREATES} creates (burst {CREATES}) and {READS} "
            "other requests a minute, run times within 3 s ± 0.5, gateway mode; 256x256 images, "
            "text results; after 30 warm-up generations. Written by `benchmarks/replicas.py` on "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, in {took:.0f} s in all "
            "(engines started and stopped included). One process under the same limits (part 6, "
            f"2,000 generations, at most 64 in flight): {one_process_figure(results)}.",
            "",
            HEADER,
            outcome.row(),
            "",
            "| target | verdict |",
            "|---|---|",
            "| 0 rate-limit errors reach a caller, 429s ≤ 1 % of requests, wall ≤ 1.15× the "
            f"floor, every generation stored, no duplicate | **{'met' if met else 'not met'}** |",
            "",
            "CPU seconds of each part during the measured run: "
            + ", ".join(f"{k} {v:.1f}" for k, v in CPU.items())
            + ". Seconds from the start: "
            + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in TIMELINE.items())
            + ".",
            END,
        ]
    )
    if BEGIN in results and END in results:
        head, rest = results.split(BEGIN, 1)
        results = head + block + rest.split(END, 1)[1]
    else:
        marker = "\n## Targets"
        at = results.find(marker)
        results = (
            results + "\n" + block + "\n"
            if at < 0
            else results[:at] + "\n" + block + "\n" + results[at:]
        )
    path.write_text(results, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--generations", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="60 generations: the harness only")
    parser.add_argument(
        "--write", action="store_true", help="put the results in benchmarks/RESULTS.md (part 7)"
    )
    args = parser.parse_args()
    n = 60 if args.quick else args.generations
    started = time.monotonic()
    outcome = measure(n)
    print(HEADER)
    print(outcome.row())
    met = (
        outcome.rate_limit_errors == 0
        and outcome.throttled <= 0.01 * outcome.requests
        and outcome.wall <= 1.15 * outcome.floor
        and outcome.ok == n
        and outcome.duplicates == 0
    )
    print(
        f"\ntarget (0 rate-limit errors to callers, 429s <= 1 % of requests, wall <= 1.15x the "
        f"floor, all ok, no duplicate): {'met' if met else 'NOT met'}; predictions created: "
        f"{outcome.creates}; the run took {time.monotonic() - started:.0f} s in all"
    )
    print("CPU seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in CPU.items()))
    print("timeline (s from the start): " + ", ".join(f"{k} {v:.1f}" for k, v in TIMELINE.items()))
    if args.write:
        write(outcome, met, time.monotonic() - started)


if __name__ == "__main__":
    main()
