"""HAProxy: blocks, key revocations and per-key rate limits through the Runtime API.

HAProxy applies runtime changes to ACLs and maps at once, without a reload, but
forgets them at the next reload or restart. So every change is made twice: live,
over the `stats socket ... level admin` (one command per entry, each reply read
before the next: HAProxy 2.6 takes one entry per `add acl` and blind pipelining
breaks the socket), and in the ACL/map files HAProxy loads at start.

An apply costs what its diff holds, never what HAProxy already enforces: the
connector keeps a model of what the runtime holds per file (read by `observe()`, or
at a file's first apply, and updated by every command that succeeds), sends only the
diff's commands, and writes the files from the model later, coalesced: at most once
per `file_flush_seconds`, in a background task, atomically (temp file + fsync +
rename), and at `observe()` and `close()`. The model holds each key's lines as the file
spells them, so a write joins those strings, in parts, with no Python work per entry.
A reload inside that window loses that window's changes until the next reconcile puts
them back; a file that cannot be written is reported by `health()` and retried at
every period.

An entry HAProxy can never hold (a value the runtime refuses to parse, a key its
files cannot spell, a subject it cannot see) is `rejected`; a busy or unreachable
socket is retryable.

What lives where (`sample_config()` writes the matching haproxy.cfg):

- block ip / cidr: `blocked.acl`, read by `src -f`: 403 (with the reference that
  `blocked_ref.map`, address -> reference, holds for the blocked value), unless the
  source is in
- allow ip / cidr: `allowed.acl` (exemptions carved out of blocked ranges), consulted
  before the block list;
- revoke_key api_key: `revoked.map` (key -> the reference a refusal quotes): 401 with
  the reference in the body and an `x-tollgate-reference` header;
- rate_limit api_key: `rate_limit.map` (key -> `requests per minute:reference`), whose
  limit a stick-table rule compares with the key's request rate over the last minute:
  429 with the reference;
- rate_limit account / org: `rate_limit_account.map` / `rate_limit_org.map` (the same
  values), only when `account_header` / `org_header` name a header that a trusted layer
  in front sets;
- suspend account / org: `suspended_account.map` / `suspended_org.map` (id -> the
  reference), read from the same headers: 403 with the reference, whatever key or
  address the request comes with. Without the header a suspension is rejected here;
  Tollgate also revokes every key it knows of the account or org, which HAProxy
  enforces through `revoked.map`.

Every refusal carries the reference of the entry that refused it (`Entry.reference`) in
an `x-tollgate-reference` header and its JSON body: what a customer quotes in an appeal.

Keys are matched as Tollgate names them: `key_match: fingerprint` (default) hashes the
key header in HAProxy (`sha2(256),hex,lower`), so `api_key_id` must be the key's SHA-256
fingerprint; `key_match: id` takes the header as the key id.

Observed values are canonical (`127.0.0.2`, `10.0.0.0/8`), as Tollgate stores targets;
deletes use the exact string HAProxy holds (`del acl` compares strings, so
`127.0.0.2/32` is not `127.0.0.2`). A large change to one file (a full sync) is
staged with `prepare` / `add @N` / `commit`, so HAProxy switches to the new list at
once instead of enforcing half of it for a while.

This module never imports Tollgate's domain: only `controlplane.enforce.sdk`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from controlplane.enforce.sdk import (
    ApplyResult,
    ConnectorConfig,
    ConnectorError,
    Diff,
    Entry,
    EntryType,
    GatewayState,
    GatewayUnavailable,
    Health,
)
from controlplane.enforce.targets import refusal
from controlplane.enforce.toolkit import (
    Terms,
    atomic_write,
    observed,
    observed_once,
    option_error,
    parse_options,
    release_freed_memory,
)

PROMPT = b"\n> "
"""How an interactive (`prompt`) CLI session ends every reply."""
REFERENCE_HEADER = "x-tollgate-reference"
"""The response header a refusal carries the action's reference in."""
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,199}$")
"""Keys the CLI and map files take verbatim: no spaces, `;`, `#` or backslashes."""
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"New version created: (\d+)")
_REFUSED = re.compile(r"unable to parse|is not a valid")
"""How HAProxy refuses a value it cannot hold (a key that is no address in a `map_ip`,
not an address for `src`): retrying cannot help."""
_BUFFER = 1 << 22
"""Largest reply read whole (a `show` reply, which can be tens of MB, is read in parts:
`_Cli.survey`); also how much the session buffers ahead of what was read."""

_MAPS: Terms[tuple[EntryType, str], str] = Terms(
    {
        (EntryType.REVOKE_KEY, "api_key"): "revoked_map",
        (EntryType.RATE_LIMIT, "api_key"): "rate_limit_map",
        (EntryType.RATE_LIMIT, "account"): "account_rate_limit_map",
        (EntryType.RATE_LIMIT, "org"): "org_rate_limit_map",
        (EntryType.SUSPEND, "account"): "account_suspend_map",
        (EntryType.SUSPEND, "org"): "org_suspend_map",
    }
)
"""Which map file (its option) holds each keyed entry; blocks go to `blocked_acl`,
exemptions to `allowed_acl`, and blocked values' references to `blocked_ref_map`.
Account and org limits and suspensions only when a header carries them
(`account_header`, `org_header`)."""
_FILE_OPTIONS = (
    "blocked_acl",
    "allowed_acl",
    "blocked_ref_map",
    *(option for _, option in _MAPS.items()),
)

