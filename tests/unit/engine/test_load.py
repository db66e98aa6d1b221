"""Loading a policy directory: a revision that cannot serve fails at startup, naming why."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.engine.bundle import load_bundle
from controlplane.engine.runtime import load_embedded
from controlplane.errors import PolicyError
from tests.support.app import POLICY_DIR

DECISION = """\
package tollgate.decision

actions := [] if input.verdict.score < 0.5
else := [{"type": "flag_review"}]

shadow := false
"""


def policy_dir(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_repositorys_policies_load() -> None:
    engine = load_embedded(POLICY_DIR, "tollgate.decision", 2)
    try:
        assert engine.entrypoint == "tollgate.decision"
        assert engine.revision == load_bundle(POLICY_DIR).revision
        assert engine.evaluate_sync({}).result == {"actions": [], "shadow": False}
    finally:
        engine.close()


def test_undefined_entrypoint_fails_at_load(tmp_path: Path) -> None:
    root = policy_dir(tmp_path, {"decision.rego": DECISION})

    with pytest.raises(PolicyError) as raised:
        load_embedded(root, "data.tollgate.verdicts", 1)

    message = raised.value.message
    assert "entrypoint data.tollgate.verdicts is undefined" in message
    assert str(root) in message
    assert "TOLLGATE_ENTRYPOINT" in message


def test_misnamed_package_leaves_the_entrypoint_undefined(tmp_path: Path) -> None:
    root = policy_dir(
        tmp_path, {"d.rego": DECISION.replace("tollgate.decision", "tollgate.decide")}
    )

    with pytest.raises(PolicyError, match=r"entrypoint data\.tollgate\.decision is undefined"):
        load_embedded(root, "tollgate.decision", 1)


def test_syntax_error_names_the_file(tmp_path: Path) -> None:
    root = policy_dir(
        tmp_path,
        {"decision.rego": DECISION, "broken/broken.rego": "package broken\n\nallow := if {\n"},
    )

    with pytest.raises(PolicyError) as raised:
        load_embedded(root, "tollgate.decision", 1)

    assert str(root / "broken" / "broken.rego") in raised.value.message
    assert "rego_parse_error" in raised.value.message


def test_type_error_fails_the_probe(tmp_path: Path) -> None:
    root = policy_dir(tmp_path, {"decision.rego": DECISION + '\n_bad := 1 + "one"\n'})

    with pytest.raises(PolicyError) as raised:
        load_embedded(root, "tollgate.decision", 1)

    assert "policy failed its probe evaluation" in raised.value.message
    assert "rego_type_error" in raised.value.message


def test_runtime_error_on_the_probe_input_fails_the_load(tmp_path: Path) -> None:
    conflict = (
        "package tollgate.decision\n\n"
        "_tier := 1 if input.verdict.score > 0.1\n\n"
        "_tier := 2 if input.verdict.score > 0.2\n\n"
        "actions := [] if _tier\n\nshadow := false\n"
    )
    root = policy_dir(tmp_path, {"decision.rego": conflict})

    with pytest.raises(PolicyError, match=r"probe evaluation: .*eval_conflict_error"):
        load_embedded(root, "tollgate.decision", 1)


def test_invalid_data_file_is_named(tmp_path: Path) -> None:
    root = policy_dir(tmp_path, {"decision.rego": DECISION, "tollgate/data.json": "{'no': json}"})

    with pytest.raises(PolicyError, match=r"tollgate/data\.json: not valid JSON"):
        load_embedded(root, "tollgate.decision", 1)


def test_conflicting_data_documents_are_named(tmp_path: Path) -> None:
    root = policy_dir(
        tmp_path,
        {
            "decision.rego": DECISION,
            "data.json": '{"tollgate": {"settings": {"rpm": 60}}}',
            "tollgate/settings/data.yaml": "rpm: 30\n",
        },
    )

    with pytest.raises(PolicyError, match=r"data file mounted at data\.tollgate\.settings"):
        load_embedded(root, "tollgate.decision", 1)


def test_missing_directory_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist: set TOLLGATE_POLICY_DIR"):
        load_embedded(tmp_path / "nope", "tollgate.decision", 1)
    (tmp_path / "README.md").write_text("no policies here", encoding="utf-8")
    with pytest.raises(PolicyError, match=r"no \.rego files under"):
        load_embedded(tmp_path, "tollgate.decision", 1)


def test_bundle_reads_modules_and_data_and_skips_hidden_paths(tmp_path: Path) -> None:
    root = policy_dir(
        tmp_path,
        {
            "tollgate/decision/decision.rego": DECISION,
            "tollgate/settings/data.json": '{"rpm": 60}',
            "tollgate/extra/data.yaml": "tiers: [a, b]\n",
            ".hidden/ignored.rego": "package ignored\n",
            "tollgate/.cache/data.json": "not json at all",
            "notes.txt": "ignored",
        },
    )

    loaded = load_bundle(root)

    assert list(loaded.modules) == ["tollgate/decision/decision.rego"]
    assert sorted(loaded.data) == [
        ("tollgate.extra", {"tiers": ["a", "b"]}),
        ("tollgate.settings", {"rpm": 60}),
    ]
