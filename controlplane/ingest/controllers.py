"""`/v1/verdicts`: detectors report here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from litestar.openapi.spec import Operation as OpenAPIOperation
from litestar.params import FromPath
from litestar.status_codes import HTTP_202_ACCEPTED
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api.body import validate
from controlplane.api.dependencies import provide
from controlplane.api.schemas import ErrorBody
from controlplane.auth.guards import principal_of, requires
from controlplane.auth.roles import READERS, Role
from controlplane.domain.verdict import Verdict, VerdictBatch
from controlplane.errors import InvalidInput
from controlplane.ingest.read_service import VerdictReader
from controlplane.ingest.schemas import IngestResult, VerdictOut
from controlplane.ingest.service import IngestService
from controlplane.plan.schemas import ActionOut


@dataclass
class _SubmitOperation(OpenAPIOperation):
    """Documents the body the handler parses itself (one verdict or a batch)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description='One verdict, or `{"verdicts": [...]}` with 1 to 1,000 of them.',
            content={"application/json": OpenAPIMediaType(schema=submission_schema())},
        )


def submission_schema() -> Schema:
    """The request body schema: a verdict or a batch, with nested models inlined."""
    verdict = _subject_needs_one(_inline(Verdict.model_json_schema()))
    batch = _subject_needs_one(_inline(VerdictBatch.model_json_schema()))
    return Schema(one_of=[_to_schema(verdict), _to_schema(batch)])


_SUBJECT_NEEDS_ONE = {
    "anyOf": [
        *(
            {"required": [name], "properties": {name: {"type": "string"}}}
            for name in ("account_id", "api_key_id", "org_id")
        ),
        {"required": ["ips"], "properties": {"ips": {"type": "array", "minItems": 1}}},
    ]
}


_ADDRESS = {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}


def _subject_needs_one(node: Any) -> Any:
    """States `Subject`'s rules (at least one field set, addresses in `ips`) in the
    schema, which pydantic cannot derive from its validators."""
    if isinstance(node, dict):
        if node.get("title") == "Subject":
            node.update(_SUBJECT_NEEDS_ONE)
            node["properties"]["ips"]["items"] = _ADDRESS
        for value in node.values():
            _subject_needs_one(value)
    elif isinstance(node, list):
        for value in node:
            _subject_needs_one(value)
    return node


def _inline(document: dict[str, Any]) -> dict[str, Any]:
    defs = document.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(document)  # type: ignore[no-any-return]


def _to_schema(document: dict[str, Any]) -> Schema:
    """A JSON Schema document as litestar's `Schema` (only the keys pydantic emits here)."""
    names = {
        "anyOf": "any_of",
        "oneOf": "one_of",
        "additionalProperties": "additional_properties",
        "maxLength": "max_length",
        "minLength": "min_length",
        "maxItems": "max_items",
        "minItems": "min_items",
        "maxProperties": "max_properties",
    }
    fields: dict[str, Any] = {}
    for key, value in document.items():
        name = names.get(key, key)
        if name in ("properties",):
            value = {k: _to_schema(v) for k, v in value.items()}
        elif name in ("any_of", "one_of"):
            value = [_to_schema(v) for v in value]
        elif name in ("items", "additional_properties") and isinstance(value, dict):
            value = _to_schema(value)
        elif name == "type":
            value = OpenAPIType(value)
        elif name in ("title", "default") or name not in Schema.__dataclass_fields__:
            continue
        fields[name] = value
    return Schema(**fields)


def parse_submission(body: Any) -> list[Verdict]:
    """One verdict or a batch, from the decoded body; a 422 names every bad field (with
    its index in a batch)."""
    try:
        if isinstance(body, dict) and "verdicts" in body:
            return list(validate(VerdictBatch, body).verdicts)
        return [validate(Verdict, body)]
    except ValidationError as exc:
        raise InvalidInput(
            f"{exc.error_count()} invalid field(s); nothing was stored",
            details=[
                {"field": _field(err["loc"]), "message": err["msg"], "expected": err["type"]}
                for err in exc.errors(include_url=False)
            ],
        ) from None


def _field(loc: tuple[Any, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


class VerdictController(Controller):
    path = "/v1/verdicts"
    tags = ["verdicts"]
    guards = [requires(Role.DETECTOR, *READERS)]

    @post(
        "/",
        operation_id="submitVerdicts",
        status_code=HTTP_202_ACCEPTED,
        operation_class=_SubmitOperation,
        summary="Submit verdicts",
        guards=[requires(Role.DETECTOR)],
        responses={
            409: ResponseSpec(
                ErrorBody,
                description="A verdict id was stored before with "
                "different content; nothing of the request was stored.",
            ),
            422: ResponseSpec(
                ErrorBody,
                description="Invalid input; each bad field is named "
                "with its index in the batch; nothing was stored.",
            ),
        },
    )
    async def submit(
        self, request: Request[Any, Any, Any], ingest: NamedDependency[IngestService]
    ) -> IngestResult:
        """Store one verdict or a batch durably, decide each against the active policy
        revision, and answer with the decision and the planned actions per verdict.

        Idempotent by verdict `id`: a repeat returns the first result and makes no
        second decision; the same `id` with different content is a 409. A batch
        with one invalid verdict is refused whole (422, each bad field named)."""
        verdicts = parse_submission(await request.json())
        return await ingest.submit(verdicts, actor=principal_of(request).name)

    @get("/{verdict_id:str}", operation_id="getVerdict", summary="Get a verdict")
    async def get_verdict(
        self,
        verdict_id: FromPath[str],
        verdicts: NamedDependency[VerdictReader],
        session: NamedDependency[AsyncSession],
    ) -> VerdictOut:
        """A stored verdict with its decision and actions."""
        row, decision, actions = await verdicts.get(session, verdict_id)
        return VerdictOut(
            id=row.id,
            status=row.status,
            received_at=row.received_at,
            trace_id=row.trace_id,
            verdict=row.body,
            decision_id=decision.id if decision else None,
            decision_status=decision.status if decision else None,
            policy_revision=decision.policy_revision if decision else None,
            actions=[ActionOut.from_row(a.model_dump()) for a in actions],
        )


DEPENDENCIES = {
    "ingest": provide(lambda runtime: runtime.ingest),
    "verdicts": provide(lambda runtime: VerdictReader()),
}
ROUTES = [VerdictController]
