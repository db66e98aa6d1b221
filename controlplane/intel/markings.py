"""Markings: TLP 2.0 (the FIRST standard, as the OASIS TLP 2.0 STIX extension names it)
and PAP (Permissible Actions Protocol: what a recipient may do with the intel).

PAP bounds which actions intel may drive (MISP's PAP taxonomy): RED - nothing a
target could detect (no enforcement, at most watching); AMBER - passive checks
(review, rate limit); GREEN and CLEAR - may block. The default policy library
enforces that bound (`policies/tollgate/intel`).
"""

from __future__ import annotations

from typing import Any, Literal

Tlp = Literal["clear", "green", "amber", "amber+strict", "red"]
Pap = Literal["clear", "green", "amber", "red"]
TLPS: tuple[Tlp, ...] = ("clear", "green", "amber", "amber+strict", "red")
PAPS: tuple[Pap, ...] = ("clear", "green", "amber", "red")

TLP_EXTENSION = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
TLP_IDS: dict[str, str] = {
    "clear": "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
    "green": "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
    "amber": "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
    "amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
    "red": "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}
TLP_BY_ID = {v: k for k, v in TLP_IDS.items()}

PAP_IDS: dict[str, str] = {
    # Fixed ids (random UUIDv4s chosen once): the same at every lab running Tollgate.
    "clear": "marking-definition--39101956-8980-4504-b80d-60f32cac538e",
    "green": "marking-definition--8bee8351-4152-40f7-a60a-7f07eb62533b",
    "amber": "marking-definition--abf8ec14-9495-429a-94fa-b72b0dc2e60f",
    "red": "marking-definition--3b17a619-8185-4d96-80e9-2d21d4fb39ee",
}
PAP_BY_ID = {v: k for k, v in PAP_IDS.items()}
MARKINGS_CREATED = "2026-01-01T00:00:00.000Z"


def tlp_definition(tlp: str) -> dict[str, Any]:
    """The TLP 2.0 marking-definition object, as the OASIS extension publishes it."""
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": TLP_IDS[tlp],
        "created": "2022-10-01T00:00:00.000Z",
        "name": f"TLP:{tlp.upper()}",
        "extensions": {TLP_EXTENSION: {"extension_type": "property-extension", "tlp_2_0": tlp}},
    }


def pap_definition(pap: str) -> dict[str, Any]:
    """A PAP marking as a STIX statement marking (fixed ids, the same at every lab)."""
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": PAP_IDS[pap],
        "created": MARKINGS_CREATED,
        "name": f"PAP:{pap.upper()}",
        "definition_type": "statement",
        "definition": {"statement": f"PAP:{pap.upper()}"},
    }


def markings_of(refs: list[str]) -> tuple[str | None, str | None]:
    """(tlp, pap) named by an object's `object_marking_refs`."""
    tlp = next((TLP_BY_ID[r] for r in refs if r in TLP_BY_ID), None)
    pap = next((PAP_BY_ID[r] for r in refs if r in PAP_BY_ID), None)
    return tlp, pap
