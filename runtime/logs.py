"""Logging setup for entry points. Libraries only call ``structlog.get_logger(__name__)``."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(level: str = "info", *, json: bool = False) -> None:
    """Route structlog and stdlib logging to stderr as key/value lines (or JSON)."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}: use debug, info, warning or error")
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        # filter_by_level first: a debug line below the level costs nothing beyond the check.
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # No caching: a cached logger would keep this configuration for good, even after a
        # later reconfiguration (tests capture logs after CLI entry points have run).
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer,
        ])
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Third-party chatter below warning is noise for operators.
    for noisy in ("aioice", "aiortc", "libav", "grpc", "mqtt"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    # "mqtt" is aiomqtt's logger. Its warnings matter ("Message queue is full. Discarding
    # message." is a lost message), except one: it warns on every publish past ten in flight,
    # which is normal under load and would drown everything else.
    mqtt_logger = logging.getLogger("mqtt")
    if not any(isinstance(f, _PendingPublishChatter) for f in mqtt_logger.filters):
        mqtt_logger.addFilter(_PendingPublishChatter())


class _PendingPublishChatter(logging.Filter):
    """Drops aiomqtt's "There are N pending publish calls." and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("There are %d pending publish calls")
