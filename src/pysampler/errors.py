"""Exceptions raised by the public API."""

from __future__ import annotations


class PysamplerError(Exception):
    """Base class of pysampler's own errors."""


class ProfilerAlreadyRunning(PysamplerError, RuntimeError):
    """``start()`` was called while a profiling session is running."""


class ProfilerNotRunning(PysamplerError, RuntimeError):
    """``stop()`` was called while no profiling session is running."""


class EndpointExposedWarning(UserWarning):
    """The HTTP endpoint listens beyond loopback without a token."""


class SnapshotInProgress(PysamplerError, RuntimeError):
    """A heap snapshot was asked for while another one is being taken."""