# -- options --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HAProxyOptions:
    """The connector's `options:` in tollgate.yaml; `sample_config()` renders the
    haproxy.cfg that pairs with the same values, so both sides name the same files."""

    socket: str = "/run/haproxy/admin.sock"
    """The Runtime API socket (`stats socket PATH level admin`)."""
    state_dir: str = "/etc/haproxy/tollgate"
    """Where the ACL and map files live when not named one by one."""
    blocked_acl: str = ""
    allowed_acl: str = ""
    """IPs and CIDRs served whatever block covers them (exemptions)."""
    blocked_ref_map: str = ""
    """Blocked IPs and CIDRs -> the reference a 403 quotes (kept in step with the ACL)."""
    revoked_map: str = ""
    rate_limit_map: str = ""
    account_rate_limit_map: str = ""
    org_rate_limit_map: str = ""
    account_suspend_map: str = ""
    org_suspend_map: str = ""
    key_header: str = "x-api-key"
    """The request header that carries the API key (or the key id with `key_match: id`)."""
    key_match: str = "fingerprint"
    """`fingerprint`: HAProxy hashes the header with SHA-256 and matches `api_key_id` as
    a lowercase hex fingerprint. `id`: the header is the lab's key id, matched as is."""
    account_header: str = ""
    """A header carrying the account id, set by an authenticating layer in front: enables
    account rate limits and suspensions. Empty: they are rejected (HAProxy cannot see
    accounts; a suspended account's keys are still revoked one by one)."""
    org_header: str = ""
    """As `account_header`, for organisations."""
    connect_timeout: float = 1.0
    read_timeout: float = 5.0
    """Seconds one reply of the Runtime API may take (a `show` reply: each part of it)."""
    bulk_threshold: int = 1000
    """A file's change of at least this many entries, and at least a quarter of the
    resulting list, is staged (`prepare`/`commit`) and switched atomically."""
    file_flush_seconds: float = 1.0
    """At most this long after a change, the ACL/map files hold it (they are written from
    the connector's model of the runtime, at most once per period, never per push)."""

    def __post_init__(self) -> None:
        state = Path(self.state_dir)
        defaults: dict[str, Path] = {
            "blocked_acl": state / "blocked.acl",
            "allowed_acl": state / "allowed.acl",
            "blocked_ref_map": state / "blocked_ref.map",
            "revoked_map": state / "revoked.map",
            "rate_limit_map": state / "rate_limit.map",
            "account_rate_limit_map": state / "rate_limit_account.map",
            "org_rate_limit_map": state / "rate_limit_org.map",
            "account_suspend_map": state / "suspended_account.map",
            "org_suspend_map": state / "suspended_org.map",
        }
        for name, default in defaults.items():
            if not getattr(self, name):
                object.__setattr__(self, name, str(default))

    @classmethod
    def parse(cls, where: str, options: Mapping[str, Any], timeout: float) -> HAProxyOptions:
        """Options from the config file, each checked; errors name the option at fault."""
        parsed = parse_options(cls, where, options, read_timeout=timeout)
        if parsed.key_match not in {"fingerprint", "id"}:
            raise option_error(
                where, "key_match", f"must be 'fingerprint' or 'id', got {parsed.key_match!r}"
            )
        for name in ("key_header", "account_header", "org_header"):
            header = getattr(parsed, name)
            if header and not re.fullmatch(r"[A-Za-z0-9-]+", header):
                raise option_error(where, name, f"{header!r} is not a header name")
        for name in ("socket", "state_dir", *_FILE_OPTIONS):
            value = getattr(parsed, name)
            if value and not value.startswith("/"):
                raise option_error(
                    where,
                    name,
                    f"must be an absolute path, got {value!r} (HAProxy reads a relative "
                    "stats socket as host:port and files relative to its own working "
                    "directory)",
                )
            if re.search(r"[\s;#\\]", value):
                raise option_error(
                    where,
                    name,
                    "must be a path without spaces, `;`, `#` or backslashes (HAProxy's "
                    "runtime API names files by their path)",
                )
        if not parsed.key_header:
            raise option_error(where, "key_header", "must name a header")
        for name in ("connect_timeout", "read_timeout", "file_flush_seconds"):
            if getattr(parsed, name) <= 0:
                raise option_error(where, name, "must be positive")
        return parsed


# -- the files HAProxy loads, and what each holds --------------------------------------------


@dataclass(frozen=True)
class _File:
    """One ACL or map file: what it holds and how entries are spelled in it."""

    path: str
    kind: str
    """`acl` or `map`: the Runtime API's word for it."""
    type: EntryType
    target_kind: str
    """The target kind of its entries; for the ACL, `ip` or `cidr` by spelling."""
    references: bool = False
    """A map of blocked addresses to their references: it mirrors the block ACL, for
    refusals to quote, and holds no entries of its own."""

    def entry(self, key: str, value: str) -> Entry:
        """The entry a map line holds (ACL lines: see `_entries_of`). A limit whose
        value lacks its reference (written by hand, or before refusals quoted one) is
        reported without a limit, so the next reconcile writes it again, whole."""
        if self.type is EntryType.RATE_LIMIT:
            held = Entry(self.type, self.target_kind, key)
            rpm, _, reference = value.partition(":")
            limit = _int_or_none(rpm) if reference == held.reference else None
            return Entry(self.type, self.target_kind, key, limit)
        return Entry(self.type, self.target_kind, key)

    def line(self, key: str, value: str) -> str:
        """How the file (and `add ... @N`) spells one copy."""
        return key if self.kind == "acl" else f"{key} {value}"

    def copies(self, lines: str | None) -> list[tuple[str, str]]:
        """The (raw string, value) copies a key's lines in the model stand for."""
        if lines is None:
            return []
        if self.kind == "acl":
            return [(raw, "") for raw in lines.split("\n")]
        return [(raw, value) for raw, _, value in (c.partition(" ") for c in lines.split("\n"))]

    def lines(self, copies: Iterable[tuple[str, str]]) -> str:
        return "\n".join(self.line(raw, value) for raw, value in copies)


_Copies = dict[str, str]
"""A file's entries by canonical key: the lines HAProxy holds for it, spelled as the file
spells them, in its order (a map can hold a key twice: one line per copy, joined by
newlines, and the first copy is the one matched). Held already rendered, so writing a
million-line file is a join of these strings, with no work per entry in Python; an ACL
line that is its own canonical key is the key's string itself, so it costs nothing."""


@dataclass
class _Ops:
    """The changes to one file: canonical key -> (entry, value to hold), or removal."""

    put: dict[str, tuple[Entry, str]] = field(default_factory=dict)
    remove: dict[str, Entry] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.put) + len(self.remove)


