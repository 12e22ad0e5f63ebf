"""flux-tools against the official ``replicate`` client, on the same emulator, in one run.

Run it with ``scripts/bench`` (``--quick`` for the CI smoke run); see benchmarks/README.md.
The harness runs under an interpreter that has both clients installed
(``benchmarks/.venv-replicate``). The emulator always runs in its own process
(``emulator_proc.py``), and every concurrency run in a fresh worker process (``worker.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PY = sys.executable
MODEL = "black-forest-labs/flux-pro"
TOKEN = "r8_benchmark-token-0123456789"
OURS, THEIRS = "flux-tools", "replicate"


# -- the emulator process ------------------------------------------------------------------------


class EmulatorProcess:
    """``emulator_proc.py`` in a subprocess, with its JSON-lines control channel."""

    def __init__(self, **options: Any) -> None:
        self._proc = subprocess.Popen(
            [PY, str(HERE / "emulator_proc.py"), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self._proc.stdout is not None and self._proc.stdin is not None
        self._in, self._out = self._proc.stdin, self._proc.stdout
        line = self._out.readline().split()
        if not line or line[0] != "READY":
            raise RuntimeError(f"the emulator did not start: {line}")
        self.base_url: str = line[1]
        self.origin = self.base_url.removesuffix("/v1")
        self._lock = threading.Lock()

    def ask(self, op: str, **args: Any) -> Any:
        with self._lock:
            self._in.write(json.dumps({"op": op, **args}) + "\n")
            self._in.flush()
            return json.loads(self._out.readline())

    def close(self) -> None:
        self._in.close()
        self._proc.wait(timeout=60)


@contextmanager
def emulator(**options: Any) -> Iterator[EmulatorProcess]:
    proc = EmulatorProcess(**options)
    try:
        yield proc
    finally:
        proc.close()


# -- statistics ----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """p10–p90, the spread shown next to every median."""
    if len(values) < 2:
        return "n/a"
    ordered = sorted(values)
    low = ordered[int(0.1 * (len(ordered) - 1))]
    high = ordered[round(0.9 * (len(ordered) - 1))]
    return f"{low * 1000:.0f}–{high * 1000:.0f}"


def ms(value: float) -> str:
    return f"{value * 1000:.1f}"


# -- 1. added latency ----------------------------------------------------------------------------


@dataclass
class Sample:
    client: str
    duration: float
    prediction_id: str
    returned: float
    warmup: bool
    added: float = 0.0
    requests: int = 0


@dataclass
class LatencyCase:
    mode: str  # "sync" (Prefer: wait honoured) or "gateway" (ignored)
    mean: float
    samples: list[Sample] = field(default_factory=list)

    def of(self, client: str) -> list[Sample]:
        return [s for s in self.samples if s.client == client and not s.warmup]


def _flux_generate(base_url: str) -> Callable[[str], str]:
    from flux_tools import FluxClient
    from flux_tools._drivers.durations import durations_for_api

    # The emulator stands for a remote API: its priors apply (none by default on loopback).
    durations = durations_for_api(base_url, priors=True)
    client = FluxClient(TOKEN, base_url=base_url, model=MODEL, durations=durations)
    return lambda prompt: client.generate(prompt=prompt).urls[0]


def _replicate_generate(origin: str) -> Callable[[str], str]:
    from replicate.client import Client

    client = Client(api_token=TOKEN, base_url=origin)

    def generate(prompt: str) -> str:
        output = client.run(MODEL, input={"prompt": prompt})
        url = getattr(output, "url", output)  # a FileOutput for https URLs
        if not isinstance(url, str):
            raise RuntimeError(f"replicate.run returned {output!r}")
        return url

    return generate


def measure_latency(
    mode: str, mean: float, warmup: int, count: int, lanes: int, rng: random.Random
) -> LatencyCase:
    """``warmup + count`` generation times, each run by both clients one after the other.

    Each lane alternates which client goes first (ABBA), and lanes start on opposite orders,
    so neither client is systematically first. One client object per case and per library,
    shared by the lanes, as an application would; ours learns from every lane's predictions.
    """
    case = LatencyCase(mode, mean)
    with emulator(honor_prefer_wait=mode == "sync", image_scale=0.25, rng_seed=1) as emu:
        clients = {OURS: _flux_generate(emu.base_url), THEIRS: _replicate_generate(emu.origin)}
        durations = [mean + rng.uniform(-0.5, 0.5) for _ in range(warmup + count)]
        lock = threading.Lock()

        def lane(index: int, first: int, last: int) -> None:
            for k in range(first + index, last, lanes):
                order = [OURS, THEIRS] if (k // lanes + index) % 2 == 0 else [THEIRS, OURS]
                for name in order:
                    prompt = f"benchmark {mode} {k} [emulator:latency={durations[k]:.3f}]"
                    url = clients[name](prompt)
                    returned = time.monotonic()
                    pid = url.split("/files/")[1].split("/")[0]
                    with lock:
                        case.samples.append(
                            Sample(name, durations[k], pid, returned, warmup=k < warmup)
                        )

        # Warm-up first, all of it, then the measured generations.
        for first, last in ((0, warmup), (warmup, warmup + count)):
            batch = durations[first:last]
            if not batch:
                continue
            with ThreadPoolExecutor(lanes) as pool:
                futures = [pool.submit(lane, i, first, last) for i in range(min(lanes, len(batch)))]
                for future in futures:
                    future.result()
        ids = [s.prediction_id for s in case.samples]
        times = emu.ask("completed", ids=ids)
        counts = emu.ask("requests", ids=ids)
    for s in case.samples:
        _created, completed = times[s.prediction_id]
        s.added = s.returned - completed
        s.requests = 1 + counts[s.prediction_id]  # the create, then every read of it
    return case


# -- 2. concurrency ------------------------------------------------------------------------------


@dataclass
class BurstResult:
    client: str
    mode: str
    n: int
    wall: float
    cpu: float
    rss_mb: float
    errors: dict[str, int]
    requests_per_generation: float
    added: list[float]


def run_burst(emu: EmulatorProcess, client: str, mode: str, n: int, warmup: int) -> BurstResult:
    emu.ask("reset")
    options = {"client": client, "base_url": emu.base_url, "n": n, "warmup": warmup}
    # This emulator enforces no rate limit (part 6 has those): flux-tools is told so, as the
    # owner of an account with such limits would configure it (in Replicate's proportion of
    # five reads per create, which prices its polls).
    unlimited = {"FLUX_CREATES_PER_MINUTE": "1000000", "FLUX_READS_PER_MINUTE": "5000000"}
    out = subprocess.run(
        [PY, str(HERE / "worker.py"), json.dumps(options)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, **unlimited},
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker {client} failed:\n{out.stderr[-3000:]}")
    data = json.loads(out.stdout)
    totals = emu.ask("totals")
    returned: dict[str, float] = data["returned"]
    times = emu.ask("completed", ids=list(returned))
    added = [returned[pid] - times[pid][1] for pid in returned if times.get(pid)]
    requests = totals["creates"] + totals["gets"] + totals["cancels"]
    generations = n + warmup
    return BurstResult(
        client,
        mode,
        n,
        data["wall"],
        data["cpu"],
        data["maxrss_mb"],
        data["errors"],
        requests / generations,
        added,
    )


def measure_concurrency(sizes: Sequence[int], warmup: int) -> list[BurstResult]:
    results = []
    for mode in ("sync", "gateway"):
        with emulator(latency=2.0, honor_prefer_wait=mode == "sync", image_scale=0.25) as emu:
            for i, n in enumerate(sizes):
                order = [OURS, THEIRS] if i % 2 == 0 else [THEIRS, OURS]
                for client in order:
                    results.append(run_burst(emu, client, mode, n, warmup))
                    print(f"  {mode} {n} {client}: {results[-1].wall:.1f} s", file=sys.stderr)
    return results


# -- 3. the MCP server ---------------------------------------------------------------------------


async def _cold_start(command: list[str], env: dict[str, str]) -> float:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=str(ROOT))
    started = time.monotonic()
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = await session.list_tools()
        elapsed = time.monotonic() - started
        assert tools.tools, "the server listed no tools"
    return elapsed


async def _tool_calls(
    env: dict[str, str], emu: EmulatorProcess, count: int, run_time: float
) -> list[tuple[float, float]]:
    """(call time, emulator run time) of ``count`` generate_image calls, preview included."""
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    params = StdioServerParameters(command=PY, args=["-m", "mcp_server"], env=env, cwd=str(ROOT))
    out = []
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for i in range(count + 1):  # the first call warms the connection pool up: not counted
            prompt = f"a red fox in snow, call {i} [emulator:latency={run_time}]"
            started = time.monotonic()
            result = await session.call_tool("generate_image", {"prompt": prompt})
            elapsed = time.monotonic() - started
            if getattr(result, "is_error", None) or getattr(result, "isError", None):
                raise RuntimeError(f"generate_image failed: {result.content}")
            if not any(getattr(c, "type", "") == "image" for c in result.content):
                raise RuntimeError("generate_image returned no preview")
            structured = (
                getattr(result, "structured_content", None)
                or getattr(result, "structuredContent", None)
                or {}
            )
            pid = str(structured.get("prediction_id", ""))
            created, completed = emu.ask("completed", ids=[pid])[pid]
            if i:
                out.append((elapsed, completed - created))
    return out


def _render_time(emu: EmulatorProcess, samples: int) -> list[float]:
    """The emulator's own time to render and serve one full-size output file, which the MCP
    server's download waits for but a real CDN would not spend."""
    import httpx2

    times = []
    with httpx2.Client(timeout=60) as http:
        for i in range(samples):
            reply = http.post(
                f"{emu.base_url}/models/{MODEL}/predictions",
                json={"input": {"prompt": f"a red fox in snow, render {i} [emulator:latency=0]"}},
                headers={"Authorization": f"Bearer {TOKEN}", "Prefer": "wait=10"},
            )
            url = reply.json()["output"]
            started = time.monotonic()
            http.get(url).raise_for_status()
            times.append(time.monotonic() - started)
    return times


