"""Behaviour baselines, anomaly scores and drift: a second opinion that only tightens
(DESIGN 1, 5; docs/behavior.md). The PDP adapter is ``tessera.behavior.pdp``."""

from tessera.behavior.engine import Assessment, BehaviourEngine, BehaviourSettings
from tessera.behavior.generator import Workload, generate
from tessera.behavior.scoring import CallFeatures
from tessera.behavior.service import BehaviourService
from tessera.behavior.simulate import SimulationResult
from tessera.behavior.simulate import run as simulate

__all__ = [
    "Assessment",
    "BehaviourEngine",
    "BehaviourService",
    "BehaviourSettings",
    "CallFeatures",
    "SimulationResult",
    "Workload",
    "generate",
    "simulate",
]