class HAProxyConnector:
    def __init__(self, config: ConnectorConfig, http: httpx.AsyncClient) -> None:
        self.name = config.name
        self.options = HAProxyOptions.parse(
            f"connector {config.name}: options", config.options, config.timeout_seconds
        )
        self.min_prefix = config.min_prefix
        o = self.options
        self._files = [
            _File(o.blocked_acl, "acl", EntryType.BLOCK, "ip"),
            _File(o.allowed_acl, "acl", EntryType.ALLOW, "ip"),
        ]
        for (kind, target_kind), option in _MAPS.items():
            needs = {"account": o.account_header, "org": o.org_header}.get(target_kind, "on")
            if needs:
                self._files.append(_File(getattr(o, option), "map", kind, target_kind))
        self._refs = _File(o.blocked_ref_map, "map", EntryType.BLOCK, "ip", references=True)
        self._files.append(self._refs)
        self._lock = asyncio.Lock()
        """Observe and apply each change the runtime and the model of it: one at a time,
        whoever calls."""
        self._held: dict[str, _Copies] = {}
        """Per file: what the runtime holds, as observe found it and every command that
        succeeded since left it. Absent: not known yet (read at the file's first apply)."""
        self._changes: dict[str, int] = {}
        """Per file: how many times its model changed; the file on disk is stale while
        this is ahead of `_written`."""
        self._written: dict[str, int] = {}
        """Per file: the change count the file on disk holds (only `_save_file` sets it)."""
        self._disk = threading.Lock()
        """Writes to the files, one at a time and never an older model over a newer one,
        even when the coroutine that asked for a write was cancelled meanwhile."""
        self._unwritable: dict[str, str] = {}
        """Files whose last write failed, and why: reported by `health()`."""
        self._flusher: asyncio.Task[None] | None = None
        self._lent: weakref.ref[_Observed] | None = None
        """The entries the last observe returned, while someone holds them: they read
        the models of that observe (`_own`)."""

    def capabilities(self) -> frozenset[EntryType]:
        """Suspensions only with a header that names accounts or orgs; without one, the
        suspended account's keys (revoked by Tollgate with it) are what HAProxy refuses."""
        if self.options.account_header or self.options.org_header:
            return frozenset(EntryType)
        return frozenset(EntryType) - {EntryType.SUSPEND}

    # -- observe ---------------------------------------------------------------------------

    async def observe(self) -> GatewayState:
        """The runtime's ACL and maps, as entries; the model of each file is refreshed
        from them (so drift made by hand at the Runtime API is known from here on). A
        file that no longer matches the runtime (an edit by hand, a write that failed)
        is rewritten from it here, so the periodic reconcile also repairs what a reload
        would load; a file that cannot be written is reported by `health()`.

        At a million entries the `show` replies take seconds of Python to parse: that
        runs in a thread (`_Cli.survey`), a part of the reply at a time as it is read,
        building the model in one pass, so the event loop only reads the replies and
        swaps the models in. A survey whose observe was cancelled (a reconcile's timeout)
        finishes its part in its thread and is dropped: only the coroutine touches the
        model.

        The entries are the models read as entries (`_Observed`), made one at a time as
        they are iterated: a million `Entry`s and a set of them are never held (they took
        about 90 MB). An apply while they are still referenced changes a copy of the
        model (`_own`), so they stay what the gateway held at this observe."""
        models: list[tuple[_File, _Copies]] = []
        references: _Copies = {}
        counts: dict[str, int] = {}
        async with self._lock, self._session() as cli:
            for spec in self._files:
                survey = await cli.survey(spec, self._keys(spec))
                counts[spec.path] = survey.copies
                self._held[spec.path] = survey.held
                if spec.references:
                    references = survey.held
                else:
                    models.append((spec, survey.held))
                await self._save(spec, survey.lines, self._changed(spec), only_if_stale=True)
                del survey
                # What parsing the reply freed, before the next file's survey grows
                # the process further (at a million entries, tens of MB).
                await asyncio.to_thread(release_freed_memory)
        entries = _Observed(models, self._files[0], references)
        self._lent = weakref.ref(entries)
        return GatewayState(entries, extra={"entries_per_file": counts})

    def _own(self, spec: _File, held: _Copies) -> _Copies:
        """The file's model, to change: a copy of it while the entries of an observe still
        read it (one dict of references to the same strings), so they do not change."""
        lent = self._lent() if self._lent is not None else None
        if lent is None or not lent.reads(held):
            return held
        self._held[spec.path] = held = dict(held)
        return held

    def _keys(self, spec: _File) -> _Copies | None:
        """For the references map, the block ACL's model to take key strings from."""
        return self._held.get(self._files[0].path) if spec.references else None

    # -- apply -----------------------------------------------------------------------------

    async def apply(self, diff: Diff) -> ApplyResult:
        """Per file: add/set/del each entry against the model of what the runtime holds
        (or stage the whole new list when the change is large), so an apply costs what
        its diff holds. The files HAProxy loads at start follow within
        `file_flush_seconds` (see `_flush_later`). Idempotent: an entry already held is
        done; a removal of an absent one is done."""
        result = ApplyResult()
        plan: dict[str, _Ops] = {spec.path: _Ops() for spec in self._files}
        for entry in (*diff.add, *diff.change):
            spec, key, why = self._place(entry)
            if spec is None:
                result.rejected.append((entry, why))
            else:
                plan[spec.path].put[key] = (entry, _value_of(entry))
        for entry in diff.remove:
            spec, key, why = self._place(entry, removing=True)
            if spec is None:
                result.done.append(entry)  # never held here: nothing to remove
            else:
                plan[spec.path].remove[key] = entry
        blocks, refs = plan[self._files[0].path], plan[self._refs.path]
        refs.put = {k: (e, e.reference) for k, (e, _) in blocks.put.items()}
        refs.remove = dict(blocks.remove)
        async with self._lock, self._session() as cli:
            for spec in self._files:
                ops = plan[spec.path]
                if ops.size and not spec.references:
                    await self._apply_file(cli, spec, ops, result)
            if refs.size:
                await self._apply_refs(cli, refs, result)
        return result

    async def _apply_refs(self, cli: _Cli, ops: _Ops, result: ApplyResult) -> None:
        """The blocked values' references follow the block ACL. A block whose reference
        HAProxy did not take is reported failed (retried), though it already refuses."""
        mirrored = ApplyResult()
        await self._apply_file(cli, self._refs, ops, mirrored)
        missed = {e.key: why for e, why in (*mirrored.failed, *mirrored.rejected)}
        if missed:
            result.done[:] = [e for e in result.done if e.key not in missed]
            result.failed.extend(
                (e, f"its reference: {missed[e.key]}")
                for e, _ in ops.put.values()
                if e.key in missed
            )

    async def _apply_file(self, cli: _Cli, spec: _File, ops: _Ops, result: ApplyResult) -> None:
        held = self._held.get(spec.path)
        if held is None:  # no observe yet: learn this file once, then follow it
            held = self._held[spec.path] = (await cli.survey(spec, self._keys(spec))).held
        held = self._own(spec, held)
        # Counted over the batch's keys: a set operation with `held` (a million entries)
        # walks all of it, at every apply.
        final_size = (
            len(held)
            - sum(1 for k in ops.remove if k in held)
            + sum(1 for k in ops.put if k not in held)
        )
        try:
            if ops.size >= self.options.bulk_threshold and ops.size * 4 >= final_size:
                await self._replace(cli, spec, held, ops, result)
            else:
                await self._each(cli, spec, held, ops, result)
        except GatewayUnavailable:
            # A command may have taken effect without its reply reaching us: what the
            # runtime holds is unknown, so it is read again at the next apply or observe.
            self._held.pop(spec.path, None)
            raise
        finally:
            self._changed(spec)
            self._flush_soon()

    async def _each(
        self, cli: _Cli, spec: _File, held: _Copies, ops: _Ops, result: ApplyResult
    ) -> None:
        """One command per entry, each recorded in `held` once HAProxy took it (as HAProxy
        keeps its list: a delete drops every copy of a string, `set map` sets every copy).
        Maps have no upsert: a held key is `set`, a new one `add`, and a `set` that finds
        the key gone falls back to `add`."""
        for key, entry in ops.remove.items():
            failure = None
            copies = spec.copies(held.get(key))
            for raw in dict.fromkeys(raw for raw, _ in copies):
                reply = await cli.run(f"del {spec.kind} {spec.path} {raw}")
                if reply and not reply.startswith("Key not found"):
                    failure = reply
                    continue
                copies = [copy for copy in copies if copy[0] != raw]
                if copies:
                    held[key] = spec.lines(copies)
                else:
                    del held[key]
            _record(result, entry, failure)
        for key, (entry, value) in ops.put.items():
            copies = spec.copies(held.get(key))
            reply = ""
            if spec.kind == "acl":
                if not copies:
                    reply = await cli.run(f"add acl {spec.path} {key}")
                    if not reply:
                        held[key] = key
            elif copies and any(v != value for _, v in copies):
                reply = await cli.run(f"set map {spec.path} {key} {value}")
                if reply.startswith("entry not found"):
                    reply = await cli.run(f"add map {spec.path} {key} {value}")
                    if not reply:
                        held[key] = spec.line(key, value)
                elif not reply:
                    held[key] = spec.lines((raw, value) for raw, _ in copies)
            elif not copies:
                reply = await cli.run(f"add map {spec.path} {key} {value}")
                if not reply:
                    held[key] = spec.line(key, value)
            _record(result, entry, reply or None)

    async def _replace(
        self, cli: _Cli, spec: _File, held: _Copies, ops: _Ops, result: ApplyResult
    ) -> None:
        """Stage the whole new list in a new version and commit it: HAProxy switches
        from the old list to the new one in one step, and the model follows."""
        keep = {  # of each key's copies, the first (the one HAProxy matches)
            key: lines.partition("\n")[0]
            for key, lines in held.items()
            if key not in ops.remove and key not in ops.put
        }
        everything = [*ops.remove.values(), *(e for e, _ in ops.put.values())]
        reply = await cli.run(f"prepare {spec.kind} {spec.path}")
        match = _VERSION.search(reply)
        if match is None:
            why = f"prepare {spec.kind} {spec.path}: {reply or 'no version'}"
            result.failed.extend((e, why) for e in everything)
            return
        version = match.group(1)
        prefix = f"add {spec.kind} @{version} {spec.path}"
        staged: _Copies = {}
        for key, line in keep.items():
            if not await cli.run(f"{prefix} {line}"):
                staged[key] = line
        refused: dict[str, str] = {}
        for key, (_, value) in ops.put.items():
            line = spec.line(key, value)
            reply = await cli.run(f"{prefix} {line}")
            if reply:
                refused[key] = reply
            else:
                staged[key] = line
        reply = await cli.run(f"commit {spec.kind} @{version} {spec.path}")
        if reply:
            why = f"commit {spec.kind} @{version} {spec.path}: {reply}"
            result.failed.extend((e, why) for e in everything)
            return
        held.clear()
        held.update(staged)
        result.done.extend(ops.remove.values())
        for key, (entry, _) in ops.put.items():
            _record(result, entry, refused.get(key))

    # -- the files HAProxy loads at start ---------------------------------------------------

    def _changed(self, spec: _File) -> int:
        self._changes[spec.path] = count = self._changes.get(spec.path, 0) + 1
        return count

    def _stale(self) -> list[_File]:
        """Files whose model is known and ahead of what the file on disk holds."""
        return [
            spec
            for spec in self._files
            if spec.path in self._held
            and self._changes.get(spec.path, 0) > self._written.get(spec.path, 0)
        ]

    def _flush_soon(self) -> None:
        """Writing a whole file per push would cost what the gateway holds, not what the
        push changed: the files are written from the model at most once per
        `file_flush_seconds`, in a task of their own, so a reload within that window
        loses at most that window's changes (the next reconcile puts them back)."""
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        while self._stale():  # an unwritable file stays stale: retried each period
            await asyncio.sleep(self.options.file_flush_seconds)
            await self._flush()

    async def _flush(self) -> None:
        for spec in self._stale():
            # The snapshot is a copy of the model's references to its lines (no work per
            # entry); the file is built from it in the thread.
            lines = list(self._held[spec.path].values())
            await self._save(spec, lines, self._changes[spec.path])

    async def _save(
        self, spec: _File, lines: list[str], count: int, *, only_if_stale: bool = False
    ) -> None:
        """Write `lines` (a snapshot of the model at change `count`) to the file in a
        thread; a failure is kept for `health()` and the file stays stale."""
        try:
            await asyncio.to_thread(self._save_file, spec, lines, count, only_if_stale)
        except OSError as exc:
            self._unwritable[spec.path] = exc.strerror or str(exc)
        else:
            self._unwritable.pop(spec.path, None)

    def _save_file(self, spec: _File, lines: list[str], count: int, only_if_stale: bool) -> None:
        with self._disk:
            if count <= self._written.get(spec.path, 0):
                return  # a newer model is on disk already
            header = _header(self.name)
            if not only_if_stale or not _holds(spec, header, lines):
                atomic_write(spec.path, _parts(header, lines))
            self._written[spec.path] = count

    def _place(self, entry: Entry, *, removing: bool = False) -> tuple[_File | None, str, str]:
        """The file an entry belongs in and its key there, or None and why it cannot be
        enforced here. A removal is only placed, never judged: whatever HAProxy holds
        (an entry added by hand, say) can be taken away."""
        # A value reaches the Runtime API's command line only in canonical form: no zone
        # id, space, `;` or newline can end the command and start another.
        why = "" if removing else refusal(entry, self.min_prefix)
        if why:
            return None, "", why
        if entry.type in (EntryType.BLOCK, EntryType.ALLOW):
            spec = self._files[0 if entry.type is EntryType.BLOCK else 1]
            if entry.target_kind not in {"ip", "cidr"}:
                verb = "blocks" if entry.type is EntryType.BLOCK else "allows"
                return None, "", f"HAProxy {verb} IPs and CIDRs, not a {entry.target_kind}"
            try:
                key = observed(entry.target_kind, entry.target_value)
            except ValueError:
                if removing:
                    return spec, entry.target_value, ""
                return None, "", f"{entry.target_value!r} is not a valid {entry.target_kind}"
            return spec, key, ""
        for spec in self._files[2:]:
            if spec.references:
                continue
            if spec.type is entry.type and spec.target_kind == entry.target_kind:
                why = "" if removing else self._key_problem(entry)
                return (None, "", why) if why else (spec, entry.target_value, "")
        if entry.type in {EntryType.RATE_LIMIT, EntryType.SUSPEND} and entry.target_kind in {
            "account",
            "org",
        }:
            option = f"{entry.target_kind}_header"
            return (
                None,
                "",
                (
                    f"HAProxy sees API keys and IPs, not {entry.target_kind}s: set "
                    f"options.{option} to a header your authenticating layer sets "
                    "(docs/haproxy.md)"
                ),
            )
        return None, "", f"HAProxy cannot enforce {entry.type.value} on a {entry.target_kind}"

    def _key_problem(self, entry: Entry) -> str:
        value = entry.target_value
        if not _SAFE_KEY.match(value):
            return f"{value!r} has characters HAProxy's map files cannot hold"
        if (
            entry.target_kind == "api_key"
            and self.options.key_match == "fingerprint"
            and not _FINGERPRINT.match(value)
        ):
            return (
                f"key_match is fingerprint but {value!r} is not a SHA-256 fingerprint "
                "(64 lowercase hex digits): send fingerprints, or set key_match: id"
            )
        if entry.type is EntryType.RATE_LIMIT and (
            entry.requests_per_minute is None or entry.requests_per_minute < 0
        ):
            return "a rate limit needs requests_per_minute >= 0"
        return ""

    # -- health ----------------------------------------------------------------------------

    async def health(self) -> Health:
        """Whether HAProxy answers and has every file loaded (from its list of ACLs and
        maps: no file is read whole here), and whether every file could be written."""
        gateway = f"haproxy at {self.options.socket}"
        try:
            async with self._session() as cli:
                version = (await cli.run("show version")).strip()
                gateway = f"haproxy {version} at {self.options.socket}"
                loaded = {kind: await cli.loaded(kind) for kind in ("acl", "map")}
        except ConnectorError as exc:
            return Health(ok=False, gateway=gateway, detail=str(exc))
        for spec in self._files:
            if spec.path not in loaded[spec.kind]:
                return Health(ok=False, gateway=gateway, detail=_not_loaded(spec, "not listed"))
        if self._unwritable:
            detail = "; ".join(
                f"cannot write {path} ({why}): enforced now, but a reload would lose it; "
                f"retried every {self.options.file_flush_seconds:g}s"
                for path, why in sorted(self._unwritable.items())
            )
            return Health(ok=False, gateway=gateway, detail=detail)
        return Health(ok=True, gateway=gateway)

    async def close(self) -> None:
        """Write what the files do not hold yet. No session is held open: every operation
        uses one of its own, so a reload (which re-creates the socket) never leaves the
        connector on a dead one."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()  # a write it started still ends, in order (`_save_file`)
            await asyncio.wait([flusher])
        await self._flush()

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[_Cli]:
        cli = _Cli(self.options)
        await cli.open()
        try:
            yield cli
        finally:
            await cli.close()


# -- the Runtime API -----------------------------------------------------------------------


class _Cli:
    """One interactive Runtime API session: a command, its whole reply, the next."""

    def __init__(self, options: HAProxyOptions) -> None:
        self._options = options
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        path = self._options.socket
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_unix_connection(path, limit=_BUFFER), self._options.connect_timeout
            )
        except TimeoutError:
            raise GatewayUnavailable(
                f"HAProxy's runtime API at {path} did not accept a connection within "
                f"{self._options.connect_timeout}s"
            ) from None
        except PermissionError:
            raise GatewayUnavailable(
                f"no permission to use HAProxy's runtime API at {path}: run Tollgate as the "
                "socket's owner or give its group access (`stats socket ... mode 660 group G`)"
            ) from None
        except OSError as exc:
            raise GatewayUnavailable(
                f"cannot reach HAProxy's runtime API at {path}: {exc.strerror or exc}"
            ) from None
        await self.run("prompt")

    async def run(self, command: str) -> str:
        """Send one command and return its reply: empty when it succeeded."""
        raw = await self._ask(command)
        return raw[: -len(PROMPT)].decode(errors="replace").strip("\n")

    async def _ask(self, command: str) -> bytes:
        """Send one command and return its reply as sent, up to and with the prompt."""
        if self._reader is None or self._writer is None:
            raise ConnectorError("the runtime API session is not open")
        self._writer.write(command.encode() + b"\n")
        async with self._answering(command):
            await self._writer.drain()
            return await self._reader.readuntil(PROMPT)

    @contextlib.asynccontextmanager
    async def _answering(self, command: str) -> AsyncIterator[None]:
        """HAProxy answers within `read_timeout` on a session that holds, or the gateway
        is unavailable (a retryable failure naming the command)."""
        try:
            async with asyncio.timeout(self._options.read_timeout):
                yield
        except TimeoutError:
            raise GatewayUnavailable(
                f"HAProxy did not answer {command.split(' ', 2)[:2]} within "
                f"{self._options.read_timeout}s"
            ) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise GatewayUnavailable(f"HAProxy's runtime API session broke: {exc}") from None

    async def survey(self, spec: _File, keys: Mapping[str, str] | None) -> _Survey:
        """The model of what the runtime holds in this file (`keys`: see `_Survey`). The
        `show` reply is read a part (`_SURVEY_PART`) at a time, each part parsed in a
        thread while the rest waits in the socket: at a million entries the reply never
        sits whole in memory (read whole, it took three copies of itself, 40 MB, at
        once), and the event loop only moves bytes. `read_timeout` bounds each part."""
        if self._reader is None or self._writer is None:
            raise ConnectorError("the runtime API session is not open")
        command = f"show {spec.kind} {spec.path}"
        survey = _Survey(spec, keys)
        self._writer.write(command.encode() + b"\n")
        pending = b""
        while True:
            pending += await self._read(command)
            if pending.endswith(PROMPT):
                if len(pending) > len(PROMPT):
                    await asyncio.to_thread(survey.feed, pending[: -len(PROMPT)])
                return survey
            cut = pending.rfind(b"\n")
            if cut > 0:  # whole lines; the newline after the last starts the next part
                part, pending = pending[:cut], pending[cut:]
                await asyncio.to_thread(survey.feed, part)
                del part

    async def _read(self, command: str) -> bytes:
        """The next bytes of a reply, at most `_SURVEY_PART` of them."""
        if self._reader is None or self._writer is None:
            raise ConnectorError("the runtime API session is not open")
        async with self._answering(command):
            await self._writer.drain()
            chunk = await self._reader.read(_SURVEY_PART)
        if not chunk:
            raise GatewayUnavailable("HAProxy's runtime API session broke: it closed the session")
        return chunk

    async def loaded(self, kind: str) -> set[str]:
        """The files HAProxy loaded ACLs (`acl`) or maps (`map`) from."""
        reply = await self.run(f"show {kind}")
        return set(re.findall(r"^\S+ \((/[^)]*)\) ", reply, re.MULTILINE))

    async def close(self) -> None:
        if self._writer is None:
            return
        with contextlib.suppress(OSError, TimeoutError):
            self._writer.write(b"quit\n")
            self._writer.close()
            await asyncio.wait_for(self._writer.wait_closed(), self._options.connect_timeout)


# -- helpers -------------------------------------------------------------------------------


def _canonical_key(raw: str) -> str:
    """An ACL's (or the references map's) address or network as Tollgate spells it; a
    value that is neither stays as HAProxy holds it. One string when it is its own key."""
    try:
        key = observed_once("cidr" if "/" in raw else "ip", raw)
    except ValueError:
        return raw
    return raw if key == raw else key


class _Survey:
    """The model of a file, built from the runtime's `show` reply a part at a time (each
    part whole lines; every part after the first starts with the newline that ended the
    line before it), in HAProxy's order: copies grouped by key (order between keys does
    not change what HAProxy matches), each key canonicalised once. Every line must be
    `0x<ref> <key>[ <value>]` (blank lines only before the first and after the last):
    anything else means HAProxy has no such file loaded.

    `keys`: the model of the block ACL, whose lines are mostly their keys' own strings;
    the references map that mirrors it takes its keys from there, so both models hold
    one string per blocked value (a million of them: 60 MB), as they do after an apply."""

    def __init__(self, spec: _File, keys: Mapping[str, str] | None = None) -> None:
        self.spec = spec
        self.keys = keys
        self.held: _Copies = {}
        self.copies = 0
        """How many lines the runtime holds, copies of one key included."""
        self._parts = 0
        self._blank = False
        """A blank line came after the first copy: only blank lines may follow."""

    def feed(self, part: bytes) -> None:
        spec, held, keys = self.spec, self.held, self.keys
        acl = spec.kind == "acl"
        canonical = acl or spec.references
        text = part.decode(errors="replace")
        lines = text.splitlines()
        if self._parts and lines and not lines[0]:
            del lines[0]  # the newline that ended the previous part's last line
        self._parts += 1
        for line in lines:
            if not line:
                self._blank = self._blank or bool(self.copies)
                continue
            parts = line.split(" ", 2)
            if self._blank or not line.startswith("0x") or len(parts) < 2:
                seen = text.strip()
                seen = seen if len(seen) <= 500 else f"{seen[:500]}..."
                raise ConnectorError(_not_loaded(spec, seen), retryable=False)
            self.copies += 1
            raw = parts[1]
            key = _canonical_key(raw) if canonical else raw
            if keys is not None:
                shared = keys.get(key)
                if shared == key:
                    key = shared
            line = raw if acl else f"{raw} {parts[2] if len(parts) == 3 else ''}"
            before = held.get(key)
            held[key] = line if before is None else f"{before}\n{line}"

    @property
    def lines(self) -> list[str]:
        """The model's lines (its values), as a write of the file takes them."""
        return list(self.held.values())


