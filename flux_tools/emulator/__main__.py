"""``python -m flux_tools.emulator``: serve the emulated API until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from .._base.suggest import ArgumentParser
from . import Emulator
from ._ratelimit import SYNTAX, RateLimits


def _rate_limits(text: str) -> RateLimits:
    try:
        return RateLimits.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=prog,
        description="Offline emulator of the Replicate predictions API (FLUX models).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787, help="0 picks a free port")
    parser.add_argument("--prefix", default="/v1", help="API path prefix, e.g. /replicate/v1")
    parser.add_argument("--latency", type=float, default=2.0, help="run time in seconds")
    parser.add_argument("--jitter", type=float, default=0.0, help="± uniform run time jitter")
    parser.add_argument("--queue-time", type=float, default=0.05, help="seconds in 'starting'")
    parser.add_argument(
        "--token",
        default=None,
        help="accept only Authorization: Bearer TOKEN (default: any token; none is a 401)",
    )
    parser.add_argument("--gateway", action="store_true", help="ignore Prefer: wait")
    parser.add_argument(
        "--foreign-urls", action="store_true", help="urls.get/cancel and files on another origin"
    )
    parser.add_argument("--output", choices=("url", "data"), default="url")
    parser.add_argument("--data-retention", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--image-scale", type=float, default=1.0)
    parser.add_argument(
        "--rate-limit",
        type=_rate_limits,
        default=None,
        metavar="LIMITS",
        help=f"enforce Replicate-style rate limits per token: {SYNTAX}",
    )
    parser.add_argument(
        "--https",
        action="store_true",
        help="serve HTTPS with a generated test CA (its bundle path is printed)",
    )
    parser.add_argument("--verbose", action="store_true", help="log each request to stderr")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m flux_tools.emulator") -> int:
    """Run the emulator command; ``prog`` names it in help (``flux-tools emulator`` reuses this)."""
    args = _parser(prog).parse_args(argv)
    try:
        import PIL  # noqa: F401  (every image it serves is drawn with Pillow)
    except ImportError:
        print(f"{prog}: Pillow is missing: pip install 'flux-tools[emulator]'", file=sys.stderr)
        return 2
    if args.verbose:
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(message)s")
    emulator = Emulator(
        host=args.host,
        port=args.port,
        prefix=args.prefix,
        latency=args.latency,
        latency_jitter=args.jitter,
        queue_time=args.queue_time,
        token=args.token,
        honor_prefer_wait=not args.gateway,
        foreign_urls=args.foreign_urls,
        output_mode=args.output,
        data_retention=args.data_retention,
        image_scale=args.image_scale,
        rate_limits=args.rate_limit,
        https=args.https,
    )
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        emulator.start()
    except OSError as exc:
        print(f"emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    ca = f" (CA bundle: {emulator.ca_bundle})" if emulator.ca_bundle else ""
    print(f"FLUX emulator listening on {emulator.base_url}{ca}", flush=True)
    try:
        while not stopping.wait(0.5):  # a timeout keeps the main thread responsive to signals
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