@dataclass
class McpResult:
    cold_ours: list[float]
    cold_hello: list[float]
    call_overhead: list[float]
    render: list[float]


def measure_mcp(starts: int, calls: int) -> McpResult:
    with emulator(image_scale=1.0) as emu, tempfile.TemporaryDirectory() as out_dir:
        env = {
            **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")},
            "FLUX_BASE_URL": emu.base_url,
            "FLUX_API_TOKEN": TOKEN,
            "FLUX_OUTPUT_DIR": out_dir,
            "FLUX_MCP_LOG_LEVEL": "WARNING",
            # The SDK's client calls itself "mcp", which gets text only by default: the
            # preview is part of what is measured.
            "FLUX_MCP_CONTENT": "text+links+preview",
        }
        ours_cmd = [PY, "-m", "mcp_server"]
        hello_cmd = [PY, str(HERE / "hello_mcp.py")]
        cold_ours: list[float] = []
        cold_hello: list[float] = []
        for i in range(starts):
            pair = [(ours_cmd, cold_ours), (hello_cmd, cold_hello)]
            for command, bucket in pair if i % 2 == 0 else reversed(pair):
                bucket.append(asyncio.run(_cold_start(command, env)))
        calls_made = asyncio.run(_tool_calls(env, emu, calls, run_time=1.0))
        render = _render_time(emu, max(3, calls))
    return McpResult(
        cold_ours,
        cold_hello,
        [elapsed - run for elapsed, run in calls_made],
        render,
    )


