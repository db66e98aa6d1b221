"""An in-memory gateway: for documentation, tests and trying Tollgate without one.

It enforces nothing; it holds entries the way a gateway would, and can be made
unreachable (`down`), to refuse some entries for now (`refuse`) or for good
(`reject`) to show how Tollgate retries, recovers and reports.
"""

from __future__ import annotations

import httpx

from controlplane.enforce.sdk import (
    ApplyResult,
    ConnectorConfig,
    Diff,
    Entry,
    EntryType,
    GatewayState,
    GatewayUnavailable,
    Health,
)


class MemoryConnector:
    def __init__(self, config: ConnectorConfig, http: httpx.AsyncClient) -> None:
        self.name = config.name
        self.entries: dict[tuple[str, str, str], Entry] = {}
        self.down = False
        self.refuse: set[tuple[str, str, str]] = set()
        self.reject: set[tuple[str, str, str]] = set()
        self.applies = 0

    def capabilities(self) -> frozenset[EntryType]:
        return frozenset(EntryType)

    async def observe(self) -> GatewayState:
        self._reachable()
        return GatewayState(frozenset(self.entries.values()))

    async def apply(self, diff: Diff) -> ApplyResult:
        self._reachable()
        self.applies += 1
        result = ApplyResult()
        for entry in (*diff.add, *diff.change):
            if entry.key in self.reject:
                result.rejected.append((entry, "the gateway cannot hold this entry"))
                continue
            if entry.key in self.refuse:
                # Quotes the target as real gateways do: Tollgate must redact key ids.
                result.failed.append((entry, f"refused by the gateway: {entry.target_value}"))
                continue
            self.entries[entry.key] = entry
            result.done.append(entry)
        for entry in diff.remove:
            self.entries.pop(entry.key, None)
            result.done.append(entry)
        return result

    async def health(self) -> Health:
        return Health(ok=not self.down, gateway="memory", detail="down" if self.down else "")

    async def close(self) -> None:
        self.entries.clear()

    def _reachable(self) -> None:
        if self.down:
            raise GatewayUnavailable(f"{self.name}: the in-memory gateway is down")


def create(config: ConnectorConfig, http: httpx.AsyncClient) -> MemoryConnector:
    return MemoryConnector(config, http)
