"""callstream: a self-hosted, Telnyx-wire-compatible voice media server."""

from callstream.build import compiled

__version__ = "0.1.0"
__all__ = ["__version__", "compiled"]
