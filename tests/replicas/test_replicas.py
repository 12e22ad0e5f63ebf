"""Three replicas behind HAProxy, through real MCP clients, against the emulator: a replica killed
mid-generation, a rolling restart under load, a budget shared by all, images read anywhere.

Every engine is real and started by the tests (tests/engines.py): Valkey for the shared state,
SeaweedFS as the S3 store, HAProxy as the load balancer; the replicas are ``flux-mcp
--transport streamable-http --stateless`` processes.
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest

from flux_tools.emulator import Emulator

from ..engines import S3_KEY, S3_SECRET, Seaweed, Valkey
from ..mcp.mcp_helpers import Progress, http_session, text_of
from .cluster import cluster

pytestmark = pytest.mark.mcp

MakeEmulator = Callable[..., Emulator]
PRICES = '{"black-forest-labs/flux-pro": 0.1}'


def bucket_names(seaweed: Seaweed, bucket: str) -> list[str]:
    """The names of the files the bucket holds, listed with a client of its own (obstore)."""
    from obstore.store import S3Store

    store = S3Store(
        bucket,
        endpoint=seaweed.endpoint,
        access_key_id=S3_KEY,
        secret_access_key=S3_SECRET,
        region="us-east-1",
        client_options={"allow_http": True},
    )
    import obstore

    return [str(m["path"]).rsplit("/", 1)[-1] for m in obstore.list(store).collect()]


def structured(result: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = result.get("structuredContent") or {}
    return data


async def until(
    check: Callable[[], bool], timeout: float, what: str, logs: Callable[[], str] = str
) -> float:
    """Wait until ``check()``; the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s\n{logs()}")
        await anyio.sleep(0.2)
    return time.monotonic() - started


@pytest.mark.slow
async def test_a_replica_killed_mid_generation_leaves_its_image_to_another(
    make_emulator: MakeEmulator,
    valkey_server: Valkey,
    seaweed_server: Seaweed,
    tmp_path: Path,
) -> None:
    emulator = make_emulator(latency=8.0)
    with cluster(tmp_path, emulator, valkey_server, seaweed_server) as group:
        progress = Progress()
        async with http_session(group.url) as session, anyio.create_task_group() as calls:

            async def generate() -> None:
                with contextlib.suppress(Exception):  # its replica dies under it
                    await session.call("generate_image", {"prompt": "a lighthouse"}, progress)

            calls.start_soon(generate)
            await until(lambda: _pid(progress) is not None, 30, "a progress message with the id")
            found = _pid(progress)
            assert found is not None
            pid: str = found
            await until(lambda: group.who_created(pid) is not None, 10, "the creating replica")
            victim = group.who_created(pid)
            assert victim is not None
            group.kill(victim)  # SIGKILL: no cleanup, no hand-over
            calls.cancel_scope.cancel()

        await until(
            lambda: emulator.prediction_json(pid)["status"] == "succeeded", 30, "the prediction"
        )
        finished = datetime.fromisoformat(emulator.prediction_json(pid)["completed_at"])
        await until(
            lambda: any(
                name.startswith(pid) for name in bucket_names(seaweed_server, group.bucket)
            ),
            60,
            "the image stored by another replica",
            group.logs,
        )
        stored_after = time.time() - finished.timestamp()
        assert stored_after <= 30, f"stored {stored_after:.1f} s after the prediction finished"
        adopters = [
            i for i in range(3) if i != victim and f"resumed prediction {pid}" in group.log(i)
        ]
        assert len(adopters) == 1, group.logs()

        async with http_session(group.url) as session:
            result = await session.call("get_prediction", {"prediction_id": pid})
    assert not result.get("isError"), text_of(result)
    data = structured(result)
    assert data["status"] == "succeeded"
    assert data["files"][0].startswith(f"s3://{group.bucket}/images/{pid}")
    assert data["links"][0].startswith(seaweed_server.endpoint)
    assert emulator.stats.predictions_created == 1


def _pid(progress: Progress) -> str | None:
    for message in progress.messages:
        found = re.search(r"\(prediction ([A-Za-z0-9_-]+)\)", message)
        if found:
            return found.group(1)
    return None


