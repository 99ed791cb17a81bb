"""Errors of the worker processes' plumbing."""

from __future__ import annotations


class WorkersError(Exception):
    """Base class."""


class RelayError(WorkersError):
    """A message between the supervisor and a worker could not be decoded."""
