"""Tollgate indicators as STIX 2.1 objects (built with the `stix2` library) and back.

Each indicator carries a STIX pattern other tools can read, and Tollgate's own fields
(kind, canonical value or keyed hash, PAP, first/last seen, decay, a signature's
threshold) in a property extension, `TOLLGATE_EXTENSION`, whose definition is
published beside them. Ids are random (UUIDv4): never derived from a value, so an id
tells nothing about the account or key behind it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from controlplane.intel.markings import PAP_IDS, TLP_IDS, markings_of

TOLLGATE_EXTENSION = "extension-definition--0c4bca42-24dd-4981-b091-1811283852e4"
_IDENTITY_NAMESPACE = uuid.UUID("2b2c8d3e-8a0f-4c59-9e7a-4f3f0b7f6d11")
EXTENSION_CREATED = "2026-01-01T00:00:00.000Z"
KINDS = ("cidr", "asn", "org_pattern", "account", "api_key", "org", "payment", "signature")


class Unusable(Exception):
    """A STIX object Tollgate cannot take as an indicator (says why)."""


def _v21() -> Any:
    """The `stix2` library's STIX 2.1 objects, imported at the first object built: with
    its pattern grammar and TAXII client it is about 20 MB a server that never shares
    intel would carry."""
    from stix2 import v21

    return v21


def stix_time(moment: datetime) -> str:
    """STIX timestamp, UTC, millisecond precision."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return f"{text[:-3]}Z"


def parse_time(text: Any) -> datetime:
    if not isinstance(text, str):
        raise Unusable(f"{text!r} is not a timestamp")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        raise Unusable(f"{text!r} is not an RFC 3339 timestamp") from None


def identity_id(lab: str) -> str:
    """The lab's STIX identity id (lab names are public in the exchange)."""
    return f"identity--{uuid.uuid5(_IDENTITY_NAMESPACE, lab)}"


def identity(lab: str) -> dict[str, Any]:
    return _plain(
        _v21().Identity(
            id=identity_id(lab),
            name=lab,
            identity_class="organization",
            created=EXTENSION_CREATED,
            modified=EXTENSION_CREATED,
        )
    )


def extension_definition(lab: str) -> dict[str, Any]:
    return _plain(
        _v21().ExtensionDefinition(
            id=TOLLGATE_EXTENSION,
            created_by_ref=identity_id(lab),
            created=EXTENSION_CREATED,
            modified=EXTENSION_CREATED,
            name="Tollgate indicator",
            description="Kind, canonical value or keyed hash, PAP, first and last seen, "
            "decay and detection-signature fields of a Tollgate indicator.",
            schema="Tollgate docs/intel.md, 'The indicator extension'",
            version="1.0.0",
            extension_types=["property-extension"],
        )
    )


def _pattern(kind: str, value: str, detail: Mapping[str, Any] | None) -> str:
    quoted = value.replace("\\", "\\\\").replace("'", "\\'")
    if kind == "cidr":
        family = "ipv6-addr" if ":" in value else "ipv4-addr"
        return f"[{family}:value ISSUBSET '{quoted}']"
    if kind == "asn":
        return f"[autonomous-system:number = {int(value)}]"
    if kind == "org_pattern":
        return f"[x-tollgate-org:name MATCHES '{quoted}']"
    if kind == "signature":
        d = detail or {}
        op = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<", "eq": "="}[str(d.get("op", "gte"))]
        return (
            f"[x-tollgate-signal:name = '{quoted}' AND "
            f"x-tollgate-signal:value {op} {d.get('threshold', '0')}]"
        )
    return (
        f"[x-tollgate-identifier:kind = '{kind}' AND "
        f"x-tollgate-identifier:hmac_sha256 = '{quoted}']"
    )


