"""`python -m simulator`: serve a simulated org until SIGINT/SIGTERM.

Prints exactly one JSON line (URL and every fake credential) to stdout so a parent process
(the benchmark, the demo) can read it and point okta-flex-sync at the simulator.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from simulator.config import DEFAULT_RATE_LIMITS, SimulatorConfig
from simulator.server import dumps_info, start_simulator

logger = logging.getLogger(__name__)


def build_parser(prog: str = "python -m simulator") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog,
                                     description="Serve a simulated Okta org and TaskRouter workspace.",
                                     epilog="Prints the URL and credentials as one JSON line, serves until "
                                            "interrupted. Exit codes: 0 stopped, 2 bad option.")
    parser.add_argument("--users", type=int, default=1000, help="Okta users in the org (default 1000)")
    parser.add_argument("--seed", type=int, default=42, help="seed for every generated value (default 42)")
    parser.add_argument("--assigned", type=int, default=None, help="users assigned to the Flex app")
    parser.add_argument("--workers", type=int, default=None, help="exact number of TaskRouter workers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (default)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every API request")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="fraction of API requests that fail")
    parser.add_argument("--concurrency-limit", type=int, default=75)
    parser.add_argument("--null-attributes-fraction", type=float, default=0.05)
    parser.add_argument("--no-drift", action="store_true", help="workers exactly mirror Okta")
    for bucket in DEFAULT_RATE_LIMITS:
        parser.add_argument(f"--{bucket}-rate-limit", type=int, default=None, metavar="PER_MINUTE",
                            help=f"requests/minute in the {bucket!r} bucket (default {DEFAULT_RATE_LIMITS[bucket]})")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    limits = {b: getattr(args, f"{b}_rate_limit") for b in DEFAULT_RATE_LIMITS
              if getattr(args, f"{b}_rate_limit") is not None}
    return SimulatorConfig(
        users=args.users, seed=args.seed, assigned=args.assigned, workers=args.workers,
        latency_ms=args.latency_ms, fault_rate=args.fault_rate, rate_limits=limits or None,
        concurrency_limit=args.concurrency_limit, null_attributes_fraction=args.null_attributes_fraction,
        drift=not args.no_drift, host=args.host, port=args.port,
    )


def serve(config: SimulatorConfig, out=None, stop: threading.Event | None = None) -> int:
    """Start, print the JSON line, block until `stop` is set or a signal arrives, then stop."""
    out = out or sys.stdout
    stop = stop or threading.Event()
    sim = start_simulator(config)
    try:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: stop.set())
        out.write(dumps_info(sim) + "\n")
        out.flush()
        while not stop.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m simulator") -> int:
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"simulator: {exc}", file=sys.stderr)
        return 2
    return serve(config)
