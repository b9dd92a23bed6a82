"""structlog set-up: JSON lines with a correlation id, secrets and personal data masked.

Masking is done in a processor, so it covers every log call, including ones added later by
code that did not think about it. Secrets are hidden by key name; personal data follows the same
rules as the ops API (``m3bng.ops.masking``): by key name, and e-mail addresses inside any text
(an exception's message, a response echoed into an error).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from m3bng.ops.masking import mask_field

_SECRET_KEYS = re.compile(r"secret|password|passwd|token|authorization|api[_-]?key|^(cs|sask)$", re.I)


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


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    renderer: Any = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            mask_sensitive,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
