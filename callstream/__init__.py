"""callstream: a self-hosted, Telnyx-wire-compatible voice media server."""

__version__ = "0.1.0"
