"""Intel exchange configuration: `intel:` in the config file (`TOLLGATE_CONFIG`).

    intel:
      lab: lab-a                                 # this lab's name in the exchange
      signing_key_file: /etc/tollgate/intel.key  # Ed25519 (`tollgate audit keygen`)
      consortium_keys:                           # HMAC keys every lab holds
        - {id: k2026a, secret: {env: TOLLGATE_CONSORTIUM_K2026A},
           not_before: "2026-01-01T00:00:00Z", not_after: "2026-07-01T00:00:00Z"}
      collections:                               # what this lab serves over TAXII
        - {id: 2016ad17-76e1-45ba-9c2e-06cfd2f2133f, title: shared,
           tlp: [clear, green], readers: [lab-b, lab-c]}   # peer token names
        - {id: 5b6c1d0e-2f3a-4b5c-8d7e-9f0a1b2c3d4e, title: inbox,
           writers: [lab-b], readers: [lab-b]}     # lab-b may POST objects here
      pull_seconds: 300
      bundle:                                    # blocking strategies shared as an OPA bundle
        packages: [tollgate.shared]              # GET /v1/intel/bundle
        readers: [lab-b]                         # peer token names
      peers:                                     # whom this lab pulls from
        - name: lab-b
          url: http://127.0.0.1:8401/taxii2/tollgate/    # the peer's API root
          collection: 2016ad17-76e1-45ba-9c2e-06cfd2f2133f
          token: {env: TOLLGATE_PEER_LAB_B}
          auth: bearer                             # or basic: token is user:password
          public_key_file: /etc/tollgate/lab-b.pub.pem
          trust: 0.8                              # scales the peer's confidence
          accept: {tlp: [clear, green, amber], pap: [clear, green, amber, red]}

Secrets (consortium keys, peer tokens) are `{env: NAME}` or `{file: PATH}`, never in
the file, and never logged or stored.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controlplane.audit.keys import Signer, key_id, load_public_key, load_signer
from controlplane.errors import InvalidInput
from controlplane.intel.hashing import ConsortiumKey, Keyring
from controlplane.intel.markings import PAPS, TLPS
from controlplane.intel.signing import TrustedKey
from controlplane.settings import read_secret

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
DEFAULT_COLLECTION = "2016ad17-76e1-45ba-9c2e-06cfd2f2133f"
API_ROOT = "tollgate"


@dataclass(frozen=True)
class Collection:
    id: str
    title: str
    tlp: tuple[str, ...] = ("clear", "green")
    """The TLP markings of the objects it holds."""
    readers: tuple[str, ...] = ()
    """Names of the `peer` tokens that may read it (engineers and auditors always may)."""
    writers: tuple[str, ...] = ()
    """Peers that may add objects to it (TAXII POST). A collection with writers is an
    inbox: it holds what they posted, never what this lab publishes."""


@dataclass(frozen=True)
class Peer:
    name: str
    url: str
    collection: str
    token: str = field(repr=False)
    public: Ed25519PublicKey
    trust: float = 1.0
    accept_tlp: tuple[str, ...] = ("clear", "green", "amber")
    accept_pap: tuple[str, ...] = PAPS
    auth: str = "bearer"
    """`bearer` (a Tollgate peer token) or `basic` (the token is `user:password`, as
    plain TAXII servers such as medallion take it)."""

    @property
    def key_id(self) -> str:
        return key_id(self.public)


@dataclass(frozen=True)
class SharedBundle:
    """The Rego packages this lab shares as a signed OPA bundle (`GET
    /v1/intel/bundle`), and the peers that may fetch it."""

    packages: tuple[str, ...] = ()
    readers: tuple[str, ...] = ()


@dataclass(frozen=True)
class IntelConfig:
    lab: str = "local"
    signer: Signer | None = None
    keyring: Keyring = field(default_factory=Keyring)
    collections: Sequence[Collection] = (Collection(DEFAULT_COLLECTION, "shared"),)
    peers: Sequence[Peer] = ()
    pull_seconds: float = 300.0
    bundle: SharedBundle = field(default_factory=lambda: SharedBundle())

    def collection(self, collection_id: str) -> Collection | None:
        return next((c for c in self.collections if c.id == collection_id), None)

    def peer(self, name: str) -> Peer | None:
        return next((p for p in self.peers if p.name == name), None)

    def trusted_keys(self) -> dict[str, TrustedKey]:
        """Key id -> the lab it speaks for: every peer's, and this lab's own. A key named by
        several peers (a relay lists the key of the lab whose objects it carries) speaks
        for the first peer that names it."""
        keys: dict[str, TrustedKey] = {}
        for p in self.peers:
            keys.setdefault(p.key_id, TrustedKey(p.name, p.public))
        if self.signer is not None:
            keys[self.signer.key_id] = TrustedKey(self.lab, self.signer.public)
        return keys


def load_intel(path: Path) -> IntelConfig:
    """The config file's `intel:`; the defaults when the file or section is absent."""
    if not path.exists():
        return IntelConfig()
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise InvalidInput(f"{path}: not valid YAML: {exc}") from None
    raw = document.get("intel") if isinstance(document, dict) else None
    return parse_intel(f"{path}: intel", raw or {})