def indicator_object(row: Mapping[str, Any], lab: str) -> dict[str, Any]:
    """The STIX indicator for an indicator row (as a dict), unsigned."""
    created = row["created_at"]
    valid_from = row.get("first_seen") or created
    extension: dict[str, Any] = {
        "extension_type": "property-extension",
        "kind": row["kind"],
        "value": row["value"],
        "pap": row.get("pap") or "green",
    }
    for key in ("first_seen", "last_seen"):
        if row.get(key) is not None:
            extension[key] = stix_time(row[key])
    if row.get("decay_days"):
        extension["decay_half_life_days"] = max(1, round(row["decay_days"]))
    if row.get("detail"):
        extension["detail"] = {str(k): str(v) for k, v in row["detail"].items()}
    properties: dict[str, Any] = {
        "id": row["stix_id"],
        "created_by_ref": identity_id(row.get("source") or lab),
        "created": stix_time(created),
        "modified": stix_time(row.get("modified") or created),
        "name": f"{row['kind']} indicator",
        "description": f"Tollgate {row['kind']} indicator shared by {row.get('source') or lab}",
        "indicator_types": ["malicious-activity"],
        "pattern": _pattern(row["kind"], row["value"], row.get("detail")),
        "pattern_type": "stix",
        "pattern_version": "2.1",
        "valid_from": stix_time(valid_from),
        "confidence": max(0, min(100, round(float(row["confidence"]) * 100))),
        "object_marking_refs": [TLP_IDS[row["tlp"]], PAP_IDS[row.get("pap") or "green"]],
        "extensions": {TOLLGATE_EXTENSION: extension},
        "revoked": bool(row.get("revoked")),
    }
    if row.get("expires_at") is not None and row["expires_at"] > valid_from:
        properties["valid_until"] = stix_time(row["expires_at"])
    return _plain(_v21().Indicator(**properties, allow_custom=True))


def opinion_object(
    indicator_stix_id: str, lab: str, reason: str, tlp: str, pap: str, at: datetime
) -> dict[str, Any]:
    """A retraction: this lab strongly disagrees with the indicator (a false positive)."""
    return _plain(
        _v21().Opinion(
            id=f"opinion--{uuid.uuid4()}",
            created_by_ref=identity_id(lab),
            created=stix_time(at),
            modified=stix_time(at),
            opinion="strongly-disagree",
            explanation=reason,
            object_refs=[indicator_stix_id],
            object_marking_refs=[TLP_IDS[tlp], PAP_IDS[pap]],
        )
    )


def _plain(obj: Any) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(obj.serialize())
    return document


def parse_indicator(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An indicator row's fields from a STIX indicator Tollgate published (its
    extension); `Unusable` when it is not one."""
    if obj.get("type") != "indicator":
        raise Unusable(f"a {obj.get('type')!r}, not an indicator")
    extension = (obj.get("extensions") or {}).get(TOLLGATE_EXTENSION)
    if not isinstance(extension, dict):
        raise Unusable("no Tollgate indicator extension: its kind and value are unknown")
    kind, value = extension.get("kind"), extension.get("value")
    if kind not in KINDS or not isinstance(value, str) or not value:
        raise Unusable(f"kind {kind!r} / value are not a Tollgate indicator's")
    tlp, pap = markings_of(list(obj.get("object_marking_refs") or []))
    confidence = obj.get("confidence", 50)
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int)
        or not 0 <= confidence <= 100
    ):
        raise Unusable("confidence must be an integer from 0 to 100")
    decay = extension.get("decay_half_life_days")
    detail = extension.get("detail")
    return {
        "kind": kind,
        "value": value,
        "stix_id": str(obj.get("id")),
        "confidence": confidence / 100,
        "tlp": tlp or "amber",
        "pap": pap or extension.get("pap") or "amber",
        "first_seen": parse_time(extension["first_seen"]) if "first_seen" in extension else None,
        "last_seen": parse_time(extension["last_seen"]) if "last_seen" in extension else None,
        "decay_days": float(decay) if isinstance(decay, int) and decay > 0 else None,
        "detail": detail if isinstance(detail, dict) else None,
        "expires_at": parse_time(obj["valid_until"]) if "valid_until" in obj else None,
        "created_at": parse_time(obj.get("created")),
        "modified": parse_time(obj.get("modified") or obj.get("created")),
        "revoked": bool(obj.get("revoked")),
    }
