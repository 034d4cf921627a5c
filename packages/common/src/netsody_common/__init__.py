"""Netsody shared library: identity, the network document, the policy engine, wire formats."""

__version__ = "0.1.0"
