"""The subject index takes the subjects the decide path lists on its events in SQL,
and derives the others (events written before, or by writers that list none) from their
verdict, action and payload: both ways index the same rows."""

from __future__ import annotations

from sqlalchemy import select, update

from controlplane.audit import subjects
from controlplane.store.models import AuditEventRow, AuditSubjectRow
from tests.support.app import Running
from tests.support.verdicts import new_subject, verdict


def index_of(api: Running) -> set[tuple[str, str, int]]:
    with api.runtime.db.read_blocking() as session:
        return {
            (r.kind, r.value, r.seq)
            for r in session.execute(
                select(AuditSubjectRow.kind, AuditSubjectRow.value, AuditSubjectRow.seq)
            )
        }


async def test_listed_and_derived_subjects_index_the_same_rows(fresh_api: Running) -> None:
    api = fresh_api
    subject = {**new_subject(ips=["192.0.2.44", "2001:db8::7"])}
    for _ in range(3):  # a repeat plans actions: action.planned events too
        await api.submit(verdict(subject=subject))
    await api.submit({"verdicts": [verdict(), verdict(subject={"ips": ["198.51.100.3"]})]})
    exempted = await api.client.post(
        "/v1/exemptions",
        json={
            "provider": "lab-a",
            "subject": {"kind": "account", "value": subject["account_id"]},
            "owner": "eval-team",
            "reason": "evaluation partner",
            "expires_at": None,
        },
    )
    assert exempted.status_code == 201, exempted.text
    with api.runtime.db.read_blocking() as session:
        listed = session.execute(select(AuditEventRow.type, AuditEventRow.subjects)).all()
    kinds = {t for t, s in listed if isinstance(s, list)}
    assert {"verdict.received", "decision.recorded", "action.planned"} <= kinds
    assert any(s is None for _, s in listed), "no event was left to derive"

    await subjects.catch_up(api.runtime.db)
    from_lists = index_of(api)
    assert {"account", "api_key", "org", "ip"} <= {k for k, _, _ in from_lists}
    assert any(v == "2001:db8::7" for _, v, _ in from_lists)

    # The same chain with no event listing its subjects: all derived.
    with api.runtime.db.write_blocking() as session, session.begin():
        session.execute(update(AuditEventRow).values(subjects=None))
    await subjects.rebuild(api.runtime.db)
    assert index_of(api) == from_lists
