"""Reconciler: plans the changes from the actual to the desired machine state and applies them.

`plan` is a pure function. `Reconciler` observes the system through the OS layer (one interface
per concern in `oslayer`), plans, and executes the actions in order.
"""

from netsody_agent.reconciler.planner import (
    Action,
    ActualState,
    DesiredState,
    DnsLink,
    GatewayRule,
    plan,
)
from netsody_agent.reconciler.reconciler import Reconciler

__all__ = [
    "Action",
    "ActualState",
    "DesiredState",
    "DnsLink",
    "GatewayRule",
    "Reconciler",
    "plan",
]
