"""`tollgate serve` and `tollgate worker` refuse to start on settings that cannot work,
with one readable line and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane import __version__
from tests.support.app import POLICY_DIR
from tests.support.processes import run

CANNOT_START = 2


def settings(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "TOLLGATE_DATA_DIR": str(tmp_path / "data"),
        "TOLLGATE_POLICY_DIR": str(POLICY_DIR),
        "TOLLGATE_PORT": "1",  # never reached: every case stops before serving
        "TOLLGATE_LOG_FORMAT": "text",
        **extra,
    }


def refusal(stderr: str) -> str:
    """The one line that says why, with no traceback anywhere."""
    assert "Traceback" not in stderr and "╭" not in stderr, stderr
    [line] = [x for x in stderr.splitlines() if "cannot start" in x]
    return line


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tollgate.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_named_config_file_that_is_missing_stops_the_process(
    tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "tolgate.yaml"
    done = run([command], settings(tmp_path, TOLLGATE_CONFIG=str(missing)))
    assert done.returncode == CANNOT_START
    assert f"TOLLGATE_CONFIG={missing}: no such file" in refusal(done.stderr)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("connectors:\n  - {name: edge, type: haproxi}\n", "no connector type 'haproxi'"),
        (
            "connectors:\n  - {name: edge, type: haproxy, options: {socket: 3}}\n",
            "connector edge: options.socket",
        ),
        ("connectors:\n  - {name: edge, type: memory, timeout_seconds: -1}\n", "timeout_seconds"),
        ("providers:\n  lab-a: {fallback: shrug}\n", "lab-a.fallback must be one of"),
        ("connectors: [\n", "not valid YAML"),
    ],
)
def test_a_bad_connector_or_provider_stops_the_server(
    tmp_path: Path, text: str, named: str
) -> None:
    done = run(["serve"], settings(tmp_path, TOLLGATE_CONFIG=config(tmp_path, text)))
    assert done.returncode == CANNOT_START
    assert named in refusal(done.stderr)


def test_an_unreachable_database_is_one_line_without_the_password(tmp_path: Path) -> None:
    url = "postgresql+psycopg://tollgate:s3cret@127.0.0.1:1/tollgate"
    done = run(["serve"], settings(tmp_path, TOLLGATE_DATABASE_URL=url))
    assert done.returncode == CANNOT_START
    line = refusal(done.stderr)
    assert "cannot use the database at postgresql+psycopg://tollgate:***@127.0.0.1:1" in line
    assert "s3cret" not in done.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TOLLGATE_ENFORCE", "sometimes"), ("TOLLGATE_LOG_FORMAT", "xml")],
)
def test_a_bad_setting_stops_the_server_naming_it(
    tmp_path: Path, variable: str, value: str
) -> None:
    done = run(["serve"], settings(tmp_path, **{variable: value}))
    assert done.returncode == CANNOT_START
    assert f"{variable}={value!r}: must be one of" in refusal(done.stderr)


@pytest.mark.parametrize("variable", ["TOLLGATE_EXPIRY_SECONDS", "TOLLGATE_RECOVERY_SECONDS"])
def test_a_job_interval_must_be_above_zero(tmp_path: Path, variable: str) -> None:
    done = run(["serve"], settings(tmp_path, **{variable: "0"}))
    assert done.returncode == CANNOT_START
    assert f"{variable}=0: must be a number of seconds above 0" in refusal(done.stderr)


def test_a_number_that_is_not_one_is_one_line(tmp_path: Path) -> None:
    done = run(["serve"], settings(tmp_path, TOLLGATE_POLICY_SYNC_SECONDS="1m"))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "TOLLGATE_POLICY_SYNC_SECONDS='1m': must be a number" in done.stderr


def test_a_worker_without_connectors_has_nothing_to_do(tmp_path: Path) -> None:
    done = run(["worker"], settings(tmp_path, TOLLGATE_CONFIG=config(tmp_path, "connectors: []\n")))
    assert done.returncode == CANNOT_START
    assert "no connectors configured" in refusal(done.stderr)


def test_json_logs_carry_the_refusal_as_one_object(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    done = run(
        ["serve"],
        settings(tmp_path, TOLLGATE_CONFIG=str(missing), TOLLGATE_LOG_FORMAT="json"),
    )
    assert done.returncode == CANNOT_START
    [record] = [json.loads(line) for line in done.stderr.splitlines()]
    assert record["level"] == "ERROR"
    assert record["message"].startswith(f"cannot start: TOLLGATE_CONFIG={missing}")


def test_version(tmp_path: Path) -> None:
    done = run(["--version"], {})
    assert done.returncode == 0
    assert done.stdout.strip() == f"tollgate {__version__}"


@pytest.mark.parametrize("value", ["5", "100000"])
def test_the_engine_gc_percent_must_be_in_range(tmp_path: Path, value: str) -> None:
    done = run(["serve"], settings(tmp_path, TOLLGATE_ENGINE_GC_PERCENT=value))
    assert done.returncode == CANNOT_START
    assert f"TOLLGATE_ENGINE_GC_PERCENT={value}: must be from" in refusal(done.stderr)
