"""`tollgate demo` on a real HAProxy: the scenario's distillers are refused at the proxy,
legitimate users are not, the demo says so, exits 0 and stops the HAProxy it started."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controlplane.cli import demo
from controlplane.settings import Settings
from tests.integration.connectors.haproxy_fixtures import (  # noqa: F401 (fixtures)
    haproxy_binary_fixture,
)
from tests.support.app import POLICY_DIR


def test_the_demo_enforces_the_scenario_at_haproxy(
    haproxy_binary: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(data_dir=tmp_path, policy_dir=POLICY_DIR, engine_workers=2)
    monkeypatch.setattr(demo, "cli_settings", lambda: settings)
    monkeypatch.setattr(demo.out, "width", 200)

    assert demo.run_demo(keep_serving=False, port=0) == 0

    printed = capsys.readouterr().out
    assert "Every decision matches the scenario's expectation." in printed
    assert "Every caller was treated as the scenario expects." in printed
    assert re.search(r"refused \d+/\d+ distiller requests .* and 0/\d+ legitimate ones", printed)
    assert "X-Forwarded-For" in printed  # the address mapping is explained
    haproxy_dir = tmp_path / "demo" / "haproxy"
    assert (haproxy_dir / "blocked.acl").read_text().count("203.0.113.0/24") == 1
    assert not (haproxy_dir / "haproxy.pid").exists()  # stopped
