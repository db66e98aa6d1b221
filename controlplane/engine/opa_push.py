"""Making an OPA server hold one revision of Tollgate's policies and data, over the
REST API (through `controlplane.engine.opa_http`), and this process's record of it.

A push replaces the server's revision; it does not add one beside it. Policy ids are
namespaced by revision (`tollgate/<revision>/<path>`), but OPA compiles every module it
holds into one policy set, and two revisions of the same packages are not a valid one:
a `default` rule defined twice is a compile error, two values of a complete rule are an
`eval_conflict_error`, and partial rules (`contains`) union, so a rule the new revision
deleted would keep firing. So `push` deletes every other `tollgate/...` module, then
uploads the data and the modules. The namespaced ids still pay: the server's policy list
says which revision it holds, a push finds leftovers of any earlier revision (even of a
process that died mid-push), and one revision can be taken off by its prefix.

Data: `PUT /v1/data/{path}` replaces the document at the path, and all revisions share
one data tree. Policies read their data by absolute path (`data.tollgate.settings`), so
data cannot be namespaced per revision without rewriting the policies: the data of the
revision the server holds is the data, which is what a replacing push needs anyway. The
bundle's data files are deep-merged as the embedded engine does, then each top-level
document (`data.tollgate`) is uploaded whole, so Tollgate never replaces the root of the
tree (another tenant's documents, OPA's `data.system`). Top-level documents that the
previous revision pushed by this process had and the new one lacks are deleted; one
left by another process is unknown here and stays.

`ServerState` is per process: run one Tollgate process per OPA server (the sidecar
layout); two processes pushing to one server would replace each other's revisions.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from controlplane.engine.bundle import PolicyBundle
from controlplane.engine.embedded import PROBE_INPUT
from controlplane.engine.opa_http import OpaHttp, OpaRejected
from controlplane.errors import EngineUnavailable, PolicyError

log = logging.getLogger(__name__)

POLICY_ROOT = "tollgate"
"""Every module Tollgate pushes has an id under this prefix; others are left alone."""


def policy_id(revision: str, path: str) -> str:
    """`tollgate/<revision>/<path relative to the policy dir>`."""
    return f"{POLICY_ROOT}/{revision}/{path}"


@dataclass
class ServerState:
    """What this process last pushed to one OPA server."""

    revision: str | None = None
    """The revision the server holds whole and probed; None while a push runs, or
    after a push that failed and could not put the previous revision back."""
    bundle: PolicyBundle | None = None
    """The last revision pushed whole: what a failed load puts back."""
    entrypoint: str = ""
    generation: int = 0
    """Bumped when a push starts and ends: a batch that saw it change is discarded."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """One push at a time per server."""

    def begin(self) -> None:
        self.revision = None
        self.generation += 1

    def serve(self, bundle: PolicyBundle, entrypoint: str) -> None:
        self.revision, self.bundle, self.entrypoint = bundle.revision, bundle, entrypoint
        self.generation += 1


_servers: dict[str, ServerState] = {}
_servers_lock = threading.Lock()


def server_state(url: str) -> ServerState:
    """The process's record of the OPA server at `url`."""
    with _servers_lock:
        return _servers.setdefault(url.rstrip("/"), ServerState())


def merged_data(bundle: PolicyBundle) -> dict[str, Any]:
    """The bundle's data files deep-merged into one tree, as the embedded engine's
    `add_data` does; a conflict is a `PolicyError` here as it is there."""
    tree: dict[str, Any] = {}
    for dotted, document in bundle.data:
        where = f"data.{dotted}" if dotted else "data"
        node: Any = tree
        keys = [key for key in dotted.split(".") if key]
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise PolicyError(f"data file mounted at {where}: {key} is not an object")
        if not keys:
            if not isinstance(document, dict):
                raise PolicyError(f"data file mounted at {where}: the root must be an object")
            _merge_into(tree, document, where)
        elif isinstance(node.get(keys[-1]), dict) and isinstance(document, dict):
            _merge_into(node[keys[-1]], document, where)
        elif keys[-1] in node:
            raise PolicyError(f"data file mounted at {where}: conflicts with another data file")
        else:
            node[keys[-1]] = document
    for key, value in tree.items():
        if not isinstance(value, dict):
            raise PolicyError(
                f"data.{key} is not an object: the remote engine uploads each top-level "
                "data document as a JSON object (opa-python-client accepts no other); "
                "move the value under a key"
            )
    return tree


