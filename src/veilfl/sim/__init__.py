"""The in-process simulator: the protocol core with virtual clients and no HTTP."""

from veilfl.sim.simulator import PhaseTimings, SimulationConfig, SimulationResult, simulate

__all__ = ["PhaseTimings", "SimulationConfig", "SimulationResult", "simulate"]