_KEYS = {
    "lab",
    "signing_key_file",
    "consortium_keys",
    "collections",
    "peers",
    "pull_seconds",
    "bundle",
}
_PACKAGE = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$")


def parse_intel(where: str, raw: Any) -> IntelConfig:
    if not isinstance(raw, dict) or set(raw) - _KEYS:
        raise InvalidInput(f"{where} is a mapping with keys {', '.join(sorted(_KEYS))}")
    lab = _name(f"{where}.lab", raw.get("lab", "local"))
    signer = None
    if raw.get("signing_key_file"):
        signer = load_signer(Path(str(raw["signing_key_file"])), f"{where}.signing_key_file")
    keys = [
        _key(f"{where}.consortium_keys[{i}]", k)
        for i, k in enumerate(_list(where, raw, "consortium_keys"))
    ]
    collections = [
        _collection(f"{where}.collections[{i}]", c)
        for i, c in enumerate(_list(where, raw, "collections"))
    ] or [Collection(DEFAULT_COLLECTION, "shared")]
    peers = [_peer(f"{where}.peers[{i}]", p) for i, p in enumerate(_list(where, raw, "peers"))]
    for label, names in (
        ("collections", [c.id for c in collections]),
        ("peers", [p.name for p in peers]),
        ("consortium_keys", [k.key_id for k in keys]),
    ):
        if len(set(names)) != len(names):
            raise InvalidInput(f"{where}.{label}: names must be unique")
    for i, c in enumerate(collections):
        unknown = sorted(set(c.writers) - {p.name for p in peers})
        if unknown:
            raise InvalidInput(
                f"{where}.collections[{i}].writers: {', '.join(unknown)} must be among the "
                "peers (their key verifies what they post)"
            )
    seconds = raw.get("pull_seconds", 300)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise InvalidInput(f"{where}.pull_seconds must be a positive number of seconds")
    return IntelConfig(
        lab,
        signer,
        Keyring(keys),
        collections,
        peers,
        float(seconds),
        _bundle(f"{where}.bundle", raw.get("bundle") or {}),
    )


def _bundle(where: str, raw: Any) -> SharedBundle:
    if not isinstance(raw, dict) or set(raw) - {"packages", "readers"}:
        raise InvalidInput(f"{where} takes packages and readers")
    packages, readers = raw.get("packages") or [], raw.get("readers") or []
    if not isinstance(packages, list) or not all(
        isinstance(p, str) and _PACKAGE.match(p) for p in packages
    ):
        raise InvalidInput(f"{where}.packages must be Rego package names (tollgate.shared)")
    if not isinstance(readers, list):
        raise InvalidInput(f"{where}.readers must be a list of peer token names")
    if readers and not packages:
        raise InvalidInput(f"{where}.readers: name the packages shared, under {where}.packages")
    return SharedBundle(tuple(packages), tuple(str(r) for r in readers))


def _list(where: str, raw: dict[str, Any], key: str) -> list[Any]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise InvalidInput(f"{where}.{key} must be a list")
    return value