@pytest.mark.slow
async def test_a_rolling_restart_under_load_loses_nothing_and_pays_nothing_twice(
    make_emulator: MakeEmulator,
    valkey_server: Valkey,
    seaweed_server: Seaweed,
    tmp_path: Path,
) -> None:
    emulator = make_emulator(latency=2.0, latency_jitter=1.0)
    failures: list[str] = []
    retried: list[str] = []
    succeeded: dict[str, str] = {}  # prompt -> prediction id
    exits: list[float] = []
    with cluster(
        tmp_path, emulator, valkey_server, seaweed_server, FLUX_MCP_WAIT_SECONDS="20"
    ) as group:
        restarted = anyio.Event()

        async def user(number: int) -> None:
            count = 0
            while not restarted.is_set():
                count += 1
                prompt = f"user {number}, image {count}"
                async with http_session(group.url) as session:
                    await one_image(session, prompt)

        async def one_image(session: Any, prompt: str) -> None:
            for _ in range(5):
                try:
                    result = await session.call("generate_image", {"prompt": prompt})
                except Exception as exc:
                    failures.append(f"{prompt}: the call broke: {exc!r}")
                    return
                text = text_of(result)
                if result.get("isError"):
                    if "nothing was created" in text or "nothing was sent" in text.lower():
                        retried.append(prompt)  # the user can act: send it again
                        continue
                    failures.append(f"{prompt}: {text}")
                    return
                data = structured(result)
                for _ in range(10):  # still running: get_prediction, as the result says
                    if data["status"] == "succeeded":
                        succeeded[prompt] = data["prediction_id"]
                        return
                    assert "get_prediction" in text, text
                    try:
                        result = await session.call(
                            "get_prediction", {"prediction_id": data["prediction_id"]}
                        )
                    except Exception:
                        # A read cut when its replica stopped: asked again, as a client does
                        # (it costs nothing; the prediction goes on and is saved either way).
                        retried.append(prompt)
                        async with http_session(group.url) as again:
                            result = await again.call(
                                "get_prediction", {"prediction_id": data["prediction_id"]}
                            )
                    text, data = text_of(result), structured(result)
                    if result.get("isError"):
                        failures.append(f"{prompt}: get_prediction: {text}")
                        return
                failures.append(f"{prompt}: never finished")
                return
            failures.append(f"{prompt}: refused five times")

        async with anyio.create_task_group() as users:
            for number in range(6):
                users.start_soon(user, number)
            await anyio.sleep(3)
            for index in range(3):  # one replica at a time, as a deploy does
                exits.append(await anyio.to_thread.run_sync(group.stop, index))
                await anyio.to_thread.run_sync(group.start, index)
                await anyio.sleep(2)
            restarted.set()

        # Whatever a stopping replica handed over is saved by the others.
        created = dict(emulator.predictions)

        def all_stored() -> bool:
            names = bucket_names(seaweed_server, group.bucket)
            return all(any(n.startswith(pid) for n in names) for pid in created)

        await until(all_stored, 60, "every prediction's image in the bucket", group.logs)
    assert not failures, "\n".join(failures) + "\n" + group.logs()
    assert len(succeeded) >= 12
    prompts = [emulator.prediction_json(pid)["input"]["prompt"] for pid in created]
    assert len(prompts) == len(set(prompts)), "a prompt was created twice"
    assert set(succeeded.values()) <= set(created)
    assert max(exits) < 15, exits  # SIGTERM: out within the drain and the grace period


async def test_fifty_calls_across_replicas_against_a_budget_for_ten_create_ten(
    make_emulator: MakeEmulator,
    valkey_server: Valkey,
    seaweed_server: Seaweed,
    tmp_path: Path,
) -> None:
    emulator = make_emulator(latency=0.5)
    outcomes: list[dict[str, Any]] = []
    with cluster(
        tmp_path,
        emulator,
        valkey_server,
        seaweed_server,
        FLUX_PRICES=PRICES,
        FLUX_BUDGET_USD="1.05",  # ten at $0.10
        FLUX_MCP_PREVIEW="off",
    ) as group:

        async def caller(number: int) -> None:
            async with http_session(group.url) as session, anyio.create_task_group() as calls:
                for index in range(10):

                    async def one(index: int = index) -> None:
                        outcomes.append(
                            await session.call(
                                "generate_image", {"prompt": f"budget {number}-{index}"}
                            )
                        )

                    calls.start_soon(one)

        async with anyio.create_task_group() as callers:
            for number in range(5):
                callers.start_soon(caller, number)
        logs = group.logs()
    made = [o for o in outcomes if not o.get("isError")]
    refused = [text_of(o) for o in outcomes if o.get("isError")]
    assert len(outcomes) == 50
    assert len(made) == 10, refused[:3]
    assert all("FLUX_BUDGET_USD" in text and "Nothing was sent" in text for text in refused)
    assert emulator.stats.predictions_created == 10
    assert all(f"replica {i}" in logs for i in range(3))


async def test_images_written_by_one_replica_are_read_by_another(
    make_emulator: MakeEmulator,
    valkey_server: Valkey,
    seaweed_server: Seaweed,
    tmp_path: Path,
) -> None:
    emulator = make_emulator()
    with cluster(tmp_path, emulator, valkey_server, seaweed_server) as group:
        async with http_session(group.replica_url(0)) as session:
            made = await session.call("generate_image", {"prompt": "a red kite"})
        data = structured(made)
        assert data.get("status") == "succeeded", text_of(made)
        uri = data["resource_uris"][0]
        async with http_session(group.replica_url(1)) as session:
            contents = await session.read_resource(uri)
        async with http_session(group.replica_url(2)) as session:
            again = await session.call("get_prediction", {"prediction_id": data["prediction_id"]})
        link = data["links"][0]
        async with httpx2.AsyncClient() as http:
            fetched = await http.get(link)
    blob = base64.b64decode(contents[0]["blob"])
    assert blob[:4] in (b"\x89PNG", b"RIFF") or blob[:2] == b"\xff\xd8"
    assert fetched.status_code == 200 and fetched.content == blob
    assert structured(again)["files"] == data["files"]
    assert "Link to open it" in text_of(made) and link in text_of(made)
    assert emulator.stats.predictions_created == 1