# -- 4. import cost ------------------------------------------------------------------------------

IMPORTS = {
    "python -c pass (baseline)": [PY, "-c", "pass"],
    "import flux_tools": [PY, "-c", "import flux_tools"],
    "import flux_tools.langchain": [PY, "-c", "import flux_tools.langchain"],
    "python -m mcp_server --help": [PY, "-m", "mcp_server", "--help"],
    "import replicate (official client)": [PY, "-c", "import replicate"],
}
HEAVY = ("langchain_core", "mcp", "PIL")


def measure_imports(repeat: int) -> tuple[dict[str, list[float]], list[str]]:
    times: dict[str, list[float]] = {name: [] for name in IMPORTS}
    for _ in range(repeat):
        for name, command in IMPORTS.items():
            started = time.monotonic()
            subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
            times[name].append(time.monotonic() - started)
    probe = f"import sys, flux_tools; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([PY, "-c", probe], check=True, capture_output=True, text=True, cwd=ROOT)
    loaded = [m for m in out.stdout.strip().split(",") if m]
    return times, loaded


# -- 5. many generations under the account's limits, a batch killed and rerun, cold start --------


@dataclass
class LimitsResult:
    client: str
    n: int
    wall: float
    floor: float
    ok: int
    errors: dict[str, int]
    throttled: int
    requests_per_generation: float
    duplicates: int
    predictions: int


def _limits_options(rate_limits: str, latency: float) -> dict[str, Any]:
    # Generation times drawn uniformly within 3 s ± 0.5; a gateway (Prefer: wait ignored), so
    # every generation polls and the read budget counts. Small images: the emulator renders
    # them on the same two cores.
    return {
        "honor_prefer_wait": False,
        "latency": latency,
        "latency_jitter": latency / 6,
        "image_scale": 0.05,
        "rate_limits": rate_limits,
        "rng_seed": 7,
    }


def _floor(n: int, creates_per_minute: float, burst: int, latency: float = 3.0) -> float:
    """The least wall time the create limit allows: the burst at once, the rest at the rate,
    and the last generation's run time."""
    return max(0, n - burst) / (creates_per_minute / 60) + latency


def measure_limits(
    n: int, concurrency: int, creates: int, reads: int, burst: int, latency: float
) -> list[LimitsResult]:
    rate_limits = f"creates={creates}/60:burst={burst},reads={reads}/60"
    results = []
    for client in (OURS, THEIRS):
        with (
            emulator(**_limits_options(rate_limits, latency)) as emu,
            tempfile.TemporaryDirectory() as out,
        ):
            env_cache = tempfile.mkdtemp(prefix="flux-cache-")
            options = {
                "client": client,
                "base_url": emu.base_url,
                "n": n,
                "concurrency": concurrency,
                "out": out,
            }
            done = subprocess.run(
                [PY, str(HERE / "batch_worker.py"), json.dumps(options)],
                capture_output=True,
                text=True,
                cwd=ROOT,
                timeout=3600,
                env={
                    **os.environ,
                    "FLUX_CACHE_DIR": env_cache,
                    # The account's limits, as its owner would configure them.
                    "FLUX_CREATES_PER_MINUTE": str(creates),
                    "FLUX_READS_PER_MINUTE": str(reads),
                },
            )
            if done.returncode != 0:
                raise RuntimeError(f"batch worker {client} failed:\n{done.stderr[-3000:]}")
            data = json.loads(done.stdout)
            totals = emu.ask("totals")
            inputs = emu.ask("inputs")
        requests = totals["creates"] + totals["gets"] + totals["cancels"] + totals["lists"]
        results.append(
            LimitsResult(
                client,
                n,
                data["wall"],
                _floor(n, creates, burst, latency),
                data["ok"],
                data["errors"],
                totals["throttled"],
                requests / n,
                inputs["predictions"] - inputs["distinct"],
                inputs["predictions"],
            )
        )
        print(f"  limits {client}: {results[-1].wall:.1f} s", file=sys.stderr)
    return results


@dataclass
class KillResult:
    n: int
    saved_at_kill: int
    created_at_kill: int
    unanswered_at_kill: int
    rerun_created: int
    recovered: int
    skipped: int
    predictions: int
    creates_sent: int
    duplicates: int
    done: int


def _ledger_events(path: Path) -> list[dict[str, Any]]:
    found = []
    if path.exists():
        for line in path.read_text().splitlines():
            with suppress(ValueError):
                found.append(json.loads(line))
    return found