def _name(where: str, value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise InvalidInput(f"{where} must be a lowercase name (letters, digits, . _ -)")
    return value


def _time(where: str, value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{where} must be an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{where} must carry a time zone (e.g. Z)")
    return moment


def _key(where: str, raw: Any) -> ConsortiumKey:
    if not isinstance(raw, dict) or set(raw) - {"id", "secret", "not_before", "not_after"}:
        raise InvalidInput(f"{where} takes id, secret, not_before and not_after")
    key_name = _name(f"{where}.id", raw.get("id"))
    try:
        secret = read_secret(f"{where}.secret", raw.get("secret"))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if len(secret.encode()) < 32:
        raise InvalidInput(f"{where}.secret must be at least 32 bytes (e.g. 64 hex digits)")
    return ConsortiumKey(
        key_name,
        secret.encode(),
        _time(f"{where}.not_before", raw.get("not_before")),
        _time(f"{where}.not_after", raw.get("not_after")),
    )


def _markings(
    where: str, value: Any, allowed: Sequence[str], default: tuple[str, ...]
) -> tuple[str, ...]:
    if value is None:
        return default
    if not isinstance(value, list) or any(v not in allowed for v in value):
        raise InvalidInput(f"{where} must be a list of {', '.join(allowed)}")
    return tuple(value)


def _collection(where: str, raw: Any) -> Collection:
    if not isinstance(raw, dict) or set(raw) - {"id", "title", "tlp", "readers", "writers"}:
        raise InvalidInput(f"{where} takes id, title, tlp, readers and writers")
    ident = raw.get("id")
    if not isinstance(ident, str) or not re.fullmatch(r"[0-9a-f-]{36}", ident):
        raise InvalidInput(f"{where}.id must be a UUID (TAXII collection ids are UUIDs)")
    readers, writers = raw.get("readers") or [], raw.get("writers") or []
    if not isinstance(readers, list):
        raise InvalidInput(f"{where}.readers must be a list of peer token names")
    if not isinstance(writers, list):
        raise InvalidInput(f"{where}.writers must be a list of peer names")
    return Collection(
        ident,
        str(raw.get("title") or ident),
        _markings(f"{where}.tlp", raw.get("tlp"), TLPS, ("clear", "green")),
        tuple(str(r) for r in readers),
        tuple(_name(f"{where}.writers[{i}]", w) for i, w in enumerate(writers)),
    )


_PEER_KEYS = {"name", "url", "collection", "token", "auth", "public_key_file", "trust", "accept"}


def _peer(where: str, raw: Any) -> Peer:
    if not isinstance(raw, dict) or set(raw) - _PEER_KEYS:
        raise InvalidInput(f"{where} takes {', '.join(sorted(_PEER_KEYS))}")
    name = _name(f"{where}.name", raw.get("name"))
    url = raw.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise InvalidInput(f"{where}.url must be the peer's TAXII API root, http(s)://.../")
    collection = raw.get("collection")
    if not isinstance(collection, str) or not collection:
        raise InvalidInput(f"{where}.collection must name the peer's collection id")
    try:
        token = read_secret(f"{where}.token", raw.get("token"))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if not raw.get("public_key_file"):
        raise InvalidInput(f"{where}.public_key_file: a peer's objects are verified with its key")
    public = load_public_key(Path(str(raw["public_key_file"])), f"{where}.public_key_file")
    trust = raw.get("trust", 1.0)
    if isinstance(trust, bool) or not isinstance(trust, int | float) or not 0 <= trust <= 1:
        raise InvalidInput(f"{where}.trust must be a number from 0 to 1")
    auth = raw.get("auth", "bearer")
    if auth not in ("bearer", "basic") or (auth == "basic" and ":" not in token):
        raise InvalidInput(f"{where}.auth must be bearer, or basic with a `user:password` token")
    accept = raw.get("accept") or {}
    if not isinstance(accept, dict) or set(accept) - {"tlp", "pap"}:
        raise InvalidInput(f"{where}.accept takes tlp and pap lists")
    return Peer(
        name,
        url.rstrip("/") + "/",
        collection,
        token,
        public,
        float(trust),
        _markings(f"{where}.accept.tlp", accept.get("tlp"), TLPS, ("clear", "green", "amber")),
        _markings(f"{where}.accept.pap", accept.get("pap"), PAPS, PAPS),
        auth,
    )
