"""zwalk: find and fetch files that live somewhere on your LAN."""

from typing import Any


def __getattr__(name: str) -> Any:
    # Looked up on first use: reading the installed metadata costs every command ~30 ms.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("zwalk")
        except PackageNotFoundError:  # running from a source tree that was not installed
            return "0+unknown"
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