def _entry_of(spec: _File, key: str, lines: str) -> Entry:
    """The entry a key of a file's model stands for: its first copy's, the one HAProxy
    matches (an ACL's entry is an `ip` or a `cidr` as that copy is spelled). It holds
    the model's own key string (a map's keys are its copies' strings): an index of the
    entries costs no string of its own."""
    first = lines.partition("\n")[0]
    if spec.kind == "acl":
        return Entry(spec.type, "cidr" if "/" in first else "ip", key)
    return spec.entry(key, first.partition(" ")[2])


def _entries_of(spec: _File, held: _Copies) -> Iterator[Entry]:
    return (_entry_of(spec, key, lines) for key, lines in held.items())


class _Observed(AbstractSet[Entry]):
    """What an observe found, as a set of entries read from the models it built: each
    entry is made when iterated or looked up, so a million of them cost nothing until
    then, and nothing after. A block is held only when the references map also holds
    its reference: one in the ACL alone (its reference lost, or written by hand) would
    refuse with nothing to quote, so the reconcile writes it again, reference and all."""

    def __init__(
        self,
        models: Sequence[tuple[_File, _Copies]],
        blocks: _File | None = None,
        references: _Copies | None = None,
    ) -> None:
        self._models = tuple(models)
        self._blocks = blocks
        self._references = references if references is not None else {}
        self._length: int | None = None

    @classmethod
    def _from_iterable(cls, it: Iterable[Entry]) -> frozenset[Entry]:  # type: ignore[override]
        """What set operations (`&`, `-`, ...) on it return: a plain set of entries."""
        return frozenset(it)

    def reads(self, held: _Copies) -> bool:
        return any(model is held for _, model in self._models) or held is self._references

    def _referenced(self, spec: _File, entry: Entry) -> bool:
        if spec is not self._blocks:
            return True
        lines = self._references.get(entry.target_value)
        return lines is not None and lines.partition("\n")[0].partition(" ")[2] == entry.reference

    def __iter__(self) -> Iterator[Entry]:
        for spec, held in self._models:
            for entry in _entries_of(spec, held):
                if self._referenced(spec, entry):
                    yield entry

    def __len__(self) -> int:
        if self._length is None:
            self._length = sum(
                len(held)
                if spec is not self._blocks
                else sum(1 for e in _entries_of(spec, held) if self._referenced(spec, e))
                for spec, held in self._models
            )
        return self._length

    def __contains__(self, item: object) -> bool:
        if not isinstance(item, Entry):
            return False
        for spec, held in self._models:
            if spec.type is not item.type:
                continue
            if spec.kind == "map" and spec.target_kind != item.target_kind:
                continue
            lines = held.get(item.target_value)
            if lines is not None and _entry_of(spec, item.target_value, lines) == item:
                return self._referenced(spec, item)
        return False


