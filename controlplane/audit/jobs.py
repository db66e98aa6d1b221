"""The audit trail's periodic jobs: keep the subject index up with the chain, and sign
checkpoints when a signing key is configured."""

from __future__ import annotations

from typing import Any

from controlplane.audit import subjects
from controlplane.audit.checkpoints import checkpoint_job, configured_signer
from controlplane.settings import Settings
from controlplane.store.db import Database

SUBJECT_INDEX_SECONDS = 10


def schedule(scheduler: Any, db: Database, settings: Settings) -> None:
    """Add the jobs to the runtime's scheduler. A signing key that cannot be read stops
    the start (with the reason) rather than leave the chain silently unsigned."""
    common = {"max_instances": 1, "coalesce": True}
    scheduler.add_job(
        subjects.catch_up,
        "interval",
        args=[db],
        seconds=SUBJECT_INDEX_SECONDS,
        id="audit_subject_index",
        **common,
    )
    signer = configured_signer(settings)
    if signer is not None:
        scheduler.add_job(
            checkpoint_job,
            "interval",
            args=[db, signer],
            seconds=settings.audit_checkpoint_seconds,
            id="audit_checkpoint",
            **common,
        )
