"""Downloading outputs to disk: nothing the API says is trusted.

Provider URLs expire (Replicate deletes outputs after about an hour, BFL's links after ten
minutes), so front ends save at once. What a gateway controls, and what is done about it:

- **File names.** Never a path from the server: the prediction id becomes a safe stem
  (:func:`safe_stem`: kept only when it is a short run of ``[a-z0-9-]``, otherwise a slug plus a
  hash of the raw id, so distinct ids never share a name). The extension comes from the file's
  magic bytes (PNG, JPEG, WebP, GIF), never from the URL; a body that is no image is not saved.
  Files are created only inside the (resolved) target folder, through an exclusive, no-follow
  temporary file renamed into place (a link planted at the name is replaced, not followed).
  Bodies are asked for and accepted only unencoded (no gzip bombs).
- **How many, how big, how long.** At most :data:`MAX_OUTPUTS` outputs per result (FLUX models
  make 1 to 4); each body is streamed and capped (``max_bytes``, checked against
  ``Content-Length`` before a byte is read, then while reading); the whole save has one wall-time
  deadline (``DownloadPolicy.deadline``) that also bounds a body trickling in byte by byte.
- **Where.** ``http``/``https`` only (``data:`` URIs are decoded locally). Each host is resolved
  first and refused when any of its addresses is private, loopback, link-local, reserved,
  multicast or unspecified, unless the policy allows that kind of address, which
  :meth:`DownloadPolicy.for_api` does only for the kind the API itself is on (the emulator's
  case: loopback; never link-local metadata addresses because of it). The API's own origin is
  always allowed: the user chose it.
- **Redirects.** At most ``max_redirects`` hops (3), each to ``https`` or to the same origin as
  the hop before, each re-checked as above. A redirected request never carries credentials;
  the first request carries the API token only when it is for the API's origin (``BearerAuth``),
  and ``Authorization``/``Cookie`` headers set on a caller's HTTP client are removed from hops
  and from any request that is not for that origin.

Known gaps: the host is resolved before the request and again by the HTTP stack when it
connects, so a DNS server answering differently the second time (rebinding) is not caught; in
the blocking driver a slow DNS lookup is not cut by the deadline (the async one abandons it).

Saving never blocks an event loop: in :func:`asave_outputs` the reads are awaited and the file
work (create, write, fsync, rename) runs in a worker thread.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx2

from .._base.errors import DownloadError
from .._base.files import AtomicFile
from .._base.media import decode_data_uri, output_names, safe_stem
from .._base.text import safe_text
from .._base.urls import Origin, host_kind, non_public, origin

logger = logging.getLogger("flux_tools")

#: Largest output accepted. FLUX images are a few MB; anything far larger is not an image.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: Most outputs saved from one result. FLUX models make 1 to 4 images per prediction.
MAX_OUTPUTS = 16
#: Redirect hops followed per output.
MAX_REDIRECTS = 3
#: Wall-time budget of one save (every output, every retry, every hop), in seconds.
DEFAULT_DEADLINE = 120.0
CHUNK = 64 * 1024
#: The async path hands the file system this much at a time (one worker-thread hop per MiB).
_WRITE_BATCH = 1024 * 1024

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_HEADERS = {"Accept": "image/*", "Accept-Encoding": "identity"}

# -- where downloads may go ----------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadPolicy:
    """What saving outputs may do. The safe default allows public addresses only.

    ``api_origin`` (scheme, host, port) is always allowed, and is the only origin that may get
    credentials. ``local_kinds`` names the kinds of non-public address downloads may reach
    besides (``"loopback"``, ``"private"``, ``"link-local"``...): :meth:`for_api` allows the kind
    the API itself is on, and only that one (an emulator on 127.0.0.1 makes loopback outputs
    fine, never the cloud's link-local metadata address). ``allow_private`` trusts every
    address: for a gateway on a private network reached by name.
    """

    api_origin: Origin | None = None
    allow_private: bool = False
    local_kinds: frozenset[str] = frozenset()
    max_outputs: int = MAX_OUTPUTS
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = MAX_REDIRECTS
    #: Seconds for the whole save: every output, hop and retry, including a body that trickles.
    deadline: float = DEFAULT_DEADLINE
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    #: Tests only: resolves a host to its addresses (default: :func:`socket.getaddrinfo`).
    resolver: Callable[[str, int], list[str]] | None = field(default=None, compare=False)

    @classmethod
    def for_api(cls, base_url: str, **overrides: object) -> DownloadPolicy:
        """The policy for outputs of the API at ``base_url``: non-public addresses of the kind
        the API's own host is on (an IP literal, or ``localhost``), and no other."""
        api = origin(base_url)
        kind = host_kind(api[1])
        settings: dict[str, object] = {
            "api_origin": api,
            "local_kinds": frozenset({kind} if kind else ()),
            **overrides,
        }
        return cls(**settings)  # type: ignore[arg-type]

    def is_api(self, url: str | httpx2.URL) -> bool:
        return self.api_origin is not None and origin(url) == self.api_origin

    def refuses(self, kind: str | None) -> bool:
        """Whether an address of this kind (None: public) is off limits."""
        return kind is not None and not self.allow_private and kind not in self.local_kinds


def _behind_proxy(host: str) -> bool:
    """Whether the environment sends requests for ``host`` through a proxy (which resolves it)."""
    import urllib.request

    proxies = urllib.request.getproxies()
    wanted = any(proxies.get(scheme) for scheme in ("https", "http", "all"))
    return wanted and not urllib.request.proxy_bypass(host)


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        if isinstance(exc, socket.gaierror) and _behind_proxy(host):
            # Only the proxy can resolve it here: it, not this machine, decides where it goes.
            logger.debug("%s is resolved by the proxy; its address is not checked", host)
            return []
        error = DownloadError(
            f"cannot resolve the host {safe_text(host, 80)!r} of an output: {exc}"
        )
        error.transient = isinstance(exc, socket.gaierror) and exc.errno == socket.EAI_AGAIN
        raise error from None
    return [str(info[4][0]) for info in infos]


def _target(url: str, previous: str | None, policy: DownloadPolicy) -> tuple[str, int] | None:
    """Check one hop against the policy; return the (host, port) to resolve and check, if any."""
    try:
        parsed = httpx2.URL(url)
    except (httpx2.InvalidURL, TypeError, ValueError):
        raise DownloadError(f"{_describe(url)} is not a valid URL; not saved.") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise DownloadError(
            f"{_describe(url)} is not an http(s) URL (scheme {safe_text(parsed.scheme, 20)!r}); "
            "not saved."
        )
    if previous is not None and parsed.scheme != "https" and origin(url) != origin(previous):
        raise DownloadError(
            f"an output redirects to {_describe(url)} over plain http on another origin; "
            "redirects are followed only to https or within the same origin. Not saved."
        )
    if policy.is_api(url) or policy.allow_private:
        return None  # the user's own API, or every address trusted: nothing to check
    host = parsed.host
    kind = host_kind(host)
    if policy.refuses(kind):
        raise _refused(url, host, kind)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return None  # an IP literal, already checked
    return host, int(origin(url)[2] or 0)


def _check_addresses(url: str, host: str, addresses: list[str], policy: DownloadPolicy) -> None:
    for address in addresses:
        kind = non_public(address)
        if policy.refuses(kind):
            raise _refused(url, host, f"{address}, {kind}")


def _refused(url: str, host: str, detail: str | None = None) -> DownloadError:
    what = f" ({detail})" if detail else ""
    return DownloadError(
        f"{_describe(url)} is on a local or private address: {safe_text(host, 80)}{what}. "
        "Outputs are fetched from such addresses only when the API itself is on one of the "
        "same kind; not saved."
    )


def _redirect(url: str, response: httpx2.Response) -> str | None:
    if response.status_code not in _REDIRECTS:
        return None
    location = response.headers.get("location")
    if not location:
        raise DownloadError(f"{_describe(url)} answered a redirect without a Location; not saved.")
    try:
        return str(httpx2.URL(url).join(location))
    except (httpx2.InvalidURL, ValueError):
        raise DownloadError(f"{_describe(url)} redirects to an invalid URL; not saved.") from None


# -- messages ------------------------------------------------------------------------------------


def _describe(url: str) -> str:
    if url.startswith("data:"):
        return "a data: URI output"
    try:
        parts = urlsplit(url)
    except ValueError:
        return "an output with an invalid URL"
    host = parts.netloc.rpartition("@")[2]  # never a user:password a gateway put there
    return f"output {safe_text(host, 60)}{safe_text(parts.path, 80)}"


def _check_response(url: str, response: httpx2.Response, limit: int) -> None:
    if response.status_code >= 400:
        raise _http_failure(url, response)
    if response.status_code >= 300:
        raise DownloadError(f"{_describe(url)} answered HTTP {response.status_code}; not saved.")
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        # Refuse before reading a byte of it.
        raise DownloadError(
            f"{_describe(url)} is {int(declared)} bytes, more than the {limit} allowed; not saved."
        )
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise DownloadError(
            f"{_describe(url)} came {safe_text(encoding, 20)}-encoded although none was asked "
            "for; not saved."
        )


def _http_failure(url: str, response: httpx2.Response) -> DownloadError:
    if response.status_code in (404, 410):
        return DownloadError(
            f"{_describe(url)} is gone (HTTP {response.status_code}): provider URLs expire "
            "(Replicate deletes outputs after about an hour). Generate the image again."
        )
    error = DownloadError(f"downloading {_describe(url)} failed: HTTP {response.status_code}")
    error.transient = response.status_code in (429, 500, 502, 503, 504)
    return error


def _transport_failure(url: str, exc: httpx2.HTTPError) -> DownloadError:
    error = DownloadError(f"downloading {_describe(url)} failed: {type(exc).__name__} {exc}")
    error.transient = isinstance(exc, httpx2.TransportError)
    return error


# -- the budget of one save ---------------------------------------------------------------------


class _Deadline:
    def __init__(self, policy: DownloadPolicy) -> None:
        self.seconds = policy.deadline
        self.end = time.monotonic() + policy.deadline
        self._policy = policy

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def check(self, url: str) -> None:
        if self.remaining() <= 0:
            raise DownloadError(
                f"saving {_describe(url)} did not finish within the {self.seconds:g} s allowed; "
                "not saved."
            )

    def timeout(self) -> httpx2.Timeout:
        """Per-read timeouts lowered to what is left, so no single read outlives the budget."""
        left = max(self.remaining(), 0.001)
        p = self._policy
        return httpx2.Timeout(
            min(p.read_timeout, left),
            connect=min(p.connect_timeout, left),
            pool=min(p.connect_timeout, left),
        )


#: Attempts per output; only transient failures (connection, 429, 5xx) are tried again.
DOWNLOAD_ATTEMPTS = 3


def _retry_delay(attempt: int, error: DownloadError, deadline: _Deadline) -> float | None:
    if not error.transient or attempt + 1 >= DOWNLOAD_ATTEMPTS:
        return None
    delay = 0.5 * 2.0**attempt
    return delay if delay < deadline.remaining() else None


def _request(
    client: httpx2.Client | httpx2.AsyncClient,
    url: str,
    deadline: _Deadline,
    policy: DownloadPolicy,
    hop: bool,
) -> httpx2.Request:
    request = client.build_request("GET", url, headers=_HEADERS, timeout=deadline.timeout())
    if hop or not policy.is_api(url):
        # A header set on a caller's HTTP client goes neither to another host nor on a redirect.
        for name in ("authorization", "proxy-authorization", "cookie"):
            request.headers.pop(name, None)
    return request


_NO_AUTH = httpx2.Auth()


def _plan(urls: list[str], stem: str, policy: DownloadPolicy) -> list[tuple[str, str]]:
    if not urls:
        raise DownloadError("there is nothing to save: the result has no output URL")
    kept = urls[: policy.max_outputs]
    return list(zip(kept, output_names(safe_stem(stem), len(kept)), strict=True))


def _too_many(urls: list[str], policy: DownloadPolicy, paths: list[Path], directory: Path) -> None:
    if len(urls) > policy.max_outputs:
        error = DownloadError(
            f"the API listed {len(urls)} outputs; the first {policy.max_outputs} were saved in "
            f"{directory} and the other {len(urls) - policy.max_outputs} were not downloaded "
            f"(at most {policy.max_outputs} per result; FLUX models make 1 to 4)."
        )
        error.files = list(paths)
        raise error


def _prepare(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory.resolve()


def _with_context(
    error: DownloadError, paths: list[Path], prediction_id: str | None
) -> DownloadError:
    # ``files``: what was saved before the failure (other outputs of the same result).
    if paths and not error.files:
        error.files = list(paths)
        error.message += "\nSaved before this failure: " + ", ".join(str(p) for p in paths)
    if prediction_id and not error.prediction_id:
        error.prediction_id = prediction_id
    return error


def _policy_with(policy: DownloadPolicy | None, max_bytes: int | None) -> DownloadPolicy:
    policy = policy or DownloadPolicy()
    return dataclasses.replace(policy, max_bytes=max_bytes) if max_bytes else policy


# -- the blocking driver -------------------------------------------------------------------------


def _fetch(
    client: httpx2.Client,
    url: str,
    sink: AtomicFile,
    auth: httpx2.Auth | None,
    policy: DownloadPolicy,
    deadline: _Deadline,
) -> Path:
    if url.startswith("data:"):
        data, media_type = decode_data_uri(url, sink.max_bytes)
        sink.write(data)
        return sink.finish(media_type)
    current, previous, hop_auth = url, None, auth or _NO_AUTH
    for _ in range(policy.max_redirects + 1):
        deadline.check(url)
        target = _target(current, previous, policy)
        if target:
            _check_addresses(current, target[0], (policy.resolver or _resolve)(*target), policy)
        request = _request(client, current, deadline, policy, previous is not None)
        try:
            response = client.send(request, stream=True, auth=hop_auth, follow_redirects=False)
            try:
                location = _redirect(current, response)
                if location is None:
                    _check_response(current, response, sink.max_bytes)
                    for chunk in response.iter_raw():
                        sink.write(chunk)
                        deadline.check(url)
                    return sink.finish(response.headers.get("content-type"))
            finally:
                response.close()
        except httpx2.HTTPError as exc:
            raise _transport_failure(current, exc) from None
        previous, current, hop_auth = current, location, _NO_AUTH  # never credentials on a hop
    raise DownloadError(f"{_describe(url)} redirects more than {policy.max_redirects} times.")


def save_outputs(
    urls: list[str],
    directory: Path,
    *,
    stem: str,
    http: httpx2.Client | None = None,
    auth: httpx2.Auth | None = None,
    max_bytes: int | None = None,
    policy: DownloadPolicy | None = None,
    prediction_id: str | None = None,
) -> list[Path]:
    """Download each URL (or decode each data: URI) into ``directory``; return the paths.

    ``stem`` is the raw prediction id (made safe here). ``policy`` says where downloads may go
    (default: public addresses only); ``max_bytes`` overrides its size cap.
    """
    policy = _policy_with(policy, max_bytes)
    plan = _plan(urls, stem, policy)
    deadline = _Deadline(policy)
    folder = _prepare(directory)
    client = http or httpx2.Client()
    paths: list[Path] = []
    try:
        for url, name in plan:
            for attempt in range(DOWNLOAD_ATTEMPTS):
                sink = AtomicFile(folder, name, policy.max_bytes, _describe(url))
                try:
                    paths.append(_fetch(client, url, sink, auth, policy, deadline))
                    break
                except DownloadError as error:
                    sink.abort()
                    delay = _retry_delay(attempt, error, deadline)
                    if delay is None:
                        raise
                    time.sleep(delay)
                except BaseException:
                    sink.abort()
                    raise
        _too_many(urls, policy, paths, folder)
        return paths
    except DownloadError as error:
        raise _with_context(error, paths, prediction_id) from None
    finally:
        if http is None:
            client.close()


# -- the async driver: the same steps, reads awaited, file work in a worker thread ---------------


async def _afetch(
    client: httpx2.AsyncClient,
    url: str,
    sink: AtomicFile,
    auth: httpx2.Auth | None,
    policy: DownloadPolicy,
    deadline: _Deadline,
) -> Path:
    if url.startswith("data:"):  # decoding megabytes of base64 is work for the thread too
        data, media_type = await anyio.to_thread.run_sync(decode_data_uri, url, sink.max_bytes)
        sink.accept(data)
        await anyio.to_thread.run_sync(sink.write_accepted, data)
        return await anyio.to_thread.run_sync(sink.finish, media_type)
    current, previous, hop_auth = url, None, auth or _NO_AUTH
    for _ in range(policy.max_redirects + 1):
        deadline.check(url)
        target = _target(current, previous, policy)
        if target:
            # Abandoned on cancel: a slow DNS answer must not hold the deadline up.
            addresses = await anyio.to_thread.run_sync(
                policy.resolver or _resolve, *target, abandon_on_cancel=True
            )
            _check_addresses(current, target[0], addresses, policy)
        request = _request(client, current, deadline, policy, previous is not None)
        try:
            response = await client.send(
                request, stream=True, auth=hop_auth, follow_redirects=False
            )
            try:
                location = _redirect(current, response)
                if location is None:
                    _check_response(current, response, sink.max_bytes)
                    batch = bytearray()
                    async for chunk in response.aiter_raw():
                        sink.accept(chunk)
                        batch += chunk
                        if len(batch) >= _WRITE_BATCH:
                            await anyio.to_thread.run_sync(sink.write_accepted, bytes(batch))
                            batch.clear()
                        deadline.check(url)
                    await anyio.to_thread.run_sync(sink.write_accepted, bytes(batch))
                    content_type = response.headers.get("content-type")
                    return await anyio.to_thread.run_sync(sink.finish, content_type)
            finally:
                await response.aclose()
        except httpx2.HTTPError as exc:
            raise _transport_failure(current, exc) from None
        previous, current, hop_auth = current, location, _NO_AUTH
    raise DownloadError(f"{_describe(url)} redirects more than {policy.max_redirects} times.")


async def asave_outputs(
    urls: list[str],
    directory: Path,
    *,
    stem: str,
    http: httpx2.AsyncClient | None = None,
    auth: httpx2.Auth | None = None,
    max_bytes: int | None = None,
    policy: DownloadPolicy | None = None,
    prediction_id: str | None = None,
) -> list[Path]:
    """Async twin of :func:`save_outputs`: the same steps, with awaited reads; the file work
    runs in a worker thread, and the deadline is also a cancel scope over the whole save."""
    policy = _policy_with(policy, max_bytes)
    plan = _plan(urls, stem, policy)
    deadline = _Deadline(policy)
    folder = await anyio.to_thread.run_sync(_prepare, directory)
    client = http or httpx2.AsyncClient()
    paths: list[Path] = []
    try:
        with anyio.fail_after(policy.deadline):
            for url, name in plan:
                for attempt in range(DOWNLOAD_ATTEMPTS):
                    sink = AtomicFile(folder, name, policy.max_bytes, _describe(url))
                    try:
                        paths.append(await _afetch(client, url, sink, auth, policy, deadline))
                        break
                    except DownloadError as error:
                        await anyio.to_thread.run_sync(sink.abort)
                        delay = _retry_delay(attempt, error, deadline)
                        if delay is None:
                            raise
                        await anyio.sleep(delay)
                    except BaseException:
                        with anyio.CancelScope(shield=True):
                            await anyio.to_thread.run_sync(sink.abort)
                        raise
        _too_many(urls, policy, paths, folder)
        return paths
    except TimeoutError:
        late = DownloadError(
            f"saving the outputs did not finish within the {policy.deadline:g} s allowed."
        )
        raise _with_context(late, paths, prediction_id) from None
    except DownloadError as error:
        raise _with_context(error, paths, prediction_id) from None
    finally:
        if http is None:
            await client.aclose()


__all__ = [
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_BYTES",
    "MAX_OUTPUTS",
    "MAX_REDIRECTS",
    "DownloadPolicy",
    "asave_outputs",
    "save_outputs",
]
