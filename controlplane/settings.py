"""Settings, read only here: environment variables `TOLLGATE_*`, and the per-provider
settings of the config file (`providers:` in `TOLLGATE_CONFIG`).

Every other module asks `get_settings()` or `load_providers()`; nothing else reads
`os.environ`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml

from controlplane.domain.action import parse_duration
from controlplane.enforce.targets import DEFAULT_FLOOR, PrefixFloor
from controlplane.errors import InvalidInput


def _env(name: str, default: str) -> str:
    return os.environ.get(f"TOLLGATE_{name}", default)


ENFORCE_MODES = ("embedded", "off")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
ENGINES = ("embedded", "remote")
ENGINE_GC_PERCENT = 400
"""Go's default is 100: the engine's heap (~10 MB live) was collected every ~15 ms, 11%
of an evaluation's time, and two engines in one process slowed each other (two ran 1.5
times as many evaluations as one). At 400 `bench/ingest.py` measured 22-24% more
evaluations per second, alone and in the pipeline, for ~40 MB more heap."""
MIN_GC_PERCENT, MAX_GC_PERCENT = 50, 2000


def _number(name: str, default: str, kind: type[float] | type[int]) -> Any:
    """A numeric setting; a value that is not a number names the variable."""
    raw = _env(name, default)
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise InvalidInput(f"TOLLGATE_{name}={raw!r}: must be {what}") from None


def _optional_number(name: str, kind: type[float] | type[int]) -> Any:
    """A numeric setting with no default: None while unset (the caller derives one)."""
    return _number(name, "", kind) if _env(name, "") else None


def takeover_grace_for(check_seconds: float) -> float:
    """How long a replica holds a lock taken from another before acting on it, when the
    holder checks its own every `check_seconds`: a holder cut off from the database has
    learnt it, and stopped, by then."""
    return 2 * check_seconds + 0.5


def _default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


@dataclass(frozen=True)
class Settings:
    """Tollgate's configuration. Each field names its environment variable."""

    data_dir: Path = field(default_factory=lambda: Path(_env("DATA_DIR", ".tollgate")))
    """`TOLLGATE_DATA_DIR`: where the embedded SQLite database and local state live."""

    database_url: str = field(default_factory=lambda: _env("DATABASE_URL", ""))
    """`TOLLGATE_DATABASE_URL`: SQLAlchemy URL. Empty means SQLite (WAL) under the data dir.
    PostgreSQL: `postgresql+psycopg://user@host:5432/db`."""

    policy_dir: Path = field(default_factory=lambda: Path(_env("POLICY_DIR", "policies")))
    """`TOLLGATE_POLICY_DIR`: the Rego policies and their data files."""

    policy_repo: str = field(default_factory=lambda: _env("POLICY_REPO", ""))
    """`TOLLGATE_POLICY_REPO`: a git repository (path or URL) to take policies from, at
    `TOLLGATE_POLICY_REF`, under `TOLLGATE_POLICY_SUBDIR`. Empty: the working tree of
    `TOLLGATE_POLICY_DIR` (revision = its last commit; its uncommitted edits only with
`TOLLGATE_POLICY_ALLOW_UNCOMMITTED`)."""

    policy_ref: str = field(default_factory=lambda: _env("POLICY_REF", "HEAD"))
    """`TOLLGATE_POLICY_REF`: branch, tag or commit of the policy repository."""

    policy_subdir: str = field(default_factory=lambda: _env("POLICY_SUBDIR", ""))
    """`TOLLGATE_POLICY_SUBDIR`: the policies' folder inside the policy repository."""

    policy_allow_uncommitted: bool = field(
        default_factory=lambda: _env("POLICY_ALLOW_UNCOMMITTED", "").lower() in ("1", "true", "yes")
    )
    """`TOLLGATE_POLICY_ALLOW_UNCOMMITTED`: development only. With the working tree as the
    policy source, activate its uncommitted edits (a `<commit>-dirty.<hash>` revision per
    edit), with a warning in the log at every sync. Off (the default): a server activates
    only what is committed, and a tree with local edits serves its last commit."""

    policy_sync_seconds: float = field(
        default_factory=lambda: _number("POLICY_SYNC_SECONDS", "60", float)
    )
    """`TOLLGATE_POLICY_SYNC_SECONDS`: how often the server looks for a new revision."""

    expiry_seconds: float = field(default_factory=lambda: _number("EXPIRY_SECONDS", "5", float))
    """`TOLLGATE_EXPIRY_SECONDS`: how often each replica expires actions and exemptions
    past their time (each claims different ones), and how often a replica standing by
    looks for the lead: how soon it takes the periodic jobs over when the leader dies."""

    takeover_seconds: float | None = field(
        default_factory=lambda: _optional_number("TAKEOVER_SECONDS", float)
    )
    """`TOLLGATE_TAKEOVER_SECONDS`: how long a replica that takes the lead's lock (on
    PostgreSQL) waits before it runs the periodic jobs, so that a leader cut off from the
    database, which learns it only at its next check, has stopped first. Unset: twice
    `TOLLGATE_EXPIRY_SECONDS` plus half a second (10.5 s). 0: at once (one replica only)."""

    @property
    def takeover_grace(self) -> float:
        if self.takeover_seconds is not None:
            return self.takeover_seconds
        return takeover_grace_for(self.expiry_seconds)

    recovery_seconds: float = field(
        default_factory=lambda: _number("RECOVERY_SECONDS", "15", float)
    )
    """`TOLLGATE_RECOVERY_SECONDS`: how often the leader decides verdicts that were stored
    but not decided (a replica died between the two, or deciding failed)."""

    entrypoint: str = field(default_factory=lambda: _env("ENTRYPOINT", "tollgate.decision"))
    """`TOLLGATE_ENTRYPOINT`: the decision document, evaluated as `data.<entrypoint>`."""

    engine_workers: int = field(
        default_factory=lambda: _number("ENGINE_WORKERS", str(_default_workers()), int)
    )
    """`TOLLGATE_ENGINE_WORKERS`: engine processes evaluating a batch, one OPA engine
    each (1: evaluated in the server's own process). With the remote engine: how many
    evaluations are in flight to the OPA server at once."""

    engine_prestart: bool = field(
        default_factory=lambda: _env("ENGINE_PRESTART", "true").lower() not in ("0", "false", "no")
    )
    """`TOLLGATE_ENGINE_PRESTART`: start a revision's engine processes when it is loaded,
    before it decides anything (the default: the first batch after a start or a policy
    change does not wait about a second for them, and a revision the processes cannot
    load is refused before it is swapped in). `false`: start them at the first batch."""

    engine_gc_percent: int = field(
        default_factory=lambda: _number("ENGINE_GC_PERCENT", str(ENGINE_GC_PERCENT), int)
    )
    """`TOLLGATE_ENGINE_GC_PERCENT`: how far the embedded engine's Go heap grows past what
    it keeps live before Go collects it (Go's `GOGC`), set by `tollgate serve`. An
    explicit `GOGC` in the environment wins."""

    engine: str = field(default_factory=lambda: _env("ENGINE", "embedded"))
    """`TOLLGATE_ENGINE`: `embedded` (the OPA evaluator in-process, the default) or `remote`
    (an OPA server at `TOLLGATE_OPA_URL`, e.g. a sidecar, that Tollgate pushes policies to)."""

    opa_url: str = field(default_factory=lambda: _env("OPA_URL", "http://127.0.0.1:8181"))
    """`TOLLGATE_OPA_URL`: the OPA server of the remote engine, `http(s)://host:port`
    (no path: the client always talks to `/v1/...` at the root)."""

    opa_timeout: float = field(default_factory=lambda: _number("OPA_TIMEOUT", "5", float))
    """`TOLLGATE_OPA_TIMEOUT`: seconds one request to the OPA server may take in all
    (connecting, sending, evaluating, reading the answer)."""

    opa_connect_timeout: float = field(
        default_factory=lambda: _number("OPA_CONNECT_TIMEOUT", "1", float)
    )
    """`TOLLGATE_OPA_CONNECT_TIMEOUT`: seconds to open a connection to the OPA server
    (capped at `TOLLGATE_OPA_TIMEOUT`): an unreachable server fails fast instead of
    using up the whole request timeout."""

    otlp_endpoint: str = field(default_factory=lambda: _env("OTLP_ENDPOINT", ""))
    """`TOLLGATE_OTLP_ENDPOINT`: OTLP/HTTP traces endpoint (e.g. `http://127.0.0.1:4318/v1/traces`).
    Empty: spans are made (trace ids are stored) but not exported."""

    span_retention_hours: float = field(
        default_factory=lambda: _number("SPAN_RETENTION_HOURS", "72", float)
    )
    """`TOLLGATE_SPAN_RETENTION_HOURS`: how long the embedded span store keeps finished
    spans in the database (so the console shows a trace without a tracing backend);
    older ones are pruned every few minutes. 0 turns the span store off. OTLP export
    (`TOLLGATE_OTLP_ENDPOINT`) works alongside it either way."""

    console_secret: str = field(default_factory=lambda: _env("CONSOLE_SECRET", ""), repr=False)
    """`TOLLGATE_CONSOLE_SECRET`: the key that signs web console sessions (never printed
    or logged). Empty: a random key per process, so sessions end when the server
    restarts and only work with one replica; set the same value on every replica."""

    console_session_hours: float = field(
        default_factory=lambda: _number("CONSOLE_SESSION_HOURS", "8", float)
    )
    """`TOLLGATE_CONSOLE_SESSION_HOURS`: how long a console sign-in lasts. Revoking the
    token that signed in ends its sessions within seconds."""

    config: Path = field(default_factory=lambda: Path(_env("CONFIG", "tollgate.yaml")))
    """`TOLLGATE_CONFIG`: the config file (connectors, and settings per provider).
    Missing: no connectors, and every provider on the defaults of `ProviderSettings`."""

    host: str = field(default_factory=lambda: _env("HOST", "127.0.0.1"))
    """`TOLLGATE_HOST`: address `tollgate serve` binds."""

    port: int = field(default_factory=lambda: _number("PORT", "8400", int))
    """`TOLLGATE_PORT`: port `tollgate serve` binds."""

    token: str = field(default_factory=lambda: _env("TOKEN", ""), repr=False)
    """`TOLLGATE_TOKEN`: the bearer token the CLI sends (never printed or logged)."""

    url: str = field(default_factory=lambda: _env("URL", ""))
    """`TOLLGATE_URL`: the server the CLI talks to. Empty: `http://<host>:<port>`."""

    audit_signing_key_file: Path | None = field(
        default_factory=lambda: Path(p) if (p := _env("AUDIT_SIGNING_KEY_FILE", "")) else None
    )
    """`TOLLGATE_AUDIT_SIGNING_KEY_FILE`: the Ed25519 private key (PEM, or 64 hex digits)
    that signs audit checkpoints (`tollgate audit keygen` makes one). Unset: no
    checkpoints are written. Keep it off the database host: whoever holds it can sign
    a rewritten history."""

    audit_checkpoint_seconds: float = field(
        default_factory=lambda: _number("AUDIT_CHECKPOINT_SECONDS", "3600", float)
    )
    """`TOLLGATE_AUDIT_CHECKPOINT_SECONDS`: how often the server signs the audit chain's
    head (when a signing key is set and the chain moved). Events after the newest
    checkpoint are chained but not yet signed."""

    enforce: str = field(default_factory=lambda: _env("ENFORCE", "embedded"))
    """`TOLLGATE_ENFORCE`: `embedded` (the default): this process runs a follower per
    connector in a worker thread and applies the change log to the gateways. `off`: it
    only writes the change log, and connector workers (`tollgate worker`, the Helm
    chart's worker Deployment) apply it; such a process needs no connector credentials."""

    log_format: str = field(default_factory=lambda: _env("LOG_FORMAT", "text"))
    """`TOLLGATE_LOG_FORMAT`: `text` (the default, one readable line per record) or `json`
    (one JSON object per line, for a log collector)."""

    log_level: str = field(default_factory=lambda: _env("LOG_LEVEL", "INFO"))
    """`TOLLGATE_LOG_LEVEL`: `DEBUG`, `INFO` (the default), `WARNING` or `ERROR`."""

    config_explicit: bool = field(default_factory=lambda: "TOLLGATE_CONFIG" in os.environ)
    """Whether `TOLLGATE_CONFIG` was set: a config file that was named but is missing
    stops the server at start (a mistyped path must not mean "no connectors")."""

    def check(self) -> None:
        """Refuse settings that cannot work, each with one line saying which and why."""
        for name, value, allowed in (
            ("TOLLGATE_ENFORCE", self.enforce, ENFORCE_MODES),
            ("TOLLGATE_LOG_FORMAT", self.log_format, LOG_FORMATS),
            ("TOLLGATE_ENGINE", self.engine, ENGINES),
            ("TOLLGATE_LOG_LEVEL", self.log_level, LOG_LEVELS),
        ):
            if value.strip().lower() not in [a.lower() for a in allowed]:
                raise InvalidInput(f"{name}={value!r}: must be one of {', '.join(allowed)}")
        for name, seconds in (
            ("TOLLGATE_EXPIRY_SECONDS", self.expiry_seconds),
            ("TOLLGATE_RECOVERY_SECONDS", self.recovery_seconds),
            ("TOLLGATE_POLICY_SYNC_SECONDS", self.policy_sync_seconds),
        ):
            if not seconds > 0:
                raise InvalidInput(f"{name}={seconds:g}: must be a number of seconds above 0")
        if self.takeover_seconds is not None and not self.takeover_seconds >= 0:
            raise InvalidInput(
                f"TOLLGATE_TAKEOVER_SECONDS={self.takeover_seconds:g}: must be a number of "
                "seconds, 0 or more"
            )
        if not MIN_GC_PERCENT <= self.engine_gc_percent <= MAX_GC_PERCENT:
            raise InvalidInput(
                f"TOLLGATE_ENGINE_GC_PERCENT={self.engine_gc_percent}: must be from "
                f"{MIN_GC_PERCENT} to {MAX_GC_PERCENT}"
            )
        if self.config_explicit and not self.config.is_file():
            raise InvalidInput(
                f"TOLLGATE_CONFIG={self.config}: no such file. Fix the path, or unset "
                "TOLLGATE_CONFIG to run without connectors"
            )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'tollgate.db').resolve()}"

    @property
    def api_url(self) -> str:
        return self.url or f"http://{self.host}:{self.port}"