def measure_kill_rerun(
    n: int, concurrency: int, creates: int, reads: int, burst: int, latency: float
) -> KillResult:
    """``flux-tools batch`` killed with SIGKILL once half its rows are saved, then run again."""
    rate_limits = f"creates={creates}/60:burst={burst},reads={reads}/60"
    with (
        emulator(**_limits_options(rate_limits, latency)) as emu,
        tempfile.TemporaryDirectory() as tmp,
    ):
        rows = Path(tmp) / "rows.jsonl"
        rows.write_text("".join(json.dumps({"prompt": f"kill {i}"}) + "\n" for i in range(n)))
        out = Path(tmp) / "out"
        ledger = out / "flux-batch.jsonl"
        env = {
            **os.environ,
            "FLUX_BASE_URL": emu.base_url,
            "FLUX_API_TOKEN": TOKEN,
            "FLUX_CACHE_DIR": str(Path(tmp) / "cache"),
            "FLUX_CREATES_PER_MINUTE": str(creates),
            "FLUX_READS_PER_MINUTE": str(reads),
        }
        cmd = [PY, "-m", "flux_tools", "batch", str(rows), "--out", str(out)]
        cmd += ["--concurrency", str(concurrency)]
        proc = subprocess.Popen(
            cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        while True:
            events = _ledger_events(ledger)
            if sum(e.get("event") == "saved" for e in events) >= n // 2 or proc.poll() is not None:
                break
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        events = _ledger_events(ledger)
        saved = sum(e.get("event") == "saved" for e in events)
        created = emu.ask("totals")["predictions"]
        answered = {e["key"] for e in events if e.get("event") == "created"}
        unanswered = len({e["key"] for e in events if e.get("event") == "intent"} - answered)
        done = subprocess.run([*cmd, "--json"], env=env, cwd=ROOT, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"the rerun failed:\n{done.stderr[-3000:]}")
        report = json.loads(done.stdout)
        totals, inputs = emu.ask("totals"), emu.ask("inputs")
    return KillResult(
        n,
        saved,
        created,
        unanswered,
        report["created"],
        report["recovered"],
        report["skipped"],
        totals["predictions"],
        totals["creates"] - totals["throttled"],
        inputs["predictions"] - inputs["distinct"],
        report["done"],
    )


@dataclass
class ColdResult:
    variant: str  # "flux-tools, empty cache", "flux-tools, informed", "replicate"
    added: list[float]
    requests: list[int]


def measure_cold(
    samples: int, typical: float, rng: random.Random, model: str = MODEL
) -> list[ColdResult]:
    """A fresh process's first generation, generation times drawn within ±10 % of the model's
    usual time (the registry's ``typical_seconds``, flux-tools' prior)."""
    variants = {
        "flux-tools, empty cache": OURS,
        "flux-tools, cache of an earlier process": OURS,
        "replicate": THEIRS,
    }
    results = {name: ColdResult(name, [], []) for name in variants}
    with emulator(honor_prefer_wait=False, image_scale=0.05, rng_seed=3) as emu:
        informed = tempfile.mkdtemp(prefix="flux-cache-")
        # The earlier process: three generations, whose durations it leaves in the cache.
        for i in range(3):
            d = typical * rng.uniform(0.9, 1.1)
            prompt = f"earlier {i} [emulator:latency={d:.3f}]"
            options = {"client": OURS, "base_url": emu.base_url, "prompt": prompt, "model": model}
            subprocess.run(
                [PY, str(HERE / "cold_worker.py"), json.dumps(options)],
                check=True,
                capture_output=True,
                cwd=ROOT,
                env={**os.environ, "FLUX_CACHE_DIR": informed},
            )
        jobs = []
        for k in range(samples):
            d = typical * rng.uniform(0.9, 1.1)
            for name, client in variants.items():
                cache = informed if "earlier" in name else tempfile.mkdtemp(prefix="flux-cache-")
                prompt = f"cold {k} {name} [emulator:latency={d:.3f}]"
                options = {
                    "client": client,
                    "base_url": emu.base_url,
                    "prompt": prompt,
                    "model": model,
                }
                jobs.append((name, options, cache))

        def run_one(job: tuple[str, dict[str, Any], str]) -> tuple[str, dict[str, Any]]:
            name, options, cache = job
            done = subprocess.run(
                [PY, str(HERE / "cold_worker.py"), json.dumps(options)],
                check=True,
                capture_output=True,
                text=True,
                cwd=ROOT,
                env={**os.environ, "FLUX_CACHE_DIR": cache},
            )
            return name, json.loads(done.stdout)

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(run_one, jobs))
        ids = [o["id"] for _, o in outcomes]
        times = emu.ask("completed", ids=ids)
        counts = emu.ask("requests", ids=ids)
    for name, o in outcomes:
        results[name].added.append(o["returned"] - times[o["id"]][1])
        results[name].requests.append(1 + counts[o["id"]])
    return list(results.values())


