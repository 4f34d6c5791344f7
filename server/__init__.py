"""EEICT Stream: the asyncio WebSocket server that streams CS2 match recordings."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eeict-stream")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
