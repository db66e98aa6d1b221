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


async def test_one_account_id_under_two_providers_keeps_each_providers_keys(
    api: Running,
) -> None:
    # The keys of both providers' suspensions are looked up together: a key seen on one
    # platform is never revoked on the other.
    account, org = unique("acct_sk2p"), unique("org_sk2p")
    keys = {p: [unique(f"key_{p}") for _ in range(3)] for p in ("lab-a", "lab-b")}
    for provider, mine in keys.items():
        await api.submit(
            {**operation_verdict(account, mine[0], org, "192.0.2.90"), "provider": provider}
        )
    batch = [
        {**operation_verdict(account, key, org, f"192.0.2.{91 + i}"), "provider": provider}
        for provider, mine in keys.items()
        for i, key in enumerate(mine[1:])
    ]
    results = (await api.submit({"verdicts": batch}))["results"]

    actions = [a for r in results for a in r["actions"]]
    for provider, mine in keys.items():
        suspensions = [
            a
            for a in actions
            if a["type"] == "suspend"
            and a["provider"] == provider
            and a["target"]["value"] == account
        ]
        assert suspensions, f"{provider}: the account was not suspended"
        revoked = {
            a["target"]["value"]
            for a in actions
            if a["type"] == "revoke_key" and a["provider"] == provider
        }
        others = {k for p, ks in keys.items() if p != provider for k in ks}
        assert revoked, f"{provider}: no key revoked"
        assert not revoked & others, f"{provider} revoked another platform's keys"
        assert set(mine) <= revoked, f"{provider}: keys {sorted(set(mine) - revoked)} stay usable"
