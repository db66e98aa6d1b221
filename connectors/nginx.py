"""NGINX: blocks, key revocations, per-key rate limits and account or org suspensions
as include files, then a reload.

NGINX has no runtime API for lists: what it enforces is what its configuration
said at the last reload. So the gateway's state is a set of include files this
connector owns in `include_dir`, and every change is *write, test, reload*:

- `http.conf` (the frame, included in `http {}`): a `geo` over `blocked.conf`, one over
  `allowed.conf` consulted before it, `map`s over `revoked.conf`, `limits.conf` and
  (with `account_header` / `org_header`) the suspension lists, and one
  `limit_req_zone` per tier;
- `server.conf` (included in each protected `server {}` or `location {}`): 403 for a
  blocked address or a suspended account or org, 401 for a revoked key, `limit_req`
  per tier with status 429;
- `blocked.conf`: `203.0.113.7 TG-...;` / `198.51.100.0/24 TG-...;`;
- `allowed.conf`: `203.0.113.9 allowed;`: exemptions carved out of blocked ranges (an
  address in it is never refused as blocked, whatever block covers it);
- `revoked.conf`: `"key_3" TG-...;`;
- `limits.conf`: `"key_9" "60 TG-...";  # requests_per_minute=75`;
- `suspended_account.conf` / `suspended_org.conf`: `"acct_9" TG-...;`, matched on the
  header a trusted layer in front sets (`account_header` / `org_header`).

Each entry's value is the reference its refusal quotes (`Entry.reference`): a 401 or
403 says it in its JSON body, and every refusal in an `x-tollgate-reference` header
(a 429 of `limit_req` has NGINX's own body), for the customer to quote in an appeal.

A `limit_req_zone`'s rate is fixed, so per-key limits are tiers: one zone per
configured rate (`tiers`, requests per minute) and a map from key to tier. A
limit goes to the largest tier at or below it, never to a looser one; the exact
value stays in a comment so `observe()` reports what Tollgate asked for. A key
outside the map has an empty zone key, which NGINX does not count.

`nginx -s reload` only signals: a configuration that fails leaves the old one
running with the error in error.log, where nobody looks. So every write is
followed by `nginx -T -c MAIN` (a test that also dumps the configuration, which
shows whether NGINX reads these files at all), a failing test restores the
previous files and is reported, and nothing is reloaded unless the test passes.
The reload is a SIGHUP to the master from `pid_file`, confirmed by watching the
master start new workers and the old ones stop accepting, so an apply returns
once the new configuration is serving.

An apply costs what its diff holds in Python: the parsed lists stay in memory (read
at `observe()` or the first apply, and again only when a file changed behind the
connector's back), each entry's line is rendered once, when it is put, and only the
lists a batch touched are joined again from their lines (kept sorted, in chunks). Reloads
are coalesced: at most one write-test-reload per `reload_min_seconds`, carrying
every diff that arrived meanwhile; each apply still returns once its entries serve.
An entry NGINX can never hold (a value it cannot parse, a key the include cannot
spell, a limit below every tier) is `rejected`; one held back by a key that differs
only in case is `failed`, as it may succeed once the other is lifted.

Values are checked before they are written (addresses parsed, keys limited to
characters and lengths a map can hold, map keywords escaped), so no entry
Tollgate sends can break the configuration; only a file corrupted by hand or a
broken main configuration can make the test fail.

This module never imports Tollgate's domain: only `controlplane.enforce.sdk`.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import fcntl
import logging
import os
import re
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    bounded,
    observed,
    option_error,
    parse_options,
)

log = logging.getLogger(__name__)

FILES = (
    "http.conf",
    "server.conf",
    "blocked.conf",
    "allowed.conf",
    "revoked.conf",
    "limits.conf",
    "suspended_account.conf",
    "suspended_org.conf",
)
"""Every file the connector owns in `include_dir`; nothing else there is touched."""
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$")
"""Keys written verbatim inside quotes: no quotes, backslashes, `$`, `;`, `#` or spaces."""
_MAP_KEYWORDS = frozenset({"default", "hostnames", "include", "volatile"})
"""Words a map reads as directives; a key spelled like one is written `"\\\\default"`."""
_TOKEN = r"""(?:"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|[^\s"';#{}]+)"""
_LINE = re.compile(rf"^\s*({_TOKEN})\s+({_TOKEN})\s*;\s*(?:#(.*))?$")
_RPM_NOTE = re.compile(r"requests_per_minute=(\d+)")
_CONF_FILE = re.compile(r"^# configuration file (.+):$", re.MULTILINE)
_LOG_PREFIX = re.compile(r"^\S+ \S+ \[(\w+)\] \d+#\d+: ")
_Files = dict[str, bytes | None]
"""File name -> content (None: no such file)."""
_Stamps = dict[str, tuple[int, int, int] | None]
"""File name -> (inode, size, mtime) (None: no such file): whether a file changed."""
_LIST_OF: Terms[tuple[EntryType, str], str] = Terms(
    {
        (EntryType.BLOCK, "address"): "blocked.conf",
        (EntryType.ALLOW, "address"): "allowed.conf",
        (EntryType.REVOKE_KEY, "api_key"): "revoked.conf",
        (EntryType.RATE_LIMIT, "api_key"): "limits.conf",
        (EntryType.SUSPEND, "account"): "suspended_account.conf",
        (EntryType.SUSPEND, "org"): "suspended_org.conf",
    }
)
"""The include each entry lives in, by type and target kind (`address`: ip or cidr)."""
_LISTS = tuple(_LIST_OF.values())
_KEYED: dict[str, tuple[EntryType, str]] = {
    "revoked.conf": (EntryType.REVOKE_KEY, "api_key"),
    "suspended_account.conf": (EntryType.SUSPEND, "account"),
    "suspended_org.conf": (EntryType.SUSPEND, "org"),
}
"""The includes of keys and ids that refuse outright: the entry each line stands for."""
_ADDRESSES = frozenset({"blocked.conf", "allowed.conf"})
"""The includes keyed by address or network (the others by key or id)."""
ALLOWED = "allowed"
"""The value of an exempt address or network in `allowed.conf` (anything but 0 allows)."""
REFERENCE_HEADER = "x-tollgate-reference"
"""The response header a refusal carries the entry's reference in."""
_POLL = 0.005
"""Seconds between looks at the master's workers while a reload is confirmed."""


class ConfigRejected(ConnectorError):
    """`nginx -t` failed: nothing was reloaded, and retrying cannot help until someone
    fixes the configuration the error names."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


# -- options --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NginxOptions:
    """The connector's `options:` in tollgate.yaml; docs/nginx.md shows the nginx.conf
    that pairs with them."""

    main_config: str = "/etc/nginx/nginx.conf"
    """The main configuration, tested with `nginx -T -c` before every reload."""
    include_dir: str = "/etc/nginx/tollgate"
    """Where the connector's files live; it owns the files named in `FILES` there."""
    nginx: str = "nginx"
    """The binary (a name looked up in PATH and /usr/sbin, or a path)."""
    pid_file: str = "/run/nginx.pid"
    """The master's pid file (the `pid` directive): SIGHUP goes to that process."""
    tiers: tuple[int, ...] = (10, 60, 600)
    """Requests per minute of the limit_req zones, one zone per tier."""
    key_header: str = "X-API-Key"
    """The request header carrying what Tollgate calls `api_key_id` (the lab's key id or
    fingerprint: NGINX cannot hash a header, so a layer in front must send the id)."""
    account_header: str = ""
    """A header carrying the account id, set by an authenticating layer in front (which
    strips it from clients): enables account suspensions. Empty: they are rejected
    (NGINX cannot see accounts; a suspended account's keys are still revoked one by one)."""
    org_header: str = ""
    """As `account_header`, for organisations."""
    prefix: str = "tollgate"
    """Prefix of the variables and zones the frame defines (two connectors, one nginx)."""
    zone_size: str = "10m"
    """Shared memory per tier zone (1m holds about 16k keys)."""
    map_hash_bucket_size: int = bounded(128, 0, 1 << 20)
    """Written in the frame, so keys up to `bucket - 18` characters fit (NGINX's default,
    64, refuses a 64-character fingerprint). 0: the main config sets it (then 64 is
    assumed for the length check)."""
    map_hash_max_size: int = bounded(65536, 0, 1 << 20)
    """Written in the frame so 10k+ keys build an optimal hash; 0: not written."""
    reload_min_seconds: float = bounded(0.5, 0, 60)
    """At most one write-test-reload per this many seconds: diffs that arrive meanwhile
    wait and go live together in the next one (a reload rewrites whole files and
    re-reads the configuration, whatever a diff holds)."""

    @property
    def max_key_length(self) -> int:
        bucket = self.map_hash_bucket_size or 64
        bucket = -(-bucket // 64) * 64  # NGINX aligns it to the cache line
        return bucket - 18  # one hash element: pointer + name + length, plus a terminator

    @property
    def header_variable(self) -> str:
        return _variable_of(self.key_header)

    def subject_header(self, kind: str) -> str:
        """The header naming accounts (`account`) or orgs (`org`); '' when not set."""
        return {"account": self.account_header, "org": self.org_header}.get(kind, "")

    @classmethod
    def parse(cls, where: str, options: Mapping[str, Any]) -> NginxOptions:
        """Options from the config file, each checked; errors name the option at fault."""
        parsed = parse_options(cls, where, options)
        if not all(t > 0 for t in parsed.tiers):
            raise option_error(where, "tiers", "must be a list of requests per minute (> 0)")
        if not parsed.tiers or len(set(parsed.tiers)) != len(parsed.tiers):
            raise option_error(where, "tiers", "must be a non-empty list without repeats")
        parsed = dataclasses.replace(parsed, tiers=tuple(sorted(parsed.tiers)))
        for name in ("key_header", "account_header", "org_header"):
            header = getattr(parsed, name)
            if name != "key_header" and not header:
                continue
            if not re.fullmatch(r"[A-Za-z0-9]+(-[A-Za-z0-9]+)*", header):
                raise option_error(
                    where,
                    name,
                    f"{header!r} must be a header name of letters, digits and dashes "
                    "(NGINX drops headers with underscores by default)",
                )
        headers = [h.lower() for h in (parsed.key_header, parsed.account_header, parsed.org_header)]
        if len(set(filter(None, headers))) != len(list(filter(None, headers))):
            raise option_error(
                where, "account_header", "key, account and org headers must be different"
            )
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,30}", parsed.prefix):
            raise option_error(where, "prefix", "must be lowercase letters, digits and _")
        if not re.fullmatch(r"[1-9][0-9]*[kKmM]?", parsed.zone_size):
            raise option_error(where, "zone_size", "must be a size such as 10m")
        for name in ("main_config", "include_dir", "pid_file", "nginx"):
            if not getattr(parsed, name):
                raise option_error(where, name, "must not be empty")
        return parsed


def _bad(message: str) -> ConnectorError:
    return ConnectorError(message, retryable=False)


def _variable_of(header: str) -> str:
    return "$http_" + header.lower().replace("-", "_")


def _list_of(entry: Entry) -> str | None:
    """The include an entry lives in, or None when it has none here."""
    kind = "address" if entry.target_kind in {"ip", "cidr"} else entry.target_kind
    return _LIST_OF.theirs((entry.type, kind))


# -- what the files hold ----------------------------------------------------------------------

_CHUNK = 1000
"""Lines per chunk of an include's model (up to twice as many before a chunk splits)."""


class _Lines:
    """An include's entry lines, rendered once when an entry is put and kept in the
    order of their keys (the file lists entries sorted). In chunks of about `_CHUNK`
    keys, so putting or taking one line moves at most a chunk's references, and the
    file is a join per chunk: no work per entry in Python, and the event loop can run
    between chunks when it is rendered in a thread."""

    __slots__ = ("_keys", "_lasts", "_lines")

    def __init__(self) -> None:
        self._keys: list[list[str]] = []
        self._lines: list[list[str]] = []
        self._lasts: list[str] = []
        """The last (largest) key of each chunk: which chunk a key belongs in."""

    def __len__(self) -> int:
        return sum(map(len, self._keys))

    def put(self, key: str, line: str) -> None:
        if not self._keys:
            self._keys, self._lines, self._lasts = [[key]], [[line]], [key]
            return
        at = min(bisect.bisect_left(self._lasts, key), len(self._lasts) - 1)
        keys, lines = self._keys[at], self._lines[at]
        i = bisect.bisect_left(keys, key)
        if i < len(keys) and keys[i] == key:
            lines[i] = line
            return
        keys.insert(i, key)
        lines.insert(i, line)
        self._lasts[at] = keys[-1]
        if len(keys) > 2 * _CHUNK:
            self._keys[at : at + 1] = [keys[:_CHUNK], keys[_CHUNK:]]
            self._lines[at : at + 1] = [lines[:_CHUNK], lines[_CHUNK:]]
            self._lasts[at : at + 1] = [keys[_CHUNK - 1], keys[-1]]

    def pop(self, key: str) -> None:
        at = bisect.bisect_left(self._lasts, key)
        if at == len(self._lasts):
            return
        keys = self._keys[at]
        i = bisect.bisect_left(keys, key)
        if i == len(keys) or keys[i] != key:
            return
        del keys[i], self._lines[at][i]
        if keys:
            self._lasts[at] = keys[-1]
        else:
            del self._keys[at], self._lines[at], self._lasts[at]

    def text(self) -> bytes:
        return b"".join("".join(lines).encode() for lines in self._lines)


@dataclass
class _Tables:
    """The lists, by their key in NGINX's terms, and each include's lines."""

    blocked: dict[str, str] = field(default_factory=dict)
    """Address or network -> `ip` / `cidr`."""
    revoked: dict[str, str] = field(default_factory=dict)
    """Lowercased key -> key. NGINX maps match ignoring case, so two keys that differ
    only in case are one entry to NGINX (and both in one map fail the test)."""
    limits: dict[str, tuple[str, int]] = field(default_factory=dict)
    """Lowercased key -> (key, requests per minute asked for; the tier is derived)."""
    accounts: dict[str, str] = field(default_factory=dict)
    """Suspended accounts: lowercased id -> id (maps ignore case, as for keys)."""
    orgs: dict[str, str] = field(default_factory=dict)
    """Suspended organisations, as `accounts`."""
    allowed: dict[str, str] = field(default_factory=dict)
    """Exempt address or network -> `ip` / `cidr`: carved out of any block."""
    ignored: int = 0
    """Lines that are no entry this connector can read (dropped at the next write)."""
    lines: dict[str, _Lines] = field(default_factory=lambda: {n: _Lines() for n in _LISTS})
    """Per list include, the lines it holds, in the order it lists them: kept in step
    with the tables by `NginxConnector._hold` and `_drop`."""

    def table(self, name: str) -> dict[str, Any]:
        """The table a list include is written from."""
        tables: dict[str, dict[str, Any]] = {
            "blocked.conf": self.blocked,
            "allowed.conf": self.allowed,
            "revoked.conf": self.revoked,
            "limits.conf": self.limits,
            "suspended_account.conf": self.accounts,
            "suspended_org.conf": self.orgs,
        }
        return tables[name]

    def addresses(self, entry_type: EntryType) -> dict[str, str]:
        """The blocked or the allowed networks."""
        return self.allowed if entry_type is EntryType.ALLOW else self.blocked

    def keyed(self, entry_type: EntryType, kind: str) -> dict[str, Any] | None:
        """The table of keyed entries of this type and target kind (None: blocks, or
        what NGINX cannot hold)."""
        tables: dict[tuple[EntryType, str], dict[str, Any]] = {
            (EntryType.REVOKE_KEY, "api_key"): self.revoked,
            (EntryType.RATE_LIMIT, "api_key"): self.limits,
            (EntryType.SUSPEND, "account"): self.accounts,
            (EntryType.SUSPEND, "org"): self.orgs,
        }
        return tables.get((entry_type, kind))

    def entries(self) -> frozenset[Entry]:
        return frozenset(
            [Entry(EntryType.BLOCK, kind, value) for value, kind in self.blocked.items()]
            + [Entry(EntryType.ALLOW, kind, value) for value, kind in self.allowed.items()]
            + [Entry(EntryType.REVOKE_KEY, "api_key", key) for key in self.revoked.values()]
            + [Entry(EntryType.RATE_LIMIT, "api_key", k, rpm) for k, rpm in self.limits.values()]
            + [Entry(EntryType.SUSPEND, "account", a) for a in self.accounts.values()]
            + [Entry(EntryType.SUSPEND, "org", o) for o in self.orgs.values()]
        )


def _unquote(token: str) -> str:
    """A token as NGINX's parser reads it: quotes and escapes removed."""
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "\"'":
        token = re.sub(r"\\(.)", r"\1", token[1:-1])
    return token


def _map_key(token: str) -> str | None:
    """The key a map line matches, or None for a directive or a regex line. Quotes do
    not make a keyword a key (`"default" 1;` is the default); a leading backslash does,
    and NGINX drops it."""
    value = _unquote(token)
    if value in _MAP_KEYWORDS or value.startswith("~"):
        return None
    return value[1:] if value.startswith("\\") else value


def _twin(held: Mapping[str, Any], key: str) -> str:
    """The key held under `key`'s lowercase spelling when it is not `key` itself, or ''."""
    other = held.get(key.lower())
    if other is None:
        return ""
    name = other if isinstance(other, str) else other[0]
    return "" if name == key else str(name)


def _sort_key(name: str, index: str, held: Any) -> str:
    """What a list include is sorted by: the address, or the key as spelled (a table of
    keys is indexed by its lowercase spelling)."""
    if name in _ADDRESSES:
        return index
    return held if isinstance(held, str) else str(held[0])


def _quote_key(key: str) -> str:
    return f'"\\\\{key}"' if key in _MAP_KEYWORDS else f'"{key}"'


def _lines(text: str) -> Iterable[tuple[str, str, str] | None]:
    """(first token, second token, comment) per entry line; None for a line that is
    neither an entry, a comment nor blank."""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        yield (match.group(1), match.group(2), match.group(3) or "") if match else None


# -- the connector ----------------------------------------------------------------------------


class NginxConnector:
    def __init__(self, config: ConnectorConfig, http: httpx.AsyncClient) -> None:
        self.name = config.name
        self.options = NginxOptions.parse(f"connector {config.name}: options", config.options)
        self.min_prefix = config.min_prefix
        self.timeout = config.timeout_seconds / 2
        """Bound of each step (an `nginx` run, a reload's confirmation, the lock): half the
        connector's timeout, so a test and a reload together fit in Tollgate's bound."""
        self.dir = Path(self.options.include_dir)
        self.paths = {name: self.dir / name for name in FILES}
        self.last_reload_seconds: float | None = None
        """From SIGHUP to new configuration serving, for the last reload."""
        self._lock = asyncio.Lock()
        """Observe and apply read, rewrite and reload the same files: one at a time."""
        self._version = ""
        self._unconfirmed = True
        """The files may say more than NGINX serves (written, but the reload was not
        confirmed; or unknown, at start): the next observe or apply reloads even when
        it changes nothing."""
        self._tables: _Tables | None = None
        """What the files hold, parsed: read once (observe, or the first apply) and then
        kept in step with every write, so an apply never re-reads every include."""
        self._disk: _Files = {}
        """The files as last read or written; `_stamps` tells whether they still are."""
        self._stamps: _Stamps = {}
        self._queue: list[tuple[Diff, asyncio.Future[ApplyResult]]] = []
        """Diffs waiting for the next write-test-reload, each with its caller's future."""
        self._committer: asyncio.Task[None] | None = None
        self._last_commit = -float("inf")

    def capabilities(self) -> frozenset[EntryType]:
        """Suspensions only with a header that names accounts or orgs; without one, NGINX
        sees keys and addresses only, and a suspended account's or org's keys (revoked
        one by one by Tollgate) are what it refuses. Exemptions inside blocked ranges
        are carved out (`allowed.conf`, consulted before `blocked.conf`)."""
        unseen: set[EntryType] = set()
        if not (self.options.account_header or self.options.org_header):
            unseen.add(EntryType.SUSPEND)
        return frozenset(EntryType) - unseen

    # -- observe ---------------------------------------------------------------------------

    async def observe(self) -> GatewayState:
        """The entries in the include files, which are what NGINX loads.

        First the files are put in the form this connector writes: when they are
        missing (first contact: NGINX cannot even start without them), were written
        for other options (tiers, key header) or hold lines edited by hand, they are
        rewritten from what they hold, tested and reloaded. Then `nginx -T` must pass
        and show that NGINX reads them, else nothing here would be enforced: that is
        reported (`ConfigRejected`) rather than pretended. A master that is not running
        is `GatewayUnavailable`."""
        async with self._exclusive():
            stamps, before, tables, entries, wanted = await asyncio.to_thread(self._survey)
            if wanted != before or self._unconfirmed:
                await self._commit(before, wanted, tables)
            else:
                self._remember(wanted, tables, stamps)
                self._check_included(await self._test())
                if self._master() is None:
                    raise self._not_running()
            extra = {
                "include_dir": str(self.dir),
                "ignored_lines": tables.ignored,
                "last_reload_seconds": self.last_reload_seconds,
            }
            return GatewayState(entries, extra=extra)

    # -- apply -----------------------------------------------------------------------------

    async def apply(self, diff: Diff) -> ApplyResult:
        """Queue the diff for the next write-test-reload and return once it is live.

        Reloads are coalesced: at most one per `reload_min_seconds`, and every diff that
        arrived meanwhile goes live in it, so a burst of small diffs costs a handful of
        reloads. Idempotent: an entry already there changes nothing, a removal of one
        that is not there changes nothing. An entry NGINX can never hold is `rejected`
        with why, and the others go ahead. A failing `nginx -t` restores the previous
        files and raises `ConfigRejected` (every diff of that reload failed, not
        retried); a master that is not running raises `GatewayUnavailable` (the tested
        files stay: NGINX loads them when it starts)."""
        done: asyncio.Future[ApplyResult] = asyncio.get_running_loop().create_future()
        self._queue.append((diff, done))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_queued())
        return await done

    async def _commit_queued(self) -> None:
        """Take what is queued, make it live, answer its callers; again while more came."""
        while self._queue:
            wait = self._last_commit + self.options.reload_min_seconds - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            # A caller that gave up (cancelled, timed out) does not have its diff applied.
            batch = [(diff, done) for diff, done in self._queue if not done.done()]
            self._queue.clear()
            if not batch:
                continue
            self._last_commit = time.monotonic()
            try:
                results = await self._apply_batch([diff for diff, _ in batch])
            except BaseException as exc:
                failure = (
                    exc
                    if isinstance(exc, Exception)
                    else GatewayUnavailable(
                        "the connector closed before these changes were reloaded"
                    )
                )
                for _, done in batch:
                    if not done.done():
                        done.set_exception(failure)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, done), result in zip(batch, results, strict=True):
                if not done.done():
                    done.set_result(result)

    async def _apply_batch(self, diffs: list[Diff]) -> list[ApplyResult]:
        """Each diff against the tables in memory (what it costs: its own entries), then
        the lists it touched rendered once, written, tested and reloaded."""
        async with self._exclusive():
            if self._tables is None or await asyncio.to_thread(self._stamp) != self._stamps:
                # First apply, or the files changed behind our back: read them again.
                stamps, before, tables, _, wanted = await asyncio.to_thread(self._survey)
                self._remember(before, tables, stamps)
            else:
                tables, wanted = self._tables, dict(self._disk)
            # Changed in place (a copy would cost what the lists hold): when the files do
            # not end up holding it, the model is dropped and read again next time.
            try:
                touched: set[str] = set()
                results = [self._plan(tables, diff, touched) for diff in diffs]
                wanted.update(await asyncio.to_thread(self._render_lists, tables, touched))
                if wanted != self._disk or self._unconfirmed:
                    await self._commit(self._disk, wanted, tables)
            except BaseException:
                if self._disk is not wanted:
                    self._tables = None
                raise
        return results

    # Reading, parsing and rendering 30k entries takes about 0.2 s of CPU: they run in a
    # thread, off the event loop. They only compute; writing stays on the loop (below).

    def _survey(self) -> tuple[_Stamps, _Files, _Tables, frozenset[Entry], _Files]:
        stamps = self._stamp()  # before reading: a change while reading shows next time
        before = self._read()
        tables = self._parse(before)
        return stamps, before, tables, tables.entries(), self._render(tables)

    def _plan(self, tables: _Tables, diff: Diff, touched: set[str]) -> ApplyResult:
        result = ApplyResult()
        for entry in diff.remove:
            self._remove(tables, entry)
            result.done.append(entry)
            touched.update(filter(None, [_list_of(entry)]))
        for entry in (*diff.add, *diff.change):
            why = self._put(tables, entry)
            held = tables.keyed(entry.type, entry.target_kind)
            if not why:
                result.done.append(entry)
                touched.update(filter(None, [_list_of(entry)]))
            elif held is not None and _twin(held, entry.target_value):
                # Held back by another entry (its twin in another case): fine once that
                # one is lifted, so it may succeed later.
                result.failed.append((entry, why))
            else:
                result.rejected.append((entry, why))
        return result

    def _remove(self, tables: _Tables, entry: Entry) -> None:
        """Take an entry away by its key; one spelled oddly (by hand) is matched as
        NGINX would read it, so it goes too."""
        if entry.type in (EntryType.BLOCK, EntryType.ALLOW):
            addresses = "blocked.conf" if entry.type is EntryType.BLOCK else "allowed.conf"
            with contextlib.suppress(ValueError):
                self._drop(tables, addresses, observed(entry.target_kind, entry.target_value))
            self._drop(tables, addresses, entry.target_value)
            return
        held, name = tables.keyed(entry.type, entry.target_kind), _list_of(entry)
        if held is not None and name and not _twin(held, entry.target_value):
            self._drop(tables, name, entry.target_value.lower())

    def _put(self, tables: _Tables, entry: Entry) -> str:
        """Add or update an entry; the reason it cannot be enforced here, or ''."""
        # Only canonical values are written into a file NGINX parses: no `;`, quote,
        # space or newline can end an entry and add a directive.
        why = refusal(entry, self.min_prefix)
        if why:
            return why
        value, kind = entry.target_value, entry.target_kind
        if entry.type in (EntryType.BLOCK, EntryType.ALLOW):
            if kind not in {"ip", "cidr"}:
                verb = "blocks" if entry.type is EntryType.BLOCK else "allows"
                return f"NGINX {verb} IPs and CIDRs, not a {kind}"
            try:
                address = observed(kind, value)
            except ValueError:
                return f"{value!r} is not a valid {kind}"
            self._hold(tables, _LIST_OF[(entry.type, "address")], address, kind)
            return ""
        suspends = entry.type is EntryType.SUSPEND and kind in {"account", "org"}
        if suspends and not self.options.subject_header(kind):
            return (
                f"NGINX sees API keys and addresses, not {kind}s: set options.{kind}_header "
                "to a header your authenticating layer sets (docs/nginx.md)"
            )
        held = tables.keyed(entry.type, kind)
        if held is None:
            return (
                f"NGINX sees API keys (options.key_header) and addresses, not {kind}s: "
                f"{entry.type.value} on a {kind} cannot be enforced here"
            )
        what = "key id" if kind == "api_key" else f"{kind} id"
        if not _SAFE_KEY.match(value):
            return (  # ids are never quoted in reasons: Tollgate keeps and shows these
                f"the {what} has characters an NGINX map cannot hold safely "
                "(allowed: letters, digits and ._:@/+=- , starting with a letter or digit)"
            )
        if len(value) > self.options.max_key_length:
            return (
                f"{what} of {len(value)} characters is longer than map_hash_bucket_size "
                f"allows ({self.options.max_key_length}): raise options.map_hash_bucket_size"
            )
        if _twin(held, value):
            return (
                f"NGINX maps match ignoring case, and a {what} that differs from this one "
                "only in case is already there: one entry would shadow the other"
            )
        name = _LIST_OF[(entry.type, kind)]
        if entry.type is not EntryType.RATE_LIMIT:
            self._hold(tables, name, value.lower(), value)
            return ""
        rpm = entry.requests_per_minute
        if rpm is None or rpm < 0:
            return "a rate limit needs requests_per_minute >= 0"
        if rpm > 0 and self._tier(rpm) is None:
            return (
                f"{rpm} requests/min is stricter than every tier (strictest: "
                f"{self.options.tiers[0]}): add a tier at or below {rpm} to options.tiers"
            )
        self._hold(tables, name, value.lower(), (value, rpm))
        return ""

    def _tier(self, rpm: int) -> int | None:
        """The zone a limit goes in: the largest tier at or below it (0: refuse all)."""
        if rpm == 0:
            return 0
        fitting = [t for t in self.options.tiers if t <= rpm]
        return fitting[-1] if fitting else None

    # -- health ----------------------------------------------------------------------------

    async def health(self) -> Health:
        """Cheap: whether the master in `pid_file` runs, and the binary's version."""
        if not self._version:
            with contextlib.suppress(ConnectorError):
                _, _, err = await self._run("-v")
                self._version = err.strip().removeprefix("nginx version: ")
        gateway = f"{self._version or 'nginx'} with {self.options.main_config}"
        pid = self._master()
        if pid is None:
            return Health(ok=False, gateway=gateway, detail=self._not_running().args[0])
        detail = f"master pid {pid}"
        if self.last_reload_seconds is not None:
            detail += f"; last reload serving after {self.last_reload_seconds * 1000:.0f} ms"
        return Health(ok=True, gateway=gateway, detail=detail)

    async def close(self) -> None:
        """Let queued diffs go live (bounded), then nothing is held open: NGINX keeps
        serving the files as they are."""
        committer, self._committer = self._committer, None
        if committer is not None and not committer.done():
            bound = self.options.reload_min_seconds + 4 * self.timeout
            try:
                await asyncio.wait_for(committer, bound)  # cancelled past the bound
            except TimeoutError:
                pass  # what was still queued is applied by the next follower
            except Exception:
                # Its callers were told (each apply fails with it); closing goes on.
                log.warning("NGINX connector's last reload failed as it closed", exc_info=True)

    def _remember(self, files: _Files, tables: _Tables, stamps: _Stamps) -> None:
        self._disk, self._tables, self._stamps = files, tables, stamps

    def _stamp(self) -> _Stamps:
        """Each file's identity and size and time of change: a write by anyone else (an
        edit by hand, a restore) shows as a difference, and the files are read again."""
        stamps: _Stamps = {}
        for name, path in self.paths.items():
            try:
                info = path.stat()
            except FileNotFoundError:
                stamps[name] = None
            except OSError as exc:
                raise ConnectorError(f"cannot read {path}: {exc}") from None
            else:
                stamps[name] = (info.st_ino, info.st_size, info.st_mtime_ns)
        return stamps

    # -- reading and writing the files -----------------------------------------------------

    def _read(self) -> _Files:
        contents: _Files = {}
        for name, path in self.paths.items():
            try:
                contents[name] = path.read_bytes()
            except FileNotFoundError:
                contents[name] = None
            except OSError as exc:
                raise ConnectorError(f"cannot read {path}: {exc}") from None
        return contents

    def _parse(self, contents: _Files) -> _Tables:
        tables = _Tables()

        def text(name: str) -> str:
            return (contents[name] or b"").decode("utf-8", errors="replace")

        for name in ("blocked.conf", "allowed.conf"):
            for line in _lines(text(name)):
                if line is None:
                    tables.ignored += 1
                    continue
                address, value, _ = line
                value = _unquote(value)
                if value in {"", "0"}:
                    continue  # neither blocked nor allowed: the geo's value is what counts
                kind = value if value in {"ip", "cidr"} else ("cidr" if "/" in address else "ip")
                try:
                    self._hold(tables, name, observed(kind, _unquote(address)), kind)
                except ValueError:
                    tables.ignored += 1
        for name in ("revoked.conf", "suspended_account.conf", "suspended_org.conf"):
            held = tables.table(name)
            for line in _lines(text(name)):
                key = self._readable_key(line, held)
                if key is None:
                    tables.ignored += 1
                elif line and _unquote(line[1]) not in {"", "0"}:
                    self._hold(tables, name, key.lower(), key)
        for line in _lines(text("limits.conf")):
            key = self._readable_key(line, tables.limits)
            rpm = self._limit_of(_unquote(line[1]), line[2]) if line and key else None
            if key is None or rpm is None:
                tables.ignored += 1
            else:
                self._hold(tables, "limits.conf", key.lower(), (key, rpm))
        return tables

    def _hold(self, tables: _Tables, name: str, index: str, held: Any) -> None:
        """Put an entry in a list's table (`index`: its key there) and its line, rendered
        here once, in the include's lines; a limit no tier enforces gets no line."""
        table, lines = tables.table(name), tables.lines[name]
        before = table.get(index)
        table[index] = held
        key = _sort_key(name, index, held)
        line = self._line(name, key, held)
        if before is not None and (line is None or _sort_key(name, index, before) != key):
            lines.pop(_sort_key(name, index, before))
        if line is not None:
            lines.put(key, line)

    def _drop(self, tables: _Tables, name: str, index: str) -> None:
        held = tables.table(name).pop(index, None)
        if held is not None:
            tables.lines[name].pop(_sort_key(name, index, held))

    def _line(self, name: str, key: str, held: Any) -> str | None:
        """An entry's line in its include (sorted by `key`)."""
        if name == "blocked.conf":
            return f"{key} {Entry(EntryType.BLOCK, held, key).reference};\n"
        if name == "allowed.conf":
            return f"{key} {ALLOWED};\n"
        if name == "limits.conf":
            rpm = held[1]
            tier = self._tier(rpm)
            if tier is None:
                return None
            reference = Entry(EntryType.RATE_LIMIT, "api_key", key).reference
            return f'{_quote_key(key)} "{tier} {reference}";  # requests_per_minute={rpm}\n'
        entry_type, kind = _KEYED[name]
        return f"{_quote_key(key)} {Entry(entry_type, kind, key).reference};\n"

    def _readable_key(
        self, line: tuple[str, str, str] | None, held: Mapping[str, Any]
    ) -> str | None:
        """The key of a map line, or None for one that could not be written back as it
        is (a directive, a regex, odd characters, too long, or the twin in another case
        of a key already read: NGINX would refuse the pair)."""
        key = _map_key(line[0]) if line else None
        if key is None or not _SAFE_KEY.match(key) or len(key) > self.options.max_key_length:
            return None
        if _twin(held, key):
            return None
        return key

    def _limit_of(self, tier_text: str, comment: str) -> int | None:
        """The limit a limits.conf line stands for: the value in its comment when that is
        a limit its tier enforces (or one the current tiers can place: rewritten then),
        else the tier itself; None for a tier with no zone. The value is the tier, then
        the reference (`60 TG-...`); a tier alone is read too, and rewritten whole."""
        tier_text = tier_text.split(" ", 1)[0]
        note = _RPM_NOTE.search(comment)
        if note is not None:
            rpm = int(note.group(1))
            if self._tier(rpm) is not None:
                return rpm
        if tier_text.isdigit() and (int(tier_text) in self.options.tiers or tier_text == "0"):
            return int(tier_text)
        return None

    def _render(self, tables: _Tables) -> _Files:
        head = self._head()
        files = {
            "http.conf": head
            + "# Include it in http {}, before any map of your own.\n"
            + self._frame(),
            "server.conf": head
            + "# Include it in each server {} or location {} to protect.\n"
            + self._rules(),
        }
        rendered: _Files = {name: text.encode() for name, text in files.items()}
        rendered.update(self._render_lists(tables, set(_LIST_OF.values())))
        return rendered

    def _render_lists(self, tables: _Tables, names: set[str]) -> _Files:
        """The list includes named, from their lines (the frame does not depend on them):
        a join per chunk of lines, no work per entry."""
        notes = {
            "blocked.conf": "geo entries: address or network, then the reference its refusal "
            "quotes.",
            "allowed.conf": "geo entries: exempt address or network, served whatever block "
            "covers it.",
            "revoked.conf": "map entries: revoked API key, then the reference its refusal quotes.",
            "suspended_account.conf": "map entries: suspended account, then the reference its "
            "refusal quotes.",
            "suspended_org.conf": "map entries: suspended organisation, then the reference its "
            "refusal quotes.",
            "limits.conf": f"map entries: API key, then its tier of {list(self.options.tiers)} "
            "and the reference its refusal quotes.",
        }
        return {
            name: f"{self._head()}# {notes[name]}\n".encode() + tables.lines[name].text()
            for name in _LISTS
            if name in names
        }

    def _head(self) -> str:
        return f"# Written by Tollgate's nginx connector {self.name!r}; edits are undone.\n"

    def _suspensions(self) -> list[tuple[str, str]]:
        """(kind, header) of the suspensions NGINX can see: those with a header."""
        return [
            (kind, header)
            for kind in ("account", "org")
            if (header := self.options.subject_header(kind))
        ]

    def _frame(self) -> str:
        o, p, header = self.options, self.options.prefix, self.options.header_variable
        out = []
        if o.map_hash_bucket_size:
            out.append(f"map_hash_bucket_size {o.map_hash_bucket_size};\n")
        if o.map_hash_max_size:
            out.append(f"map_hash_max_size {o.map_hash_max_size};\n")
        out.append(
            "\n# Each list's value is the reference its refusal quotes.\n"
            f"geo ${p}_block_listed {{\n    default 0;\n"
            f"    include {self.paths['blocked.conf']};\n}}\n"
            "# Exemptions, consulted before the block list: an exempt address inside a\n"
            "# blocked range is served (a separate geo, so it wins whichever is wider).\n"
            f"geo ${p}_allowed {{\n    default 0;\n"
            f"    include {self.paths['allowed.conf']};\n}}\n"
            f"map ${p}_allowed ${p}_blocked {{\n    default 0;\n"
            f"    0 ${p}_block_listed;\n}}\n"
            f"\nmap {header} ${p}_revoked {{\n    default 0;\n"
            f"    include {self.paths['revoked.conf']};\n}}\n"
        )
        for kind, subject_header in self._suspensions():
            out.append(
                f"\n# Set by the authenticating layer in front, never by a client.\n"
                f"map {_variable_of(subject_header)} ${p}_suspended_{kind} {{\n"
                f"    default 0;\n    include {self.paths[f'suspended_{kind}.conf']};\n}}\n"
            )
        out.append(
            f'\nmap {header} ${p}_limit {{\n    default "";\n'
            f"    include {self.paths['limits.conf']};\n}}\n"
            f'map ${p}_limit ${p}_tier {{\n    default "";\n'
            f'    "~^(?<{p}_tier_of>[0-9]+) " ${p}_tier_of;\n}}\n'
            f'map ${p}_limit ${p}_limit_ref {{\n    default "";\n'
            f'    "~ (?<{p}_ref_of>[^ ]+)$" ${p}_ref_of;\n}}\n'
        )
        for tier in o.tiers:
            out.append(
                f'\nmap ${p}_tier ${p}_key_{tier} {{\n    default "";\n    {tier} {header};\n}}\n'
                f"limit_req_zone ${p}_key_{tier} zone={p}_{tier}:{o.zone_size} rate={tier}r/m;\n"
            )
        refusing = ":".join(f"${name}" for name, _, _ in self._refusals())
        out.append(
            f"\n# The reference a refusal carries in its {REFERENCE_HEADER} header, none on any\n"
            "# other answer: for a 401 or 403, that of the first list holding the request (in\n"
            "# the order server.conf tests them); for a 429, the key's limit.\n"
            f'map "{refusing}" ${p}_reference {{\n    default "";\n'
            f'    "~^(?:0:)*(?<{p}_first>[^0:][^:]*)" ${p}_first;\n}}\n'
            f'map $status ${p}_refusal {{\n    default "";\n    401 ${p}_reference;\n'
            f"    403 ${p}_reference;\n    429 ${p}_limit_ref;\n}}\n"
        )
        return "".join(out)

    def _refusals(self) -> list[tuple[str, int, str]]:
        """(variable, status, error) of the lists that refuse outright, in the order
        server.conf tests them."""
        p = self.options.prefix
        found = [(f"{p}_blocked", 403, "blocked by policy")]
        for kind, _ in self._suspensions():
            what = "account" if kind == "account" else "organisation"
            found.append((f"{p}_suspended_{kind}", 403, f"{what} suspended"))
        return [*found, (f"{p}_revoked", 401, "api key revoked")]

    def _rules(self) -> str:
        p = self.options.prefix

        def refuse(variable: str, status: int, error: str) -> str:
            body = f'{{"error":"{error}","reference":"${{{variable}}}"}}\\n'
            return f"if (${variable}) {{\n    return {status} '{body}';\n}}\n"

        out = [refuse(*refusal) for refusal in self._refusals()]
        out += [
            f'if (${p}_tier = "0") {{\n    return 429 '
            f'\'{{"error":"rate limited","reference":"${{{p}_limit_ref}}"}}\\n\';\n}}\n',
            "# burst = a minute's worth: a key gets its whole allowance at once, then the rate.\n",
        ]
        out += [
            f"limit_req zone={p}_{tier} burst={tier - 1} nodelay;\n" for tier in self.options.tiers
        ]
        out += [
            "limit_req_status 429;\n",
            f"add_header {REFERENCE_HEADER} ${p}_refusal always;\n",
        ]
        return "".join(out)

    def _write(self, contents: _Files) -> None:
        """Each file replaced atomically (temp file, fsync, rename): NGINX, or a reload by
        someone else, never reads half a file. Synchronous on purpose: no await can
        cancel it halfway, so a restore never races a write."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            for name, data in contents.items():
                path = self.paths[name]
                if data is None:
                    path.unlink(missing_ok=True)
                    continue
                atomic_write(path, data)
        except OSError as exc:
            raise ConnectorError(f"cannot write {self.dir}: {exc}") from None

    async def _commit(self, before: _Files, wanted: _Files, tables: _Tables) -> None:
        """Write, test, reload. Any failure before the test passes puts the previous
        files back, so what is on disk is always something that passed `nginx -t` (or
        what someone else left there); once it passes, `tables` are what the files
        hold."""
        changed = {name: data for name, data in wanted.items() if data != before[name]}
        if changed:
            self._write(changed)
            self._unconfirmed = True
        try:
            dump = await self._test()
        except BaseException:
            # Failed, timed out or cancelled: untested files must not wait for a reload.
            self._write({name: before[name] for name in changed})
            raise
        # Files that pass but are not read yet stay: the operator needs them to exist
        # before the main configuration can include them.
        self._remember(wanted, tables, self._stamp())
        self._check_included(dump)
        await self._reload()
        self._unconfirmed = False

    # -- nginx itself ----------------------------------------------------------------------

    async def _test(self) -> str:
        """`nginx -T -c MAIN`: the test, plus a dump of the configuration (which names
        every file NGINX reads)."""
        code, out, err = await self._run("-T", "-c", self.options.main_config)
        if code != 0:
            raise ConfigRejected(
                f"nginx -t failed, so nothing was reloaded (NGINX keeps its running "
                f"configuration) and Tollgate's files were left as they were: {_errors(err)}"
            )
        return out

    def _check_included(self, dump: str) -> None:
        """A main configuration that does not include the frame passes the test and
        enforces nothing: that must be an error, not a silent success."""
        read = [Path(p) for p in _CONF_FILE.findall(dump)]
        for name in ("http.conf", "server.conf"):
            if not any(_same(self.paths[name], p) for p in read):
                raise ConfigRejected(
                    f"{self.options.main_config} does not include {self.paths[name]}, so "
                    f"nothing Tollgate writes is enforced: include it as docs/nginx.md shows"
                )

    async def _reload(self) -> None:
        """SIGHUP to the master, then wait until it has started new workers (it only does
        once the new configuration is loaded) and every old worker has stopped
        accepting (its title turns to `... is shutting down`)."""
        pid = self._master()
        if pid is None:
            raise self._not_running()
        before = await self._settled(pid)
        started = time.monotonic()
        try:
            os.kill(pid, signal.SIGHUP)
        except ProcessLookupError:
            raise self._not_running() from None
        except PermissionError:
            raise _bad(
                f"not allowed to signal the nginx master (pid {pid}): run Tollgate as root "
                "or as the user that runs nginx"
            ) from None
        if before is None:
            await asyncio.sleep(0.2)  # no /proc to watch: give the master a moment
            return
        deadline = started + self.timeout
        while True:
            now = _children(pid)
            if now is None:
                raise GatewayUnavailable(f"nginx master {pid} exited during a reload")
            fresh = [c for c, title in now.items() if c not in before and _accepting(title)]
            lingering = [c for c, title in now.items() if c in before and _accepting(title)]
            if fresh and not lingering:
                self.last_reload_seconds = time.monotonic() - started
                return
            if time.monotonic() > deadline:
                raise ConnectorError(
                    f"nginx master {pid} did not start workers with the new configuration "
                    f"within {self.timeout:g}s of SIGHUP: see its error log"
                )
            await asyncio.sleep(_POLL)

    async def _settled(self, pid: int) -> dict[int, str] | None:
        """The master's children once it has workers and none is still being forked (a
        child keeps the master's title until it names itself): right after NGINX starts,
        its first worker must not pass for one started by the reload."""
        deadline = time.monotonic() + self.timeout
        while True:
            children = _children(pid)
            if children is None:
                return None
            titles = children.values()
            if any(_accepting(t) for t in titles) and not any("master" in t for t in titles):
                return children
            if time.monotonic() > deadline:
                raise GatewayUnavailable(f"nginx master {pid} has no worker processes")
            await asyncio.sleep(_POLL)

    def _master(self) -> int | None:
        """The master's pid when it runs (a stale pid file, or a pid now used by another
        program, is not running)."""
        try:
            pid = int(Path(self.options.pid_file).read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        title = _title(pid)
        return pid if title is None or "nginx" in title else None

    def _not_running(self) -> GatewayUnavailable:
        return GatewayUnavailable(
            f"nginx is not running (no live master in {self.options.pid_file}); the files "
            f"in {self.dir} are ready for when it starts"
        )

    async def _run(self, *args: str) -> tuple[int, str, str]:
        binary = self._binary()
        try:
            proc = await asyncio.create_subprocess_exec(
                binary,
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise _bad(f"cannot run {binary}: {exc}") from None
        try:
            out, err = await asyncio.wait_for(proc.communicate(), self.timeout)
        except TimeoutError:
            raise ConnectorError(
                f"{binary} {' '.join(args)} took longer than {self.timeout:g}s"
            ) from None
        finally:
            if proc.returncode is None:  # timed out or cancelled: no stray nginx -t
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")

    def _binary(self) -> str:
        given = self.options.nginx
        if os.sep in given:
            return given
        found = shutil.which(given) or shutil.which(given, path="/usr/sbin:/usr/local/sbin")
        if found is None:
            raise _bad(f"{given} not found in PATH or /usr/sbin: set options.nginx")
        return found

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        """One writer per include dir: this connector's calls queue on a lock, and other
        processes (a second Tollgate by mistake) on an flock of `.lock` there."""
        async with self._lock:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
                handle = (self.dir / ".lock").open("a")
            except OSError as exc:
                raise ConnectorError(f"cannot use {self.dir}: {exc}") from None
            try:
                deadline = time.monotonic() + self.timeout
                while True:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise ConnectorError(
                                f"another process holds {self.dir / '.lock'}"
                            ) from None
                        await asyncio.sleep(0.02)
                yield
            finally:
                handle.close()


def _errors(stderr: str) -> str:
    """The `[emerg]` lines of nginx's output, without timestamps and pids."""
    lines = []
    for line in stderr.splitlines():
        match = _LOG_PREFIX.match(line)
        if match and match.group(1) in {"emerg", "alert", "crit"}:
            lines.append(line[match.end() :])
    return "; ".join(lines) or stderr.strip()


def _same(path: Path, other: Path) -> bool:
    try:
        return path == other or path.samefile(other)
    except OSError:
        return False


def _title(pid: int) -> str | None:
    """A process's title (NGINX rewrites its own: `nginx: worker process`), or None
    without /proc."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return "" if not Path("/proc/self").exists() else None
    except OSError:
        return ""


def _accepting(title: str) -> bool:
    return "worker process" in title and "shutting down" not in title


def _children(master: int) -> dict[int, str] | None:
    """The master's child processes and their titles; None without /proc, or once the
    master is gone."""
    if not Path("/proc/self").exists() or not Path(f"/proc/{master}").exists():
        return None
    children: list[int] = []
    listing = Path(f"/proc/{master}/task/{master}/children")
    try:
        children = [int(c) for c in listing.read_text().split()]
    except OSError:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                    children.append(int(stat.parent.name))
    titles = {c: _title(c) for c in children}
    return {c: t for c, t in titles.items() if t}


def create(config: ConnectorConfig, http: httpx.AsyncClient) -> NginxConnector:
    return NginxConnector(config, http)
