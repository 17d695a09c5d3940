"""What runs next: priority classes, deadlines, batching, admission, and the actor that applies them.

Public API (no Ray needed to import any of it; Ray is touched only inside actor.remote_scheduler and
the Ray adapters of pools):
"""
from scheduler.actor import SchedulerActor, remote_scheduler
from scheduler.config import LatencyPrior, PoolConfig, PriorityClass, SchedulerConfig, load_scheduler_config
from scheduler.core import InvalidJob, SchedulerCore
from scheduler.pools import ActorPool, LocalPool, ReplicaLost, ServeHandlePool, as_pool
from scheduler.request import TERMINAL, Job, Outcome, Request, Status
from scheduler.simulator import ReplicaModel, SimResult, find_replicas, simulate

__all__ = [
    "ActorPool", "InvalidJob", "Job", "LatencyPrior", "LocalPool", "Outcome", "PoolConfig", "PriorityClass",
    "ReplicaLost", "ReplicaModel", "Request", "SchedulerActor", "SchedulerConfig", "SchedulerCore",
    "ServeHandlePool", "SimResult", "Status", "TERMINAL", "as_pool", "find_replicas", "load_scheduler_config",
    "remote_scheduler", "simulate",
]
