"""Log format shared by every wsgate process: greppable, one socket id per line.

Only command-line entry points call :func:`configure_logging`; library code just uses
``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["LOG_FORMAT", "configure_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s"


def configure_logging(level: str = "INFO") -> None:
    """Log to stderr at ``level`` (DEBUG, INFO, WARNING, ERROR)."""
    logging.basicConfig(stream=sys.stderr, level=level.upper(), format=LOG_FORMAT,
                        force=True)
