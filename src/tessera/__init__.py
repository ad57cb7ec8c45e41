"""Tessera: identity and access management for AI agents."""

__version__ = "0.1.0"
