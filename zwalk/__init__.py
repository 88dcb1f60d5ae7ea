"""zwalk: find and fetch files that live somewhere on your LAN."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("zwalk")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
