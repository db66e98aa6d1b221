"""Intel's jobs: pulling peers' TAXII collections. A job talks to a peer between its
transactions, so it opens them itself, one per page.

Paging (TAXII 2.1, 3.4): `added_after` is exclusive and about when the server added an
object. Each page's `X-TAXII-Date-Added-Last` is saved as the peer's cursor in the
transaction that stores the page, so a crash repeats at most one page (de-duplicated)
and skips none; within one pull, `next` is followed when the server gives one, and
`added_after` = the last page's header when it says `more` without a `next`.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from controlplane.intel.config import Peer
from controlplane.intel.pull import Intake, PullFailed, PullReport
from controlplane.intel.taxii.schemas import MEDIA_TYPE
from controlplane.store.db import Database
from controlplane.store.models import IndicatorRow
from controlplane.store.types import utcnow

log = logging.getLogger(__name__)

PAGE = 5000
MAX_PAGES = 1000
"""A pull stops after this many pages (5M objects) and goes on at the next run."""


class Puller:
    def __init__(
        self,
        db: Database,
        intake: Intake,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._db = db
        self._intake = intake
        self._transport = transport

    async def pull_all(self) -> list[PullReport]:
        """Pull every configured peer (the scheduled, leader-only job)."""
        return [await self.pull(peer) for peer in self._intake.peers]

    async def pull(self, peer: Peer) -> PullReport:
        report = PullReport(peer.name)
        now = utcnow()
        async with self._db.read() as session:
            cursor = await self._intake.cursor(session, peer)
        url = f"{peer.url}collections/{peer.collection}/objects/"
        headers = {"Accept": MEDIA_TYPE}
        auth: httpx.Auth | None = None
        if peer.auth == "basic":
            user, _, password = peer.token.partition(":")
            auth = httpx.BasicAuth(user, password)
        else:
            headers["Authorization"] = f"Bearer {peer.token}"
        params: dict[str, Any] = {"limit": PAGE}
        if cursor:
            params["added_after"] = cursor
        retracted: list[IndicatorRow] = []
        try:
            async with httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(30, connect=5),
                headers=headers,
                auth=auth,
            ) as client:
                while report.pages < MAX_PAGES:
                    response = await client.get(url, params=params)
                    if response.status_code != 200:
                        raise PullFailed(
                            f"{peer.name} answered {response.status_code} for its collection "
                            f"{peer.collection}: {response.text[:200]}"
                        )
                    body = response.json()
                    objects = body.get("objects") or []
                    last = response.headers.get("X-TAXII-Date-Added-Last")
                    report.pages += 1
                    async with self._db.transaction() as session:
                        retracted += await self._intake.take_page(
                            session, peer, objects, report, last or cursor
                        )
                    cursor = last or cursor
                    if not body.get("more"):
                        break
                    if body.get("next"):
                        # The same filters, and the server's cursor within them.
                        params = {**params, "next": body["next"]}
                    elif last:
                        params = {"limit": PAGE, "added_after": last}
                    else:
                        raise PullFailed(
                            f"{peer.name} said there is more but gave neither `next` nor "
                            "X-TAXII-Date-Added-Last: cannot page on"
                        )
        except (httpx.HTTPError, ValueError, PullFailed) as exc:
            report.error = (
                str(exc) if isinstance(exc, PullFailed) else f"{type(exc).__name__}: {exc}"
            )
            log.warning("intel pull from %s failed: %s", peer.name, report.error)
        state: dict[str, Any] = {"last_pull_at": now, "last_error": report.error}
        if report.error is None:
            state["last_success_at"] = now
        async with self._db.transaction() as session:
            await self._intake.settle(
                session, peer, report, retracted, f"pulled from {peer.name}", state
            )
        return report
