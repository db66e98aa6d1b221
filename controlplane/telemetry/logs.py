"""How a Tollgate process logs: readable lines or one JSON object per line
(`TOLLGATE_LOG_FORMAT`), at `TOLLGATE_LOG_LEVEL`, without the scheduler's chatter."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from opentelemetry import trace

from controlplane.settings import Settings

TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
QUIET = ("apscheduler.executors", "apscheduler.scheduler", "alembic.runtime.plugins")
"""APScheduler logs every run of every job at INFO ("Running job ...", "... executed
successfully"): several lines a second that drown what an operator needs. Its
warnings (a run missed or skipped) still show."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message, the
    trace id when the record was made inside a span, and the traceback if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = f"{context.trace_id:032x}"
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(settings: Settings) -> None:
    """Route every logger (uvicorn's too) through one handler on the root logger."""
    handler = logging.StreamHandler()
    json_lines = settings.log_format.strip().lower() == "json"
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(TEXT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(settings.log_level.strip().upper())
    for name in QUIET:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
