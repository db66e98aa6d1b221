"""`shadow_rules`: which rules' actions are recorded but never enforced, read from
METADATA `custom.mode: shadow` on a rule or on a whole package."""

from __future__ import annotations

from controlplane.policy.rego import read_module, shadow_rules

RULE_IN_SHADOW = """\
# METADATA
# title: Graduated
# description: Two rules, one in shadow mode.
# custom:
#   owner: tests
package tollgate.graduated

# METADATA
# title: first_offense
# description: Tried out before it is enforced.
# custom:
#   owner: x
#   mode: shadow
first_offense contains 1 if true

# METADATA
# title: repeat_offense
# description: Live.
# custom:
#   owner: x
repeat_offense contains 2 if true
"""

PACKAGE_IN_SHADOW = """\
# METADATA
# title: Intel
# description: The whole package is tried out.
# custom:
#   owner: threat-intel
#   mode: shadow
package tollgate.intel

# METADATA
# title: known_range
# description: Live on its own, shadowed by its package.
# custom:
#   owner: threat-intel
known_range contains 1 if true
"""

TEST_FILE = """\
# METADATA
# custom:
#   mode: shadow
package tollgate.decision_test

test_x := true
"""


def test_a_rule_in_shadow_mode() -> None:
    shadow = shadow_rules({"graduated.rego": RULE_IN_SHADOW})

    assert "graduated.first_offense" in shadow
    assert "tollgate.graduated.first_offense" in shadow
    assert "graduated.repeat_offense" not in shadow
    assert "intel.first_offense" not in shadow
    assert shadow.rules == {"graduated.first_offense", "tollgate.graduated.first_offense"}
    assert not shadow.packages


def test_a_package_in_shadow_mode_shadows_all_its_rules() -> None:
    shadow = shadow_rules({"intel.rego": PACKAGE_IN_SHADOW})

    assert "intel.known_range" in shadow
    assert "tollgate.intel.any_rule_at_all" in shadow
    assert "graduated.first_offense" not in shadow
    assert shadow.packages == {"intel", "tollgate.intel"}


def test_nothing_in_shadow_mode() -> None:
    shadow = shadow_rules({"intel.rego": PACKAGE_IN_SHADOW.replace("#   mode: shadow\n", "")})

    assert not shadow
    assert "intel.known_range" not in shadow
    assert None not in shadow


def test_test_files_are_ignored() -> None:
    assert not shadow_rules({"decision_test.rego": TEST_FILE})


def test_read_module_keeps_the_metadata_of_each_rule() -> None:
    module = read_module("graduated.rego", RULE_IN_SHADOW)

    assert module.package == "tollgate.graduated"
    assert module.package_line == 6
    assert [(r.name, r.line) for r in module.rules] == [
        ("first_offense", 14),
        ("repeat_offense", 21),
    ]
    assert module.rules[0].metadata == {
        "title": "first_offense",
        "description": "Tried out before it is enforced.",
        "custom": {"owner": "x", "mode": "shadow"},
    }
