"""structlog set-up: JSON lines with a correlation id, secrets and personal data masked.

Masking is done in a processor, so it covers every log call, including ones added later by
code that did not think about it. Secrets are hidden by key name; personal data follows the same
rules as the ops API (``m3bng.ops.masking``): by key name, and e-mail addresses inside any text
(an exception's message, a response echoed into an error).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import structlog

from m3bng import jsonfast
from m3bng.ops.masking import mask_field

_SECRET_KEYS = re.compile(r"secret|password|passwd|token|authorization|api[_-]?key|^(cs|sask)$", re.I)


@functools.lru_cache(maxsize=4096)  # keys repeat: every log line of a kind has the same ones
def _is_secret(key: str) -> bool:
    return _SECRET_KEYS.search(key) is not None


def mask_sensitive(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key != "event":
            event_dict[key] = mask_field(key, event_dict[key], secret=_is_secret)
    return event_dict


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the moment of writing (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


_LEVELS = logging.getLevelNamesMapping()
LogTap = Callable[[Mapping[str, Any]], None]
_taps: list[LogTap] = []


def add_log_tap(tap: LogTap) -> None:
    """Hand every log event, at every level from DEBUG, to ``tap`` as well (after masking).

    Why: the test suite scans every line the app logs during a whole run for secrets and
    personal data (``tests/support/logscan.py``), including the INFO lines a WARNING console
    never shows. A tap must be added *before* ``configure_logging``: structlog caches each logger
    on first use with the configuration of that moment. Without taps nothing changes: loggers
    filter by level before any processor runs, exactly as before.
    """
    _taps.append(tap)


def remove_log_tap(tap: LogTap) -> None:
    if tap in _taps:
        _taps.remove(tap)


def _tap(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for tap in list(_taps):
        tap(event_dict)
    return event_dict


def _drop_below(level: int) -> Callable[[Any, str, MutableMapping[str, Any]], MutableMapping[str, Any]]:
    """The level filter as a processor, after the taps (used only while taps are installed)."""

    def drop(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        name = str(event_dict.get("level", method)).upper()  # add_log_level ran: never "exception"
        if _LEVELS.get(name, logging.ERROR) < level:
            raise structlog.DropEvent
        return event_dict

    return drop


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=jsonfast.dumps)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer()
    )
    threshold = _LEVELS[level.upper()]
    tapped = [_tap, _drop_below(threshold)] if _taps else []
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            mask_sensitive,
            structlog.processors.format_exc_info,
            *tapped,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if _taps else threshold),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
