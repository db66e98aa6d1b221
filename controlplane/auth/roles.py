"""Roles and what each may do (DESIGN.md, 'Security')."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    DETECTOR = "detector"
    """A detection program: submits verdicts and reads what became of them."""
    ENGINEER = "engineer"
    """A security engineer: policies, impact analysis, intel; reads everything."""
    REVIEWER = "reviewer"
    """On-call / reviewer: exemptions, lifts and appeals; reads everything."""
    SUPPORT = "support"
    """Customer support: files appeals for customers and follows them; decides nothing."""
    AUDITOR = "auditor"
    """Reads everything and changes nothing of the record; may sign an audit checkpoint
    and rebuild the audit subject index (derived data, outside the hashes)."""
    ADMIN = "admin"
    BOUNCER = "bouncer"
    """A CrowdSec bouncer: pulls block decisions (`/v1/decisions/stream`) with its token
    in `X-Api-Key`; nothing else."""
    PEER = "peer"
    """Another lab's Tollgate: reads the TAXII collections granted to its token's name
    (`intel.collections[].readers`), nothing else."""


READERS = (Role.ENGINEER, Role.REVIEWER, Role.AUDITOR, Role.ADMIN)
"""Everyone who may read the enforcement record."""

TAXII_READERS = (*READERS, Role.PEER)
"""Who may call the TAXII server (a peer only sees the collections granted to it)."""
