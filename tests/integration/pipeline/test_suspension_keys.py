"""A suspension revokes every key its account is known to use (its customer record's,
those seen in stored verdicts, those named earlier in the same batch), and only its
own: the keys of several suspensions in one batch are looked up together."""

from __future__ import annotations

from tests.support.app import Running
from tests.support.verdicts import operation_verdict, unique


async def test_a_batch_suspending_two_accounts_revokes_each_ones_own_keys(api: Running) -> None:
    operations = []
    for n in range(2):
        account, org = unique(f"acct_sk{n}"), unique(f"org_sk{n}")
        record = unique(f"key_rec{n}")
        keys = [unique(f"key_sk{n}") for _ in range(3)]
        answer = await api.client.post(
            "/v1/customers",
            json={"customers": [{"account_id": account, "verified": False, "keys": [record]}]},
        )
        assert answer.status_code == 200, answer.text
        # Its first key alone, stored; the second and third come in the shared batch.
        await api.submit(operation_verdict(account, keys[0], org, f"192.0.2.{60 + n}"))
        operations.append((account, record, keys, org, n))

    batch = [
        operation_verdict(account, key, org, f"192.0.2.{70 + n * 2 + i}")
        for account, _, keys, org, n in operations
        for i, key in enumerate(keys[1:])
    ]
    results = (await api.submit({"verdicts": batch}))["results"]

    for account, record, keys, _, _ in operations:
        actions = [a for r in results for a in r["actions"]]
        [suspension] = [
            a for a in actions if a["type"] == "suspend" and a["target"]["value"] == account
        ]
        revoked_with_it = {
            a["target"]["value"] for a in actions if a.get("parent_id") == suspension["id"]
        }
        revoked_alone = {
            a["target"]["value"]
            for a in actions
            if a["type"] == "revoke_key" and a.get("parent_id") is None
        }
        mine = {record, *keys}
        assert revoked_with_it, f"the suspension of {account} revoked no key with it"
        assert revoked_with_it <= mine, f"{account}'s suspension revoked others' keys"
        assert mine <= revoked_with_it | revoked_alone, (
            f"{account}'s keys {sorted(mine - revoked_with_it - revoked_alone)} stay usable"
        )
