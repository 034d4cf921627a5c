"""Netsody agent: the netsody command, its daemon and the data plane."""

__version__ = "0.1.0"