def read_secret(where: str, ref: object) -> str:
    """A secret named in a config file as `{env: NAME}` or `{file: PATH}`; its value is
    never written in the file, stored in the database, logged or traced."""
    if isinstance(ref, dict) and set(ref) == {"env"}:
        value = os.environ.get(str(ref["env"]))
        if not value:
            raise ValueError(f"{where}: environment variable {ref['env']} is not set")
        return value
    if isinstance(ref, dict) and set(ref) == {"file"}:
        try:
            return Path(str(ref["file"])).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"{where}: cannot read {ref['file']}: {exc.strerror}") from None
    raise ValueError(
        f"{where} must be {{env: NAME}} or {{file: PATH}}: secrets are never "
        "written in the config file"
    )


def engine_environment(settings: Settings) -> dict[str, str] | None:
    """The environment a server runs in: its own, with Go's `GOGC` for the embedded
    engine. None when there is nothing to add (a remote engine, or `GOGC` already set: by
    the operator, or by this same server before it started again with it). Go reads
    `GOGC` once, from the environment the process started with: `tollgate serve`
    starts again with this one rather than set it in its own."""
    if settings.engine.strip().lower() != "embedded" or "GOGC" in os.environ:
        return None
    return {**os.environ, "GOGC": str(settings.engine_gc_percent)}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()