_SURVEY_PART = 1 << 20
"""Bytes of a `show` reply read, decoded and split into lines at once: a million-line
reply never exists as one string, nor as one list of lines, nor as one buffer."""


def _value_of(entry: Entry) -> str:
    """What a map holds for an entry: the reference its refusal quotes (a limit: the
    requests per minute, then the reference, as `60:TG-...`); nothing for the ACLs."""
    if entry.type is EntryType.RATE_LIMIT:
        return f"{entry.requests_per_minute}:{entry.reference}"
    if entry.type in {EntryType.REVOKE_KEY, EntryType.SUSPEND}:
        return entry.reference
    return ""


def _int_or_none(value: str) -> int | None:
    try:
        return int(value)
    except ValueError:
        return None


def _record(result: ApplyResult, entry: Entry, failure: str | None) -> None:
    if not failure:
        result.done.append(entry)
    elif _REFUSED.search(failure):
        result.rejected.append((entry, f"HAProxy cannot hold it: {failure.strip()}"))
    else:
        result.failed.append((entry, f"HAProxy refused it: {failure.strip()}"))


def _not_loaded(spec: _File, seen: str) -> str:
    return (
        f"HAProxy has no {spec.kind} loaded from {spec.path} ({seen}): "
        "haproxy.cfg must name exactly this file (see docs/haproxy.md)"
    )


