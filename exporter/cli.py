"""Command line: ``crankshaft-exporter [run] [--interval SECONDS] [--log-level LEVEL]``."""

from __future__ import annotations

import argparse
import logging
import sys

from exporter import __version__
from exporter.daemon import Daemon, DaemonOptions


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0.01 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 0.01 and 86400 seconds: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crankshaft-exporter",
        description="Crankshaft Performance Monitoring System as a Prometheus exporter.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the daemon (the default)")
    for p in (parser, run):
        p.add_argument(
            "--listen",
            default=None,
            metavar="HOST:PORT",
            help="address to serve on (default :9001, every interface)",
        )
        p.add_argument(
            "--interval",
            type=_positive_seconds,
            default=None,
            help="collection interval in seconds (default 60)",
        )
        p.add_argument(
            "--log-level",
            default="INFO",
            choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
            type=str.upper,
            help="log threshold (default INFO)",
        )
    return parser


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    options = DaemonOptions(
        listen=args.listen or ":9001",
        interval_ms=60_000 if args.interval is None else int(args.interval * 1000),
    )
    try:
        daemon = Daemon(options)
    except (OSError, ValueError) as e:
        print(f"crankshaft-exporter: cannot start: {e}", file=sys.stderr)
        return 1
    return daemon.run()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