# -- per provider (the config file's `providers:`) ----------------------------------------

Fallback = Literal["flag_review", "none"]
FALLBACKS: tuple[Fallback, ...] = ("flag_review", "none")
ANY_PROVIDER = "*"


@dataclass(frozen=True)
class ProviderSettings:
    """What Tollgate itself enforces for one provider, whatever its policies say.

    providers:
      "*":   {min_prefix: {ipv4: 16, ipv6: 32}, fallback: flag_review, cooldown: 7d}
      lab-a: {min_prefix: {ipv4: 20}, fallback: none, cooldown: 14d}
    """

    min_prefix: PrefixFloor = DEFAULT_FLOOR
    """The widest CIDR a block may name (`ipv4`, `ipv6` prefix lengths): an intel
    indicator, exemption or policy action wider than this is refused."""
    fallback: Fallback = "flag_review"
    """What a decision that errors plans: `flag_review` of the subject (so a human sees
    it) or `none` (counted and shown, nothing planned)."""
    cooldown: timedelta = timedelta(days=7)
    """After an upheld appeal or a lift by hand, how long the same rule may not act again
    on the same subject unless the new evidence is stronger (`cooldown: 7d`); the
    policies see it as `history.appeals[].cooldown_until`."""


@dataclass(frozen=True)
class Providers:
    """Settings per provider; a provider not named gets the `"*"` entry (or the defaults)."""

    default: ProviderSettings = field(default_factory=ProviderSettings)
    named: Mapping[str, ProviderSettings] = field(default_factory=dict)

    def of(self, provider: str) -> ProviderSettings:
        return self.named.get(provider, self.default)

    @property
    def longest_cooldown(self) -> timedelta:
        return max(s.cooldown for s in (self.default, *self.named.values()))

    def loosest_floor(self, providers: Iterable[str] | None = None) -> PrefixFloor:
        """The widest floor among `providers` (all when None or `"*"` is among them):
        what is shared by several providers (intel, a connector serving many) must pass
        for one of them, and each one's own floor applies again when it decides."""
        wanted = list(providers) if providers is not None else [ANY_PROVIDER]
        if ANY_PROVIDER in wanted:
            chosen = [self.default, *self.named.values()]
        else:
            chosen = [self.of(p) for p in wanted] or [self.default]
        return PrefixFloor(
            min(s.min_prefix.ipv4 for s in chosen), min(s.min_prefix.ipv6 for s in chosen)
        )