_PART = 10_000
"""Lines per part of a file written: each part is one join (C, holding the GIL for well
under a millisecond), and between parts the event loop and the decide thread run."""


def _header(connector: str) -> str:
    return (
        f"# Written by Tollgate (connector {connector}). Edits by hand are undone at the "
        "next reconcile."
    )


def _parts(header: str, lines: list[str]) -> Iterator[bytes]:
    """The file's bytes, in parts: the header, then the model's lines."""
    yield f"{header}\n".encode()
    for start in range(0, len(lines), _PART):
        yield ("\n".join(lines[start : start + _PART]) + "\n").encode()


def _holds(spec: _File, header: str, lines: list[str]) -> bool:
    """Whether the file already holds these lines: byte for byte (compared part by part,
    no work per line), or else the same entries in the same order as HAProxy would load
    them (a comment or blank line added by hand is no reason to write it again). The
    file is read a part at a time, never whole."""
    try:
        with Path(spec.path).open("rb") as file:
            for part in _parts(header, lines):
                if file.read(len(part)) != part:
                    break
            else:
                if not file.read(1):
                    return True
            file.seek(0)
            # Entry by entry: at a million lines, lists of both sides' entries took a
            # few hundred MB for a moment.
            held = _entries(spec, (line for joined in lines for line in joined.split("\n")))
            found = _entries(spec, _text_lines(file))
            return all(a == b for a, b in itertools.zip_longest(held, found))
    except FileNotFoundError:
        return not lines