# -- the report ----------------------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ratio(ours: float, theirs: float) -> float:
    return ours / theirs if theirs else float("inf")


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(
    args: argparse.Namespace,
    latency: list[LatencyCase],
    bursts: list[BurstResult],
    mcp: McpResult,
    imports: dict[str, list[float]],
    loaded: list[str],
    seconds: float,
    part5: tuple[list[str], list[tuple[str, bool, str]]] | None = None,
) -> str:
    lines: list[str] = []
    add = lines.append
    mode = "quick (smoke test: too few samples to judge the targets)" if args.quick else "full"
    add("# Benchmarks: flux-tools against the official `replicate` client\n")
    add(
        f"Written by `scripts/bench{' --quick' if args.quick else ''}` on "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, run: {mode}, in {seconds / 60:.1f} "
        "minutes. Both clients ran against the same emulator in the same run, alternating.\n"
    )
    add(
        f"Machine: {_cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}. Versions: flux-tools "
        f"{_version('flux-tools')}, replicate {_version('replicate')}, httpx "
        f"{_version('httpx')}, httpx2 {_version('httpx2')}, mcp {_version('mcp')}.\n"
    )
    add(
        "Medians, with the spread as p10–p90 in brackets. *Added latency*: from the emulator "
        "marking the prediction succeeded to the client returning its URL (one monotonic clock "
        "for all processes). *Requests*: API requests per generation (the create and every "
        "read of the prediction; no download).\n"
    )
    targets: list[tuple[str, bool, str]] = []

    add("## 1. Added latency and requests per generation\n")
    add(
        "Generation times drawn at random within ±0.5 s of the nominal time (the same drawn "
        "time for both clients). Sync: the server honours `Prefer: wait`; gateway: it ignores "
        "it, so the clients poll. flux-tools learned the model's durations from the warm-up "
        "generations (the official client ran as many).\n"
    )
    add(
        "| mode | generation time | n | flux-tools added ms | replicate added ms | "
        "latency ratio | flux-tools requests | replicate requests | requests ratio |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    for case in latency:
        ours, theirs = case.of(OURS), case.of(THEIRS)
        la, lb = [s.added for s in ours], [s.added for s in theirs]
        ra = statistics.mean(s.requests for s in ours)
        rb = statistics.mean(s.requests for s in theirs)
        lat_ratio, req_ratio = _ratio(median(la), median(lb)), _ratio(ra, rb)
        add(
            f"| {case.mode} | {case.mean:g} s ± 0.5 | {len(ours)} | {ms(median(la))} "
            f"({spread(la)}) | {ms(median(lb))} ({spread(lb)}) | {lat_ratio:.2f} | "
            f"{ra:.2f} | {rb:.2f} | {req_ratio:.2f} |"
        )
        if case.mode == "gateway":
            targets.append(
                (
                    f"Gateway {case.mean:g} s: added latency ≤ 0.4× replicate's",
                    lat_ratio <= 0.4,
                    f"{lat_ratio:.2f}× ({ms(median(la))} vs {ms(median(lb))} ms)",
                )
            )
            targets.append(
                (
                    f"Gateway {case.mean:g} s: requests ≤ 0.5× replicate's",
                    req_ratio <= 0.5,
                    f"{req_ratio:.2f}× ({ra:.2f} vs {rb:.2f})",
                )
            )
        else:
            one = all(s.requests == 1 for s in ours)
            targets.append(
                (
                    f"Sync {case.mean:g} s: one request, added latency ≤ 10 ms",
                    one and median(la) <= 0.010,
                    f"{ra:.2f} requests, {ms(median(la))} ms (p90 {spread(la).split('–')[1]} ms)",
                )
            )
    add("")

    add("## 2. Many generations in flight (async clients, emulator latency 2 s)\n")
    add(
        "Each run is a fresh worker process importing only its client; after "
        f"{args.burst_warmup} unmeasured warm-up generations, all generations start at once. "
        "CPU: the worker's user+system seconds during the burst. RSS: the worker's peak. "
        "The official client is used as documented (`async_run` with a default `Client`).\n"
    )
    add(
        "| mode | in flight | client | wall s | CPU s | peak RSS MB | errors | requests/gen | "
        "added latency ms |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    for b in bursts:
        errors = ", ".join(f"{k}: {v}" for k, v in b.errors.items()) or "0"
        add(
            f"| {b.mode} | {b.n} | {b.client} | {b.wall:.1f} | {b.cpu:.2f} | {b.rss_mb:.0f} | "
            f"{errors} | {b.requests_per_generation:.2f} | {ms(median(b.added))} "
            f"({spread(b.added)}) |"
        )
    add("")
    biggest = max(b.n for b in bursts)
    for mode_name in ("sync", "gateway"):
        pair = {b.client: b for b in bursts if b.n == biggest and b.mode == mode_name}
        if len(pair) != 2:
            continue
        ours_b, theirs_b = pair[OURS], pair[THEIRS]
        cpu_ratio = _ratio(ours_b.cpu, theirs_b.cpu)
        targets.append(
            (
                f"{biggest} in flight ({mode_name}): no errors, CPU ≤ 0.5× replicate's, "
                "RSS < 200 MB",
                not ours_b.errors and cpu_ratio <= 0.5 and ours_b.rss_mb < 200,
                f"{sum(ours_b.errors.values())} errors, CPU {cpu_ratio:.2f}× "
                f"({ours_b.cpu:.2f} vs {theirs_b.cpu:.2f} s), RSS {ours_b.rss_mb:.0f} MB",
            )
        )

    add("## 3. The MCP server\n")
    add(
        "Cold start: spawn over stdio until `tools/list` is answered, through the SDK's own "
        "stdio client, against a hello-world server with one tool on the same SDK "
        "(`benchmarks/hello_mcp.py`), alternating. Per call: a `generate_image` call's time "
        "minus the emulator's run time of its prediction (1 s), preview included; the "
        "emulator's own time to render and serve the full-size file is shown apart (a CDN "
        "does not spend it).\n"
    )
    cold_ratio = _ratio(median(mcp.cold_ours), median(mcp.cold_hello))
    add("| measure | median ms | p10–p90 ms | n |")
    add("|---|---|---|---|")
    add(
        f"| cold start, flux MCP server | {ms(median(mcp.cold_ours))} | "
        f"{spread(mcp.cold_ours)} | {len(mcp.cold_ours)} |"
    )
    add(
        f"| cold start, hello-world server | {ms(median(mcp.cold_hello))} | "
        f"{spread(mcp.cold_hello)} | {len(mcp.cold_hello)} |"
    )
    add(
        f"| generate_image, server time (emulator run time subtracted) | "
        f"{ms(median(mcp.call_overhead))} | {spread(mcp.call_overhead)} | "
        f"{len(mcp.call_overhead)} |"
    )
    add(
        f"| of which: the emulator rendering and serving the 1 MP file | "
        f"{ms(median(mcp.render))} | {spread(mcp.render)} | {len(mcp.render)} |"
    )
    add("")
    targets.append(
        (
            "MCP cold start ≤ 1.3× the hello-world server's",
            cold_ratio <= 1.3,
            f"{cold_ratio:.2f}× ({ms(median(mcp.cold_ours))} vs {ms(median(mcp.cold_hello))} ms)",
        )
    )

    add("## 4. Import cost\n")
    add("Wall time of a fresh interpreter running the command.\n")
    add("| command | median ms | p10–p90 ms |")
    add("|---|---|---|")
    for name, values in imports.items():
        add(f"| `{name}` | {ms(median(values))} | {spread(values)} |")
    add("")
    add(f"`import flux_tools` loads: {', '.join(loaded) or 'none'} of {', '.join(HEAVY)}.\n")
    targets.append(
        (
            "`import flux_tools` loads neither langchain_core, mcp nor PIL",
            not loaded,
            ", ".join(loaded) or "none loaded",
        )
    )

    if part5 is not None:
        lines.extend(part5[0])
        targets.extend(part5[1])

    add("## Targets\n")
    if args.quick:
        add("_Quick mode: the verdicts below rest on a handful of samples._\n")
    add("| target | verdict | measured |")
    add("|---|---|---|")
    for name, ok, detail in targets:
        add(f"| {name} | {_verdict(ok)} | {detail} |")
    add("")
    add(NOTES)
    return "\n".join(lines)


def limits_report(
    under: list[LimitsResult],
    killed: KillResult,
    cold: list[ColdResult],
    limits: tuple[int, int, int, int, int, float],
    typical: float,
    cold_model: str,
) -> tuple[list[str], list[tuple[str, bool, str]]]:
    n, concurrency, creates, reads, burst, latency = limits
    lines: list[str] = []
    targets: list[tuple[str, bool, str]] = []
    add = lines.append
    add("## 6. Thousands of images within the account's limits\n")
    add(
        f"{n} generations, at most {concurrency} in flight, against the emulator enforcing "
        f"{creates} creates (burst {burst}) and {reads} other requests a minute, with its real "
        f"`ratelimit-*` headers and 429s; generation times drawn within {latency:g} s "
        f"± {latency / 6:.2g}, flux-pro rows, gateway mode "
        "(every generation polls). flux-tools runs its batch (`agenerate_many`: ledger, "
        "downloads included); the official client runs `async_run` per row under a semaphore "
        "of the same size, no downloads. *Floor*: the least wall time the create limit allows "
        "(the burst at once, the rest at the rate, plus one run time). Each client in a fresh "
        "process, each against a fresh emulator.\n"
    )
    add(
        "| client | wall s | floor s | wall / floor | generations ok | errors | 429s | "
        "requests/gen | duplicates |"
    )
    add("|---|---|---|---|---|---|---|---|---|")
    for r in under:
        errors = ", ".join(f"{k}: {v}" for k, v in r.errors.items()) or "0"
        add(
            f"| {r.client} | {r.wall:.1f} | {r.floor:.1f} | {r.wall / r.floor:.2f} | {r.ok} | "
            f"{errors} | {r.throttled} | {r.requests_per_generation:.2f} | {r.duplicates} |"
        )
    add("")
    ours = next(r for r in under if r.client == OURS)
    theirs = next(r for r in under if r.client == THEIRS)
    targets.append(
        (
            f"{n} under the limits: every generation succeeds, no duplicate",
            ours.ok == n and not ours.errors and ours.duplicates == 0 and ours.predictions == n,
            f"{ours.ok}/{n} ok, {ours.duplicates} duplicates, {ours.predictions} predictions",
        )
    )
    targets.append(
        (
            f"{n} under the limits: wall ≤ 1.25× the floor, 429s ≤ 1 % of requests",
            ours.wall <= 1.25 * ours.floor
            and ours.throttled <= 0.01 * ours.requests_per_generation * n,
            f"{ours.wall / ours.floor:.2f}× the floor, {ours.throttled} 429s "
            f"(replicate: {theirs.throttled} 429s, {theirs.ok}/{n} ok, "
            f"{theirs.wall / theirs.floor:.2f}× the floor)",
        )
    )

    add("### The same batch killed with SIGKILL at half, then run again\n")
    add(
        f"`flux-tools batch` on {killed.n} rows, killed (SIGKILL) once {killed.n // 2} rows "
        "were saved, then the same command run again.\n"
    )
    add("| measure | value |")
    add("|---|---|")
    for name, value in (
        ("rows", killed.n),
        ("saved before the kill", killed.saved_at_kill),
        ("predictions created before the kill", killed.created_at_kill),
        (
            "creates in flight at the kill (intent, no answer in the ledger)",
            killed.unanswered_at_kill,
        ),
        ("of those, found among the account's predictions by the rerun", killed.recovered),
        ("rows skipped by the rerun (already saved)", killed.skipped),
        ("predictions created by the rerun", killed.rerun_created),
        ("predictions created in all", killed.predictions),
        ("creates accepted in all", killed.creates_sent),
        ("duplicates (same input twice)", killed.duplicates),
        ("rows done after the rerun", killed.done),
    ):
        add(f"| {name} | {value} |")
    add("")
    targets.append(
        (
            "Batch killed at half and rerun: duplicates 0, creates = rows, all done",
            killed.duplicates == 0
            and killed.predictions == killed.n
            and killed.creates_sent == killed.n
            and killed.done == killed.n,
            f"{killed.duplicates} duplicates, {killed.predictions} predictions and "
            f"{killed.creates_sent} creates for {killed.n} rows, {killed.done} done",
        )
    )

    add("### Cold start: a fresh process's first generation\n")
    add(
        f"Gateway mode; generation times drawn within ±10 % of {cold_model.split('/')[1]}'s "
        f"usual time ({typical:g} s, the registry's `typical_seconds`: flux-tools' prior). "
        "One process per "
        "generation. *Empty cache*: the first run on a machine (the prior alone); *cache of an "
        "earlier process*: a process that ran three generations before (`durations.json`).\n"
    )
    add("| client | n | added ms | requests |")
    add("|---|---|---|---|")
    for c in cold:
        add(
            f"| {c.variant} | {len(c.added)} | {ms(median(c.added))} ({spread(c.added)}) | "
            f"{statistics.mean(c.requests):.2f} |"
        )
    add("")
    official = next(c for c in cold if c.variant == THEIRS)
    for c in cold:
        if c.variant == THEIRS:
            continue
        lat = _ratio(median(c.added), median(official.added))
        req = _ratio(statistics.mean(c.requests), statistics.mean(official.requests))
        targets.append(
            (
                f"Cold start ({c.variant}): ≤ 0.5× replicate's requests, latency ≤ 1.0×",
                req <= 0.5 and lat <= 1.0,
                f"{req:.2f}× requests, {lat:.2f}× latency ({ms(median(c.added))} vs "
                f"{ms(median(official.added))} ms)",
            )
        )
    return lines, targets


NOTES = """## Notes on what cannot be met

**Gateway mode at 2 s: latency ≤ 0.4× and requests ≤ 0.5× together cannot be had by polling.**
The official client polls every 0.5 s: a 2 s (± 0.5) generation costs it about 5.5 requests
(the create and ~4.5 reads) for a median added latency of ~250 ms. Half its requests is ~2.8:
one create and fewer than two reads on average. Whatever the times of those reads, a median added
latency ≤ 100 ms needs at least half of the predictions to finish within 100 ms before some
read; with durations spread over a 1 s band, that takes five reads covering the band (each
covers 10 % of it), of which a prediction sees three on average: four requests or more. flux-tools
keeps the latency target there and spends nearly as many requests (see the table). With a
constant 25 ms price per request both targets were met together from 5 s on (the previous
RESULTS); with the price set by the read budget, see "Warm polls" below.

**Many in flight, read with care.** The official client's default connection pool holds 100
connections and waits 10 s for one: with `Prefer: wait` honoured each create holds a connection
for the whole generation, so at 1000 in flight the creates queued past the first ~500 fail with
`PoolTimeout` (before being sent: hence under one request per generation), and its CPU time
includes that churn. flux-tools opens as many connections as it needs. In gateway mode the
official client's 0.5 s polls, 2000 reads a second at 1000 in flight, saturate the emulator
sharing the 2 cores. Under these bursts the added latency of both clients is dominated by the
emulator and the client competing for the same two cores (1000 predictions end in the same
instant), not by the poll schedule; part 1 measures that.

**Within the account's limits (part 6).** The official client sends its creates as fast as its
semaphore allows and does not retry a 429 on a create: past the account's burst most of its
generations fail with `ReplicateError` (its wall time is short because they fail fast). flux-tools
books a slot in the account's create and read budgets for every request (`flux_tools/_limits.py`):
it learns the account's burst from `ratelimit-remaining`, so its wall time follows the create
limit. Its first wave of generations (as many as run at once) is planned from the registry's
usual time of flux-pro (10 s) while the emulator answers in 3 s: those poll late, until the
first durations are seen (they are kept in the cache folder for the next process). The killed
batch: the creates in flight at the kill are the ledger's intents without an answer; the rerun
lists the account's predictions and adopts those it finds with the row's exact input; the
others never reached the API and are created. (Creates answer in milliseconds here: a kill
rarely finds one in flight; `tests/client/test_batch.py` covers that case.)

**Warm polls priced by the read budget (3 s and 20 s).** A generation's polls are planned to
spend at most 2.5 reads (half of the 3000 / 600 reads the account allows per create), so that
any number in flight stays within the read budget; the plan buys the least expected latency
with them. On an idle machine that plan gives about 0.37× the official client's latency with
0.48× its requests at 3 s (`expected_reads` on the plan, and the emulator in-process); in
these runs, with the client, the official client and the emulator sharing two loaded cores,
the reads planned 50-70 ms apart near the end of the band miss by the event loops' lag, and a
miss costs a back-off read and latency: both 3 s targets are missed. At 20 s the price set by
that allowance is dearer than the constant 25 ms it replaces (whose 5.4 requests met the 20 s
latency target in the previous RESULTS): fewer requests (0.11×), more latency.

**How flux-tools polls** (`flux_tools/_policy.py`): from the durations of the predictions it has
seen for a model (server timestamps, last 32), it plans the reads that minimise the expected
added latency plus a price per request, the least price at which the plan spends no more reads
than the account's read budget allows a generation (`RateLimiter.poll_reads`: 2.5 by default),
by dynamic programming over the smoothed distribution: none before the band where
predictions of that model finish (except one every 15 s for progress), denser as the end of
the band nears. Nothing about the emulator is
built in: the band, its width and its place are learned; a model with a wider spread of
durations gets sparser reads.
"""


def _keep_sections(output: Path, text: str) -> str:
    """Sections other harnesses write into the same file (``<!-- NAME:begin -->`` to
    ``<!-- NAME:end -->``, e.g. ``tools_list.py``'s) are kept as they were."""
    try:
        old = output.read_text()
    except OSError:
        return text
    kept = []
    for match in re.finditer(r"<!-- ([\w-]+):begin -->.*?<!-- \1:end -->", old, re.DOTALL):
        if match.group(0) not in text:
            kept.append(match.group(0))
    return text if not kept else text.rstrip("\n") + "\n\n" + "\n\n".join(kept) + "\n"


# -- main ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="CI smoke run: few samples")
    parser.add_argument("--output", type=Path, default=None, help="markdown file to write")
    parser.add_argument("--seed", type=int, default=2025)
    parser.add_argument(
        "--batch-rows", type=int, default=2000, help="rows of part 6's batches (full mode)"
    )
    args = parser.parse_args(argv)
    # Our clients start from what this run teaches them, never from the user's cache.
    os.environ["FLUX_CACHE_DIR"] = tempfile.mkdtemp(prefix="flux-bench-cache-")
    output = args.output or HERE / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    rng = random.Random(args.seed)
    started = time.monotonic()
    if args.quick:
        # (mode, mean, warm-up, measured, lanes)
        plan = [
            ("sync", 2.0, 0, 4, 4),
            ("gateway", 2.0, 10, 6, 10),
            ("gateway", 3.0, 10, 6, 10),
        ]
        sizes, args.burst_warmup, starts, calls, repeat = [50], 10, 3, 2, 3
        # (rows, concurrency, creates a minute, reads a minute, create burst), cold samples
        limits, cold_samples = (12, 6, 240, 1200, 6, 1.0), 1
        cold_model = "black-forest-labs/flux-schnell"
    else:
        plan = [
            ("sync", 2.0, 0, 36, 12),
            ("sync", 5.0, 0, 24, 12),
            ("sync", 20.0, 0, 12, 12),
            ("gateway", 2.0, 12, 48, 12),
            ("gateway", 3.0, 12, 36, 12),
            ("gateway", 5.0, 12, 36, 12),
            ("gateway", 20.0, 12, 24, 12),
        ]
        sizes, args.burst_warmup, starts, calls, repeat = [200, 1000], 12, 11, 10, 11
        # Replicate's published limits; the emulator's buckets start full (a minute's burst).
        limits, cold_samples = (args.batch_rows, 64, 600, 3000, 600, 3.0), 6
        cold_model = MODEL
    latency = []
    for mode, mean, warmup, count, lanes in plan:
        print(f"[{time.monotonic() - started:5.0f} s] latency: {mode} {mean:g} s", file=sys.stderr)
        latency.append(measure_latency(mode, mean, warmup, count, lanes, rng))
    print(f"[{time.monotonic() - started:5.0f} s] concurrency", file=sys.stderr)
    bursts = measure_concurrency(sizes, args.burst_warmup)
    print(f"[{time.monotonic() - started:5.0f} s] mcp", file=sys.stderr)
    mcp = measure_mcp(starts, calls)
    print(f"[{time.monotonic() - started:5.0f} s] imports", file=sys.stderr)
    imports, loaded = measure_imports(repeat)
    print(f"[{time.monotonic() - started:5.0f} s] under the account's limits", file=sys.stderr)
    under_limits = measure_limits(*limits)
    print(f"[{time.monotonic() - started:5.0f} s] batch killed and rerun", file=sys.stderr)
    killed = measure_kill_rerun(*limits)
    print(f"[{time.monotonic() - started:5.0f} s] cold start", file=sys.stderr)
    from flux_tools import MODELS

    typical = MODELS[cold_model].typical_seconds
    cold = measure_cold(cold_samples, typical, rng, cold_model)
    part5 = limits_report(under_limits, killed, cold, limits, typical, cold_model)
    text = report(args, latency, bursts, mcp, imports, loaded, time.monotonic() - started, part5)
    text = _keep_sections(output, text)
    output.write_text(text)
    print(text)
    print(f"\nwritten to {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