def _merge_into(target: dict[str, Any], source: dict[str, Any], where: str) -> None:
    for key, value in source.items():
        if isinstance(target.get(key), dict) and isinstance(value, dict):
            _merge_into(target[key], value, where)
        elif key in target:
            raise PolicyError(f"data file mounted at {where}: {key} conflicts with other data")
        else:
            target[key] = value


async def settle(
    items: Sequence[str], apply: Callable[[str], Awaitable[None]]
) -> dict[str, OpaRejected]:
    """Apply `apply` to every item, in rounds, and return what OPA still refuses.

    OPA compiles the whole policy set on every PUT and DELETE, so a module that calls a
    function of a module not uploaded yet is refused until that one is, and a module
    another one calls cannot be deleted before it. Rounds find that order without
    parsing Rego; they stop when one makes no progress (at most n rounds)."""
    pending = list(items)
    while pending:
        refused: dict[str, OpaRejected] = {}
        for item in pending:
            try:
                await apply(item)
            except OpaRejected as exc:
                refused[item] = exc
        if len(refused) == len(pending):
            return refused
        pending = list(refused)
    return {}


async def push(http: OpaHttp, bundle: PolicyBundle, previous: PolicyBundle | None) -> None:
    """Make the server hold `bundle` and nothing else under `tollgate/` (module docstring)."""
    url = http.target.url
    ours = {policy_id(bundle.revision, path): path for path in bundle.modules}
    held = await http.policy_ids()
    stale = [i for i in held if i.startswith(POLICY_ROOT + "/") and i not in ours]
    refused = await settle(stale, http.delete_policy)
    if refused:
        raise EngineUnavailable(
            f"OPA at {url} refuses to delete modules of an earlier revision, which other "
            f"modules on the server still use: {describe_refused(refused)}. Delete them by hand "
            "(DELETE /v1/policies/<id>) and load again"
        )
    documents = merged_data(bundle)
    if previous is not None:
        for key in sorted(merged_data(previous).keys() - documents.keys()):
            await http.delete_data(key)
    for key, document in documents.items():
        try:
            await http.put_data(key, document)
        except OpaRejected as exc:
            raise PolicyError(
                f"OPA at {url} refused the data of {bundle.root} at data.{key}: {exc.describe()}"
            ) from None
    refused = await settle(list(ours), lambda i: http.put_policy(i, bundle.modules[ours[i]]))
    if refused:
        files = "; ".join(f"{bundle.root / ours[i]}: {e.describe()}" for i, e in refused.items())
        raise PolicyError(
            f"OPA at {url} refused revision {bundle.revision}: {files}. Fix the modules "
            "(`tollgate policy check` compiles them the same way)",
            details=[{"field": ours[i], "message": exc.describe()} for i, exc in refused.items()],
        )


def describe_refused(refused: dict[str, OpaRejected]) -> str:
    return "; ".join(f"{i}: {exc.describe()}" for i, exc in refused.items())


async def probe(http: OpaHttp, bundle: PolicyBundle, entrypoint: str) -> None:
    """Evaluate `PROBE_INPUT`: an undefined entrypoint or an error fails the load."""
    url = http.target.url
    try:
        answer = await http.decide(entrypoint.replace(".", "/"), PROBE_INPUT)
    except OpaRejected as exc:
        raise PolicyError(f"OPA at {url} refused the probe evaluation: {exc.describe()}") from None
    if answer.error is not None:
        raise PolicyError(f"policy failed its probe evaluation on OPA at {url}: {answer.error}")
    if not answer.defined:
        raise PolicyError(
            f"entrypoint data.{entrypoint} is undefined on OPA at {url} with the policies "
            f"of {bundle.root}: check TOLLGATE_ENTRYPOINT and the package name of your "
            "decision policy"
        )


async def restore(http: OpaHttp, state: ServerState, failed: PolicyBundle) -> None:
    """Put the previous revision back after `failed` could not be loaded."""
    previous = state.bundle
    if previous is None:
        return  # Nothing decided from this server yet; the next load replaces what is there.
    try:
        await push(http, previous, failed)
        await probe(http, previous, state.entrypoint)
    except (EngineUnavailable, PolicyError) as exc:
        log.error(
            "revision %s could not be put back on OPA at %s after revision %s failed: %s",
            previous.revision,
            http.target.url,
            failed.revision,
            exc.message,
        )
        return
    state.serve(previous, state.entrypoint)
    log.warning(
        "revision %s is back on OPA at %s: revision %s failed to load",
        previous.revision,
        http.target.url,
        failed.revision,
    )
