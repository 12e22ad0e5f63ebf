"""An offline emulator of the Replicate predictions API, for tests, demos and benchmarks.

It validates inputs with the same registry as the client (``flux_tools._registry``), walks each
prediction through ``starting`` → ``processing`` → a terminal status on a clock, serves real
(generated) images, and can be scripted to fail: server-wide with ``Fault`` objects, or per
prediction with ``[emulator:...]`` markers in the prompt.

    with Emulator(latency=0.2) as emu:
        client = SomeClient(base_url=emu.base_url)

Pillow is needed only once an image is rendered (the ``[emulator]`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import types
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from ._faults import Fault, FaultBook
from ._server import Server
from ._state import Prediction, RecordedRequest, Stats, Store

__all__ = ["Emulator", "Fault", "Prediction", "RecordedRequest", "Stats"]


class Emulator:
    """A Replicate-compatible predictions server on its own event loop in a daemon thread.

    Use it as a (sync or async) context manager, or call ``start()`` and ``stop()``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        prefix: str = "/v1",
        latency: float = 2.0,
        latency_jitter: float = 0.0,
        queue_time: float = 0.05,
        token: str | None = None,
        honor_prefer_wait: bool = True,
        foreign_urls: bool = False,
        output_mode: Literal["url", "data"] = "url",
        data_retention: float | None = None,
        early_output: bool = False,
        mislabel_files: bool = False,
        image_scale: float = 1.0,
        faults: Sequence[Fault] = (),
        rng_seed: int | None = None,
    ) -> None:
        if output_mode not in ("url", "data"):
            raise ValueError(f"output_mode must be 'url' or 'data', not {output_mode!r}")
        if min(latency, latency_jitter, queue_time) < 0 or image_scale <= 0:
            raise ValueError("latency, latency_jitter, queue_time must be >= 0, image_scale > 0")
        prefix = prefix.strip().rstrip("/")
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
        self._host, self._port, self._prefix = host, port, prefix
        self._foreign_urls = foreign_urls
        self._faults = FaultBook(tuple(faults))
        self._store = Store(
            latency=latency,
            latency_jitter=latency_jitter,
            queue_time=queue_time,
            data_retention=data_retention,
            output_mode=output_mode,
            mislabel_files=mislabel_files,
            image_scale=image_scale,
            rng_seed=rng_seed,
        )
        self.stats = Stats(self._store.completions)
        self._server = Server(
            store=self._store,
            stats=self.stats,
            faults=self._faults,
            prefix=prefix,
            token=token,
            honor_prefer_wait=honor_prefer_wait,
            early_output=early_output,
        )
        self.origin = ""
        self.foreign_origin = ""
        self.base_url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._startup_error: BaseException | None = None

    # lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Start serving; returns once both listeners accept connections."""
        if self._thread is not None:
            raise RuntimeError("an Emulator can be started only once; make a new one")
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="flux-emulator", daemon=True
        )
        self._thread.start()
        ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Close the listeners and every open connection. Idempotent."""
        thread, loop, stop_event = self._thread, self._loop, self._stop_event
        if thread is None or not thread.is_alive() or loop is None or stop_event is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed
            loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout=30)

    def _run(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve(ready))
        except BaseException as exc:
            if ready.is_set():
                raise
            self._startup_error = exc
        finally:
            ready.set()
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _serve(self, ready: threading.Event) -> None:
        self._stop_event = asyncio.Event()
        try:
            api_port, foreign_port = await self._server.listen(self._host, self._port)
            host = f"[{self._host}]" if ":" in self._host else self._host
            self.origin = f"http://{host}:{api_port}"
            self.foreign_origin = f"http://{host}:{foreign_port}"
            self.base_url = self.origin + self._prefix
            base = self.foreign_origin if self._foreign_urls else self.origin
            self._store.api_base = base + self._prefix
            self._store.file_base = base
            ready.set()
            await self._stop_event.wait()
        finally:
            await self._server.close()

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Emulator:
        # start() blocks briefly on the server thread; keep the caller's loop free meanwhile.
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)

    # scripting and inspection ------------------------------------------------------------------

    def add_fault(self, fault: Fault) -> None:
        self._faults.add(fault)

    def clear_faults(self) -> None:
        self._faults.clear()

    def reset_stats(self) -> None:
        self.stats.reset()

    @property
    def predictions(self) -> Mapping[str, Prediction]:
        """A read-only snapshot of the stored predictions by id."""
        return types.MappingProxyType(self._store.snapshot())

    def prediction_json(self, prediction_id: str) -> dict[str, Any]:
        """The prediction as a GET would show it now (KeyError for an unknown id)."""
        prediction = self._store.get(prediction_id)
        if prediction is None:
            raise KeyError(prediction_id)
        return self._store.to_json(prediction, time.monotonic())
