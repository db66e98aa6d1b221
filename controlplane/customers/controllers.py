"""`/v1/customers`: the lab's records of its accounts (reviewers and admins)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import OpenAPIMediaType, RequestBody
from litestar.openapi.spec import Operation as OpenAPIOperation
from litestar.params import FromPath, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_204_NO_CONTENT
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.api.dependencies import provide
from controlplane.api.schemas import ErrorBody
from controlplane.auth.guards import principal_of, requires
from controlplane.auth.roles import Role
from controlplane.customers.schemas import (
    CustomerBatch,
    CustomerIn,
    CustomerOut,
    CustomerPage,
    ImportResult,
)
from controlplane.customers.service import CustomerService
from controlplane.errors import InvalidInput
from controlplane.ingest.controllers import _inline, _to_schema

MAX_BODY = 16 * 1024 * 1024

_AUTH = {
    401: ResponseSpec(ErrorBody, description="No bearer token, or an unknown one."),
    403: ResponseSpec(ErrorBody, description="The token's role may not do this."),
}
_UNAVAILABLE = {
    503: ResponseSpec(ErrorBody, description="The database cannot be reached; retry later."),
}


@dataclass
class _ImportOperation(OpenAPIOperation):
    """Documents the body the handler parses itself (so a bad field is named exactly)."""

    def __post_init__(self) -> None:
        self.request_body = RequestBody(
            required=True,
            description='`{"customers": [...]}` with 1 to 10,000 records.',
            content={
                "application/json": OpenAPIMediaType(
                    schema=_to_schema(_inline(CustomerBatch.model_json_schema()))
                )
            },
        )


def parse_customers(raw: bytes) -> list[CustomerIn]:
    """A batch of records; a 422 names every bad field (`customers[3].account_id`)."""
    if len(raw) > MAX_BODY:
        raise InvalidInput(f"body is over {MAX_BODY // 1024 // 1024} MiB: send smaller batches")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"body is not valid JSON: {exc}") from None
    try:
        return list(CustomerBatch.model_validate(body).customers)
    except ValidationError as exc:
        raise InvalidInput(
            f"{exc.error_count()} invalid field(s); nothing was stored",
            details=[
                {"field": _field(err["loc"], err["msg"]), "message": err["msg"]}
                for err in exc.errors(include_url=False)
            ],
        ) from None


def _field(loc: tuple[Any, ...], message: str) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    if not path and "customers[" in message:  # a whole-batch rule names its record itself
        return message.split(": ", 1)[0].removeprefix("Value error, ")
    return path or "body"


def _out(row: Any) -> CustomerOut:
    return CustomerOut.model_validate(row.model_dump())


class CustomerController(Controller):
    path = "/v1/customers"
    tags = ["customers"]
    guards = [requires(Role.REVIEWER)]

    @post(
        "/",
        operation_id="importCustomers",
        summary="Import customer records",
        status_code=HTTP_200_OK,
        operation_class=_ImportOperation,
        responses={
            **_AUTH,
            413: ResponseSpec(ErrorBody, description="The body is too large."),
            415: ResponseSpec(ErrorBody, description="The body is not JSON."),
            422: ResponseSpec(
                ErrorBody,
                description="A bad record; each bad field is named with its index; "
                "nothing was stored.",
            ),
            **_UNAVAILABLE,
        },
    )
    async def import_customers(
        self,
        request: Request[Any, Any, Any],
        customers: NamedDependency[CustomerService],
        session: NamedDependency[AsyncSession],
    ) -> ImportResult:
        """Store up to 10,000 records whole: a known account's record is replaced; one bad
        record refuses the whole request (422, the field named)."""
        records = parse_customers(await request.body())
        done = await customers.import_(session, records, actor=principal_of(request).name)
        return ImportResult(created=done.created, updated=done.updated)

    @get(
        "/",
        operation_id="listCustomers",
        summary="List customer records",
        responses={**_AUTH, **_UNAVAILABLE},
    )
    async def list_customers(
        self,
        customers: NamedDependency[CustomerService],
        session: NamedDependency[AsyncSession],
        cursor: Annotated[str | None, QueryParameter(max_length=200)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> CustomerPage:
        """Records by account id; `next_cursor` pages on."""
        rows, after = await customers.page(session, cursor, limit)
        return CustomerPage(customers=[_out(r) for r in rows], next_cursor=after)

    @get(
        "/{account_id:str}",
        operation_id="getCustomer",
        summary="Get a customer record",
        responses={
            **_AUTH,
            404: ResponseSpec(ErrorBody, description="No record for this account."),
            **_UNAVAILABLE,
        },
    )
    async def get_customer(
        self,
        account_id: FromPath[str],
        customers: NamedDependency[CustomerService],
        session: NamedDependency[AsyncSession],
    ) -> CustomerOut:
        """One account's record."""
        return _out(await customers.get(session, account_id))

    @delete(
        "/{account_id:str}",
        operation_id="deleteCustomer",
        summary="Delete a customer record",
        status_code=HTTP_204_NO_CONTENT,
        responses={
            **_AUTH,
            404: ResponseSpec(ErrorBody, description="No record for this account."),
            **_UNAVAILABLE,
        },
    )
    async def delete_customer(
        self,
        request: Request[Any, Any, Any],
        account_id: FromPath[str],
        customers: NamedDependency[CustomerService],
        session: NamedDependency[AsyncSession],
    ) -> None:
        """Forget an account's record: policies see it as unknown from the next verdict."""
        await customers.delete(session, account_id, actor=principal_of(request).name)


DEPENDENCIES = {"customers": provide(lambda runtime: runtime.customers)}
ROUTES = [CustomerController]
