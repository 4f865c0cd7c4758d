"""The browser chat page: static HTML, CSS and JavaScript that the gateway serves.

The gateway reads every asset into memory at start-up through :func:`load_assets`, so
only the files listed here can ever be served: no directory listing, no path outside
this package.
"""

from __future__ import annotations

from importlib import resources
from pathlib import PurePosixPath

__all__ = ["CONTENT_TYPES", "load_assets"]

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}


def load_assets() -> dict[str, tuple[bytes, str]]:
    """Every servable file of the page, by file name: (body, content type)."""
    assets: dict[str, tuple[bytes, str]] = {}
    for entry in resources.files(__name__).iterdir():
        content_type = CONTENT_TYPES.get(PurePosixPath(entry.name).suffix)
        if content_type is not None and entry.is_file():
            assets[entry.name] = (entry.read_bytes(), content_type)
    return assets
