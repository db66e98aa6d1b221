"""What a verdict is shown of its own batch: what the earlier verdicts it waits for
planned (those sharing a subject with it, directly or through others), never what
other verdicts of the batch happened to have planned before its input was built. An
action on a target its verdict does not name (here a range) is the case where the
two differ: every verdict of the batch looks it up by address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.app import Running, serve_policy
from tests.support.verdicts import verdict

RANGE_POLICY = """\
# METADATA
# title: Ranges
# description: Blocks the /24 of a verdict labelled so; otherwise plans nothing.
# custom:
#   owner: tests
package ranges

import rego.v1

_parts := split(input.verdict.subject.ips[0], ".")

_range := sprintf("%s.%s.%s.0/24", [_parts[0], _parts[1], _parts[2]])

# METADATA
# title: decision
# description: A /24 block for a verdict labelled block-range.
# custom:
#   owner: tests
decision := {"actions": [{
	"type": "block",
	"target": {"kind": "cidr", "value": _range},
	"params": {},
	"ttl": "1h",
	"rule": "ranges.block",
	"reason": "labelled",
}], "shadow": false} if {
	"block-range" in input.verdict.labels
} else := {"actions": [], "shadow": false}
"""


@pytest.fixture(scope="module")
async def ranges_api(
    module_database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    directory = tmp_path_factory.mktemp("ranges")
    async with serve_policy(module_database_url, directory, RANGE_POLICY, "ranges.decision") as api:
        yield api


def subject(account: str, ip: str) -> dict[str, Any]:
    return {"account_id": account, "ips": [ip]}


async def shown(api: Running, result: dict[str, Any]) -> list[str]:
    """The targets of the active actions the verdict's input showed."""
    decision = (await api.client.get(f"/v1/decisions/{result['decision_id']}")).json()
    return [a["target"]["value"] for a in decision["input"]["history"]["active_actions"]]


async def test_a_range_planned_in_a_batch_is_shown_to_the_verdicts_that_wait_for_it(
    ranges_api: Running,
) -> None:
    tag = "vis1"
    batch = [
        # 0 blocks 198.51.100.0/24.
        verdict(subject=subject(f"a_{tag}", "198.51.100.1"), labels=["block-range"]),
        # 1 and 2 share an account, not with 0: 2 waits for 1 only.
        verdict(subject=subject(f"b_{tag}", "198.51.100.4")),
        verdict(subject=subject(f"b_{tag}", "198.51.100.5")),
        # 3 shares 0's address: it waits for 0.
        verdict(subject=subject(f"c_{tag}", "198.51.100.1")),
        # 4 shares 3's account: it waits for 3, which waited for 0.
        verdict(subject=subject(f"c_{tag}", "198.51.100.7")),
    ]

    results = (await ranges_api.submit({"verdicts": batch}))["results"]

    planned = [[a["rule"] for a in r["actions"]] for r in results]
    assert planned == [["ranges.block"], [], [], [], []]
    assert [await shown(ranges_api, r) for r in results] == [
        [],
        [],
        [],  # in the range, but nothing links it to 0: the same in any batch order
        ["198.51.100.0/24"],
        ["198.51.100.0/24"],
    ]

    # In a later batch the block is stored: every verdict in the range is shown it.
    later = (
        await ranges_api.submit({"verdicts": [verdict(subject=subject("d_vis1", "198.51.100.9"))]})
    )["results"]
    assert await shown(ranges_api, later[0]) == ["198.51.100.0/24"]