def load_providers(path: Path) -> Providers:
    """The config file's `providers:`; the defaults when the file or the section is absent."""
    if not path.exists():
        return Providers()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML: {exc}") from None
    raw = document.get("providers") if isinstance(document, dict) else None
    return parse_providers(f"{path}: providers", raw or {})


def parse_providers(where: str, raw: Any) -> Providers:
    if not isinstance(raw, dict):
        raise InvalidInput(f'{where} must be a mapping of provider name (or "*") to settings')
    default = _provider(f"{where}.*", raw.get(ANY_PROVIDER) or {}, ProviderSettings())
    named = {
        str(name): _provider(f"{where}.{name}", item or {}, default)
        for name, item in raw.items()
        if name != ANY_PROVIDER
    }
    return Providers(default, named)


def _provider(where: str, raw: Any, base: ProviderSettings) -> ProviderSettings:
    if not isinstance(raw, dict) or set(raw) - {"min_prefix", "fallback", "cooldown"}:
        raise InvalidInput(f"{where} takes min_prefix, fallback and cooldown only")
    fallback = raw.get("fallback", base.fallback)
    if fallback not in FALLBACKS:
        raise InvalidInput(f"{where}.fallback must be one of {', '.join(FALLBACKS)}")
    prefix = raw.get("min_prefix") or {}
    if not isinstance(prefix, dict) or set(prefix) - {"ipv4", "ipv6"}:
        raise InvalidInput(f"{where}.min_prefix takes ipv4 and ipv6 prefix lengths")
    floor = PrefixFloor(
        _length(f"{where}.min_prefix.ipv4", prefix.get("ipv4", base.min_prefix.ipv4), 32),
        _length(f"{where}.min_prefix.ipv6", prefix.get("ipv6", base.min_prefix.ipv6), 128),
    )
    cooldown = base.cooldown
    if "cooldown" in raw:
        try:
            cooldown = parse_duration(str(raw["cooldown"]))
        except ValueError as exc:
            raise InvalidInput(f"{where}.cooldown: {exc}") from None
    return ProviderSettings(min_prefix=floor, fallback=fallback, cooldown=cooldown)


def _length(where: str, value: Any, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise InvalidInput(f"{where} must be a prefix length from 0 to {most}")
    return value
