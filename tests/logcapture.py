"""Collect what dfpipe's module loggers say, for tests that assert on a job's log lines."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def dfpipe_lines() -> Iterator[list[str]]:
    """The messages of the `dfpipe.*` loggers while the block runs (INFO and up), in order. Unlike caplog it
    sees no other library's records, so a test can assert that a step logged nothing."""
    logger = logging.getLogger("dfpipe")
    handler, level = _Lines(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
