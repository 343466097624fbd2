"""A bundled Okta Management API + TaskRouter Workers simulator for demos, tests and benchmarks.

    from simulator import SimulatorConfig, start_simulator
    sim = start_simulator(SimulatorConfig(users=1000, seed=42))
    ... sim.url, sim.env(), sim.org, sim.stats(), sim.set_faults(...) ...
    sim.stop()

Users are generated lazily from (seed, index), so a million-user org costs no more memory
than a thousand-user one.  See server.py for the request gates and org.py for the data.
"""
from simulator.cli import build_parser, main, serve
from simulator.config import DEFAULT_RATE_LIMITS, SimulatorConfig, SimulatorConfigError
from simulator.org import NOT_DRIFT, PLANTED_KINDS, Org
from simulator.server import Simulator, start_simulator

__all__ = [
    "DEFAULT_RATE_LIMITS", "NOT_DRIFT", "PLANTED_KINDS", "Org", "Simulator", "SimulatorConfig",
    "SimulatorConfigError", "build_parser", "main", "serve", "start_simulator",
]
