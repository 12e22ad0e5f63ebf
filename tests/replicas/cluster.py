"""Three ``flux-mcp --transport streamable-http --stateless`` replicas behind HAProxy, sharing a
Valkey and a SeaweedFS bucket, against one emulator: what a team deploys, on loopback."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2

from flux_tools.emulator import Emulator

from ..engines import HAProxy, Seaweed, Valkey, free_ports, haproxy
from ..mcp.mcp_helpers import ServerProcess, server_env


@dataclass
class Cluster:
    emulator: Emulator
    folder: Path
    env: dict[str, str]
    ports: list[int]
    bucket: str
    replicas: list[ServerProcess | None] = field(default_factory=list)
    lb: HAProxy | None = None
    #: The logs of the processes a restart replaced, by replica.
    past: dict[int, list[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        assert self.lb is not None
        return self.lb.url

    def replica_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}/mcp"

    def start(self, index: int) -> ServerProcess:
        process = self.launch(index)
        self.wait_up(index)
        return process

    def launch(self, index: int) -> ServerProcess:
        out = self.folder / f"replica{index}"
        out.mkdir(exist_ok=True)
        env = {**self.env, "FLUX_OUTPUT_DIR": str(out / "images")}
        args = ["--transport", "streamable-http", "--stateless", "--port", str(self.ports[index])]
        earlier = self.replicas[index]
        if earlier is not None:  # a restart: the log of the process before stays readable
            self.past.setdefault(index, []).append(earlier.stderr)
        process = ServerProcess(args, env, out, stdio=False)
        self.replicas[index] = process
        return process

    def wait_up(self, index: int) -> None:
        process = self.replicas[index]
        assert process is not None
        process.wait_for_stderr(r"listening on http://", timeout=60)
        self.wait_ready(index)

    def wait_ready(self, index: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.ports[index]}/readyz"
        while True:
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(url, timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"replica {index} not ready:\n{self.log(index)}")
            time.sleep(0.1)

    def kill(self, index: int) -> None:
        process = self.replicas[index]
        assert process is not None
        process.kill()

    def stop(self, index: int) -> float:
        """SIGTERM, as a deploy sends it; the seconds until the process exited."""
        process = self.replicas[index]
        assert process is not None
        started = time.monotonic()
        process.stop()
        return time.monotonic() - started

    def log(self, index: int) -> str:
        """The replica's log, its earlier processes' included (a restart keeps them)."""
        process = self.replicas[index]
        current = process.stderr if process is not None else ""
        return "\n".join([*self.past.get(index, []), current])

    def logs(self) -> str:
        return "\n".join(f"--- replica {i}\n{self.log(i)[-4000:]}" for i in range(len(self.ports)))

    def who_created(self, prediction_id: str) -> int | None:
        for index in range(len(self.ports)):
            if f"prediction {prediction_id} created" in self.log(index):
                return index
        return None


@contextlib.contextmanager
def cluster(
    folder: Path,
    emulator: Emulator,
    valkey: Valkey,
    seaweed: Seaweed,
    *,
    count: int = 3,
    **extra: str,
) -> Iterator[Cluster]:
    valkey.flush()
    bucket = f"flux-{uuid.uuid4().hex[:10]}"
    seaweed.make_bucket(bucket)
    env = server_env(
        emulator.base_url,
        folder / "unused",
        FLUX_STATE_URL=valkey.url,
        FLUX_MCP_LOG_LEVEL="INFO",
        **seaweed.env(bucket),
        **extra,
    )
    group = Cluster(emulator, folder, env, free_ports(count), bucket, [None] * count)
    try:
        for index in range(count):
            group.launch(index)
        for index in range(count):
            group.wait_up(index)
        with haproxy(folder, group.ports) as lb:
            group.lb = lb
            yield group
    finally:
        for process in group.replicas:
            if process is not None:
                process.stop()
