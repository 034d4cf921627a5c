"""Netsody super peer: signaling, NAT traversal and the MASQUE relay."""

__version__ = "0.1.0"
