"""The share policy: `data.tollgate.share.decision`, evaluated on the active policy
revision with the sandboxed engine before anything is signed and published."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any

from controlplane.engine.bundle import PolicyBundle
from controlplane.engine.sandbox import new_engine, opa_module
from controlplane.errors import PolicyError

log = logging.getLogger(__name__)
DOCUMENT = "tollgate.share.decision"


@dataclass(frozen=True)
class ShareDecision:
    publish: bool
    tlp: str
    pap: str
    reason: str


class SharePolicy:
    """One OPA engine holding the revision the decisions are made with; rebuilt when
    the active revision changes."""

    def __init__(self) -> None:
        self._engine: Any = None
        self._revision: str | None = None
        self._lock = threading.Lock()

    async def decide(
        self, bundle: PolicyBundle, inputs: list[dict[str, Any]]
    ) -> list[ShareDecision]:
        return await asyncio.to_thread(self._decide, bundle, inputs)

    def _decide(self, bundle: PolicyBundle, inputs: list[dict[str, Any]]) -> list[ShareDecision]:
        opa = opa_module()
        with self._lock:
            if self._revision != bundle.revision:
                if self._engine is not None:
                    self._engine.close()
                    self._engine = None
                self._engine = new_engine(bundle)
                self._revision = bundle.revision
            decisions = []
            for item in inputs:
                try:
                    result = self._engine.eval_document(DOCUMENT, item)
                except opa.OpaUndefinedError:
                    result = {"publish": False, "reason": f"data.{DOCUMENT} is undefined"}
                except opa.OpaError as exc:
                    raise PolicyError(f"share policy failed: {exc.message}") from None
                decisions.append(_parse(result, item))
            return decisions

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None
                self._revision = None


_TLPS = ("clear", "green", "amber", "amber+strict", "red")
_PAPS = ("clear", "green", "amber", "red")


def _parse(result: Any, item: dict[str, Any]) -> ShareDecision:
    """A malformed answer publishes nothing (and says so), never something looser."""
    indicator = item.get("indicator", {})
    if not isinstance(result, dict) or result.get("publish") is not True:
        reason = result.get("reason") if isinstance(result, dict) else None
        return ShareDecision(False, "", "", str(reason or "the share policy said no"))
    tlp, pap = result.get("tlp"), result.get("pap")
    if tlp not in _TLPS or pap not in _PAPS:
        return ShareDecision(False, "", "", f"share policy gave markings {tlp!r}/{pap!r}")
    # Never looser than the indicator's own markings, whatever the policy says.
    if _TLPS.index(tlp) < _TLPS.index(indicator.get("tlp", "green")):
        tlp = indicator["tlp"]
    if _PAPS.index(pap) < _PAPS.index(indicator.get("pap", "green")):
        pap = indicator["pap"]
    return ShareDecision(True, tlp, pap, str(result.get("reason", "")))