def _text_lines(file: BinaryIO) -> Iterator[str]:
    """The lines of a file, read, decoded and split a part (`_SURVEY_PART`) at a time."""
    pending = b""
    while chunk := file.read(_SURVEY_PART):
        pending += chunk
        cut = pending.rfind(b"\n") + 1  # after a newline: never inside a character
        if cut:
            yield from pending[:cut].decode("utf-8", errors="replace").splitlines()
            pending = pending[cut:]
    yield from pending.decode("utf-8", errors="replace").splitlines()


def _entries(spec: _File, lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """A file's entries as HAProxy would load them (comments and blanks skipped)."""
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if spec.kind == "acl":
            yield (line, "")
        else:
            key, _, value = line.partition(" ")
            yield (key, value.strip())


def create(config: ConnectorConfig, http: httpx.AsyncClient) -> HAProxyConnector:
    """The `haproxy` entry point of `tollgate.connectors` (the HTTP client goes unused:
    HAProxy is driven over its Unix socket)."""
    return HAProxyConnector(config, http)


# -- the haproxy.cfg that pairs with the connector ------------------------------------------

_JSON = "content-type application/json string"
_WORDS = {"account": "account", "org": "organisation"}


def sample_config(
    options: HAProxyOptions,
    *,
    bind: str = ":8080",
    backend: str = "127.0.0.1:9000",
    trusted_proxies: Sequence[str] = (),
) -> str:
    """The haproxy.cfg that enforces what this connector writes: the same socket, files
    and headers as `options`. `docs/examples/haproxy.cfg` is this with the defaults;
    the tests and the demo run HAProxy on it, so the documented config is the tested one.
    `trusted_proxies`: addresses of load balancers whose `X-Forwarded-For` names the client.
    """
    o = options
    key_len = 64 if o.key_match == "fingerprint" else 200
    lines = [
        "# haproxy.cfg for Tollgate's HAProxy connector (connectors/haproxy.py), rendered by",
        "# connectors.haproxy.sample_config(); docs/haproxy.md explains each part.",
        "# The ACL and map files must exist before HAProxy starts (empty is fine).",
        "",
        "global",
        "    # The Runtime API the connector drives: `level admin` may change ACLs and maps.",
        f"    stats socket {o.socket} mode 600 level admin",
        "    stats timeout 30s",
        "    maxconn 4096",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        "    timeout client 30s",
        "    timeout server 120s",
        "    timeout http-request 10s",
        "",
        "# Request rate over the last minute of each subject that has a limit in a map",
        "# (nothing else is tracked): one table per kind of subject.",
        "backend tollgate_rate_key",
        f"    stick-table type string len {key_len} size 100k expire 2m store http_req_rate(1m)",
    ]
    extra = [("account", o.account_header, o.account_rate_limit_map, 1)] if o.account_header else []
    if o.org_header:
        extra.append(("org", o.org_header, o.org_rate_limit_map, 2))
    for kind, _, _, _ in extra:
        lines += [
            f"backend tollgate_rate_{kind}",
            "    stick-table type string len 200 size 100k expire 2m store http_req_rate(1m)",
        ]
    lines += ["", "frontend model_api", f"    bind {bind}"]
    if trusted_proxies:
        lines += [
            "    # Behind a load balancer: the client is the last X-Forwarded-For address, only",
            "    # when the connection comes from the balancer (clients cannot pick their IP).",
            "    http-request set-src req.hdr_ip(x-forwarded-for,-1) "
            f"if {{ src {' '.join(trusted_proxies)} }}",
        ]
    header = o.key_header
    hashed = ",sha2(256),hex,lower" if o.key_match == "fingerprint" else ""
    lines += [
        "",
        "    # 403: IPs and CIDRs Tollgate blocks, except those exempt (the allow list is",
        "    # consulted first: an exempt address inside a blocked range is served), with the",
        "    # reference of the blocked value for the customer to quote.",
        f"    http-request set-var(txn.tollgate_block_ref) src,map_ip({o.blocked_ref_map}) "
        f"if {{ src -f {o.blocked_acl} }}",
        _refusal(
            403,
            "blocked by policy",
            "txn.tollgate_block_ref",
            f"{{ src -f {o.blocked_acl} }} !{{ src -f {o.allowed_acl} }}",
        ),
        "",
    ]
    suspended = [
        (kind, kind_header, path)
        for kind, kind_header, path in (
            ("account", o.account_header, o.account_suspend_map),
            ("org", o.org_header, o.org_suspend_map),
        )
        if kind_header
    ]
    if suspended:
        lines += [
            "    # 403: suspended accounts and organisations, whatever key or address they use",
            "    # (the header must come from the authenticating layer in front, never a client);",
            "    # the map holds the suspension's reference.",
        ]
        for kind, kind_header, path in suspended:
            var = f"txn.tollgate_suspended_{kind}"
            lines += [
                f"    http-request set-var({var}) req.fhdr({kind_header}),map_str({path}) "
                f"if {{ req.fhdr({kind_header}) -m found }}",
                _refusal(403, f"{_WORDS[kind]} suspended", var),
            ]
        lines.append("")
    lines += [
        "    # One key header at most: with two, HAProxy and the API could read different ones.",
        f"    http-request deny deny_status 400 {_JSON} "
        f'\'{{"error":"more than one {header} header"}}\' if {{ req.fhdr_cnt({header}) gt 1 }}',
        "    # The key as Tollgate names it: "
        + (
            "the SHA-256 fingerprint of the header (lowercase hex)."
            if hashed
            else "the key id, as the header carries it."
        ),
        f"    http-request set-var(txn.tollgate_key) req.fhdr({header}){hashed} "
        f"if {{ req.fhdr({header}) -m found }}",
        "",
        "    # 401: revoked keys; the map holds the reference the customer can quote.",
        f"    http-request set-var(txn.tollgate_revoked) var(txn.tollgate_key),"
        f"map_str({o.revoked_map}) if {{ var(txn.tollgate_key) -m found }}",
        _refusal(401, "api key revoked", "txn.tollgate_revoked"),
        "",
        "    # 429: past the limit. The map holds `requests per minute:reference`; the table",
        "    # the rate over the last minute.",
        *_limit_rules("key", "var(txn.tollgate_key)", o.rate_limit_map, 0, declare=None),
    ]
    for kind, kind_header, path, counter in extra:
        lines += _limit_rules(kind, f"req.fhdr({kind_header})", path, counter, declare=kind_header)
    lines += [
        "",
        "    default_backend model_api",
        "",
        "backend model_api",
        f"    server api1 {backend}",
        "",
    ]
    return "\n".join(lines)


def _refusal(status: int, error: str, reference: str, condition: str = "", extra: str = "") -> str:
    """A deny whose JSON body and `x-tollgate-reference` header quote the reference held
    in the variable `reference`; by default when that variable is set."""
    quoted = f"%[var({reference})]"
    return (
        f"    http-request deny deny_status {status} content-type application/json lf-string "
        f'\'{{"error":"{error}","reference":"{quoted}"}}\' hdr {REFERENCE_HEADER} {quoted}'
        f"{extra} if {condition or f'{{ var({reference}) -m found }}'}"
    )


def _limit_rules(kind: str, fetch: str, path: str, counter: int, declare: str | None) -> list[str]:
    subject, held = f"txn.tollgate_{kind}", f"txn.tollgate_{kind}_held"
    limit, reference = f"txn.tollgate_{kind}_limit", f"txn.tollgate_{kind}_ref"
    rules = []
    if declare is not None:
        rules.append(
            f"    http-request set-var({subject}) {fetch} if {{ req.fhdr({declare}) -m found }}"
        )
    return [
        *rules,
        f"    http-request set-var({held}) var({subject}),map_str({path}) "
        f"if {{ var({subject}) -m found }}",
        f"    http-request set-var({limit}) var({held}),field(1,:) if {{ var({held}) -m found }}",
        f"    http-request set-var({reference}) var({held}),field(2,:) "
        f"if {{ var({held}) -m found }}",
        f"    http-request track-sc{counter} var({subject}) table tollgate_rate_{kind} "
        f"if {{ var({limit}) -m found }}",
        _refusal(
            429,
            "rate limited",
            reference,
            f"{{ var({limit}) -m found }} {{ sc_http_req_rate({counter}),sub({limit}) gt 0 }}",
            extra=" hdr retry-after 60",
        ),
    ]
