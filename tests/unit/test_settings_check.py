"""Settings that cannot work are refused with one line naming the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controlplane.errors import InvalidInput
from controlplane.settings import Settings, engine_environment


def test_a_config_file_that_was_named_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "tolgate.yaml"
    with pytest.raises(InvalidInput) as caught:
        Settings(config=missing, config_explicit=True).check()
    assert caught.value.message.startswith(f"TOLLGATE_CONFIG={missing}: no such file")
    # The default path, not named by anyone, may be absent: no connectors.
    Settings(config=missing, config_explicit=False).check()


@pytest.mark.parametrize(
    ("field", "value", "variable"),
    [
        ("enforce", "sometimes", "TOLLGATE_ENFORCE"),
        ("log_format", "xml", "TOLLGATE_LOG_FORMAT"),
        ("engine", "wasm", "TOLLGATE_ENGINE"),
        ("log_level", "chatty", "TOLLGATE_LOG_LEVEL"),
    ],
)
def test_a_value_out_of_its_set_names_the_variable(field: str, value: str, variable: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Settings(**{field: value, "config_explicit": False}).check()  # type: ignore[arg-type]
    assert caught.value.message.startswith(f"{variable}={value!r}: must be one of")


def test_a_number_that_is_not_one_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOLLGATE_PORT", "84OO")
    with pytest.raises(InvalidInput) as caught:
        Settings()
    assert caught.value.message == "TOLLGATE_PORT='84OO': must be a whole number"


def test_the_engine_environment_adds_gogc_only_where_it_is_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GOGC", raising=False)
    env = engine_environment(Settings(engine_gc_percent=300))
    assert env is not None and env["GOGC"] == "300"
    assert env["PATH"] == os.environ["PATH"]  # the rest of the environment goes along
    # A remote engine has no Go runtime in this process.
    assert engine_environment(Settings(engine="remote")) is None
    # Set already (by the operator, or by the first start): nothing to do, no loop.
    monkeypatch.setenv("GOGC", "150")
    assert engine_environment(Settings(engine_gc_percent=300)) is None


def test_the_takeover_grace_follows_the_check_interval_unless_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("TOLLGATE_TAKEOVER_SECONDS", raising=False)
    assert Settings(expiry_seconds=5).takeover_grace == 10.5
    assert Settings(expiry_seconds=1).takeover_grace == 2.5
    monkeypatch.setenv("TOLLGATE_TAKEOVER_SECONDS", "0")
    assert Settings(expiry_seconds=5).takeover_grace == 0
    monkeypatch.setenv("TOLLGATE_TAKEOVER_SECONDS", "-3")
    with pytest.raises(InvalidInput) as caught:
        Settings(config_explicit=False).check()
    assert caught.value.message.startswith("TOLLGATE_TAKEOVER_SECONDS=-3: must be")
