"""Log output: JSON lines on request, and no per-run scheduler chatter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from controlplane.settings import Settings
from controlplane.telemetry.logs import configure_logging
from controlplane.telemetry.tracing import configure, tracer


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    stream = io.StringIO()
    yield stream
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _log_to(stream: io.StringIO, log_format: str) -> None:
    configure_logging(Settings(log_format=log_format, config_explicit=False))
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)


def test_json_logs_are_one_object_per_line_with_the_trace(captured: io.StringIO) -> None:
    _log_to(captured, "json")
    configure("")
    log = logging.getLogger("controlplane.enforce.follower")
    with tracer().start_as_current_span("connector.apply") as span:
        log.warning("connector %s is down: %s", "edge", "refused")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("step failed")
    # Every line is one JSON object; other threads of the process may log meanwhile.
    records = [json.loads(line) for line in captured.getvalue().splitlines()]
    first = next(r for r in records if r["message"] == "connector edge is down: refused")
    second = next(r for r in records if r["message"] == "step failed")
    assert first["level"] == "WARNING"
    assert first["logger"] == "controlplane.enforce.follower"
    assert first["message"] == "connector edge is down: refused"
    assert first["trace_id"] == f"{span.get_span_context().trace_id:032x}"
    assert "RuntimeError: boom" in second["exception"]


def test_text_logs_are_readable_lines(captured: io.StringIO) -> None:
    _log_to(captured, "text")
    logging.getLogger("controlplane.runtime").info("policy revision %s is now deciding", "abc")
    assert (
        captured.getvalue()
        .rstrip()
        .endswith("INFO controlplane.runtime: policy revision abc is now deciding")
    )


def test_the_schedulers_per_run_lines_are_silenced_but_not_its_warnings(
    captured: io.StringIO,
) -> None:
    _log_to(captured, "text")
    logging.getLogger("apscheduler.executors.default").info('Running job "recover"')
    logging.getLogger("apscheduler.executors.default").info('Job "recover" executed successfully')
    logging.getLogger("apscheduler.scheduler").info("Added job")
    logging.getLogger("apscheduler.executors.default").warning("Run time of job was missed")
    lines = captured.getvalue().splitlines()
    assert len(lines) == 1 and "was missed" in lines[0]
