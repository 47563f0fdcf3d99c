"""A Stash server double that speaks Stash's real GraphQL; used by the tests and by demo mode."""

from daemons.stash.double.server import StashDouble

__all__ = ["StashDouble"]
