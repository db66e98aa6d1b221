"""Shared blocking strategies as signed OPA bundles.

A lab exports Rego packages of its active policy revision as an OPA bundle: the
`.rego` files and `data.json` documents at their paths in the policy repository, a
`.manifest` (`revision`, `roots`, `rego_version`, `metadata.lab`), and a
`.signatures.json` as OPA's bundle signing specifies: `{"signatures": [JWT]}`, one
compact JWS signed with the lab's Ed25519 intel key (`alg: EdDSA`, `kid`: its key id)
whose payload lists every other file with its SHA-256 (`files: [{name, hash,
algorithm}]`). Hashes are OPA's: the bytes of a `.rego` file; for `.manifest` and
`data.json`, the JSON value written with its object keys sorted, no whitespace, numbers
as written, strings escaped as Go's encoder does (so whitespace never matters).

Another lab imports it into its policy repository under `vendor/<name>/` after
verifying the signature against a key it holds (a peer's `public_key_file`, or one
given), refusing it with one line otherwise; the public key goes to `vendor/keys/`, and
`tollgate policy check` verifies every vendored bundle against those keys. A bundle
whose roots overlap a package of the repository (or of another vendored bundle) is
refused: OPA bundles own their roots.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from controlplane.audit.keys import Signer, key_id
from controlplane.engine.bundle import PolicyBundle
from controlplane.errors import InvalidInput
from controlplane.policy.rego import read_module

MANIFEST = ".manifest"
SIGNATURES = ".signatures.json"
VENDOR = "vendor"
"""Vendored bundles live in `<policy dir>/vendor/<name>/`."""
KEYS = "keys"
"""Their trusted public keys in `<policy dir>/vendor/keys/*.pem` (named by anything)."""
MAX_BUNDLE = 16 * 2**20
"""The most bytes a bundle archive may hold, unpacked."""
_STRUCTURED = {MANIFEST, "data.json", "data.yaml", SIGNATURES}


class BundleRefused(InvalidInput):
    """A bundle that does not verify, or cannot be vendored here."""

    code = "bundle_refused"


@dataclass(frozen=True)
class Bundle:
    """An OPA bundle's files by path (no leading `/`)."""

    files: dict[str, bytes]

    @property
    def manifest(self) -> dict[str, Any]:
        raw = self.files.get(MANIFEST)
        if raw is None:
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            raise BundleRefused(".manifest is not JSON") from None
        if not isinstance(value, dict):
            raise BundleRefused(".manifest is not a JSON object")
        return value

    @property
    def roots(self) -> list[str]:
        roots = self.manifest.get("roots", [""])
        if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
            raise BundleRefused(".manifest roots must be a list of paths")
        return [r.strip("/") for r in roots]

    def archive(self) -> bytes:
        """The bundle as OPA reads one: a gzipped tarball, files at its root."""
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            for name in sorted(self.files):
                info = tarfile.TarInfo(f"/{name}")
                info.size, info.mode, info.mtime = len(self.files[name]), 0o644, 0
                tar.addfile(info, io.BytesIO(self.files[name]))
        return out.getvalue()


# -- OPA's file hashes -------------------------------------------------------------------


class _Number(str):
    """A JSON number as written (OPA hashes numbers by their text)."""


def _go_string(text: str) -> str:
    # Go's encoder (HTML escaping off): \" \\ \b \f \n \r \t, \u00xx for other controls,
    # and U+2028/U+2029 escaped; Python's agrees but for those two.
    return (
        json.dumps(text, ensure_ascii=False)
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _walk(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: k.encode())):
            if i:
                out.append(",")
            out.append(_go_string(key))
            out.append(":")
            _walk(value[key], out)
        out.append("}")
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _walk(item, out)
        out.append("]")
    elif isinstance(value, _Number):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_go_string(value))
    else:
        out.append(json.dumps(value))  # true, false, null


def file_hash(name: str, content: bytes) -> str:
    """SHA-256 of a bundle file as OPA computes it for `.signatures.json`."""
    if PurePosixPath(name).name not in _STRUCTURED:
        return hashlib.sha256(content).hexdigest()
    try:
        value = json.loads(content, parse_float=_Number, parse_int=_Number)
    except ValueError:
        raise BundleRefused(f"{name} is not JSON") from None
    parts: list[str] = []
    _walk(value, parts)
    return hashlib.sha256("".join(parts).encode()).hexdigest()


# -- JWS (compact, EdDSA) ----------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_bundle(files: Mapping[str, bytes], signer: Signer, issuer: str) -> Bundle:
    """The files with `.signatures.json` added: one JWT over every file's hash."""
    listed = [
        {"name": name, "hash": file_hash(name, content), "algorithm": "SHA-256"}
        for name, content in sorted(files.items())
        if name != SIGNATURES
    ]
    header = {"alg": "EdDSA", "kid": signer.key_id, "typ": "JWT"}
    payload = {"files": listed, "iat": int(time.time()), "iss": issuer}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    token = f"{signing_input}.{_b64(signer.private.sign(signing_input.encode()))}"
    signatures = json.dumps({"signatures": [token]}, indent=2).encode()
    return Bundle({**files, SIGNATURES: signatures})


def verify_bundle(bundle: Bundle, keys: Mapping[str, Ed25519PublicKey]) -> str:
    """Check the bundle as OPA does: exactly one JWT, signed by a key held here (by its
    `kid`), listing every file of the bundle with its hash, and no other. Returns the
    key id that signed; raises `BundleRefused` with the first reason otherwise."""
    raw = bundle.files.get(SIGNATURES)
    if raw is None:
        raise BundleRefused("unsigned: the bundle has no .signatures.json")
    try:
        tokens = json.loads(raw).get("signatures")
    except (ValueError, AttributeError):
        raise BundleRefused('.signatures.json is not {"signatures": [JWT]}') from None
    if not isinstance(tokens, list) or len(tokens) != 1 or not isinstance(tokens[0], str):
        raise BundleRefused(".signatures.json must hold exactly one JWT")
    parts = tokens[0].split(".")
    if len(parts) != 3:
        raise BundleRefused("the signature is not a compact JWS (header.payload.signature)")
    try:
        header = json.loads(_unb64(parts[0]))
        payload = json.loads(_unb64(parts[1]))
        signature = _unb64(parts[2])
    except ValueError:
        raise BundleRefused("the signature's JWT does not decode") from None
    if not isinstance(header, dict) or header.get("alg") != "EdDSA":
        raise BundleRefused(f"signature algorithm {header.get('alg')!r}: only EdDSA is accepted")
    kid = str(header.get("kid") or (payload.get("keyid") if isinstance(payload, dict) else ""))
    public = keys.get(kid)
    if public is None:
        raise BundleRefused(
            f"signed with key {kid or '(none)'}, which is not a trusted key here "
            f"(trusted: {', '.join(sorted(keys)) or 'none'})"
        )
    try:
        public.verify(signature, f"{parts[0]}.{parts[1]}".encode())
    except InvalidSignature:
        raise BundleRefused(f"the signature does not verify against key {kid}") from None
    listed = payload.get("files") if isinstance(payload, dict) else None
    if not isinstance(listed, list):
        raise BundleRefused("the signed payload lists no files")
    signed: dict[str, dict[str, Any]] = {}
    for entry in listed:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise BundleRefused("the signed payload has a file entry without a name")
        signed[entry["name"].lstrip("/")] = entry
    for name, content in sorted(bundle.files.items()):
        if name == SIGNATURES:
            continue
        entry = signed.pop(name, None)
        if entry is None:
            raise BundleRefused(f"{name} is not covered by the signature")
        if entry.get("algorithm") != "SHA-256":
            raise BundleRefused(f"{name}: hash algorithm {entry.get('algorithm')!r}, not SHA-256")
        if entry.get("hash") != file_hash(name, content):
            raise BundleRefused(f"{name} was changed after signing (its hash differs)")
    if signed:
        raise BundleRefused(f"signed but missing from the bundle: {', '.join(sorted(signed))}")
    return kid


# -- building from a revision ------------------------------------------------------------


def _segments(path: str) -> list[str]:
    return [p for p in path.replace(".", "/").split("/") if p]


def _overlaps(a: str, b: str) -> bool:
    x, y = _segments(a), _segments(b)
    return x[: len(y)] == y or y[: len(x)] == x


def export_bundle(
    revision: PolicyBundle, packages: Iterable[str], signer: Signer, lab: str
) -> Bundle:
    """The revision's packages under `packages` (all of it when none), signed. Vendored
    bundles of the revision are never re-exported."""
    roots = sorted({p.removeprefix("data.").strip(".") for p in packages})
    files: dict[str, bytes] = {}
    for path, source in sorted(revision.modules.items()):
        if path.split("/", 1)[0] == VENDOR:
            continue
        package = read_module(path, source).package
        if not roots or any(_within(package, r) for r in roots):
            files[path] = source.encode()
    for mount, document in revision.data:
        if mount.split(".", 1)[0] == VENDOR:
            continue
        if not roots or any(_within(mount, r) for r in roots):
            name = "/".join([*_segments(mount), "data.json"])
            files[name] = json.dumps(document, indent=2, sort_keys=True).encode()
    if not any(name.endswith(".rego") for name in files):
        raise InvalidInput(
            f"no package of revision {revision.revision[:12]} is under "
            f"{', '.join(roots) or 'the root'}: name packages it holds"
        )
    manifest = {
        "revision": revision.revision,
        "roots": ["/".join(_segments(r)) for r in roots] if roots else [""],
        "rego_version": 1,
        "metadata": {"lab": lab, "exported_by": "tollgate"},
    }
    files[MANIFEST] = json.dumps(manifest, indent=2).encode()
    return sign_bundle(files, signer, lab)


def _within(path: str, root: str) -> bool:
    inner, outer = _segments(path), _segments(root)
    return inner[: len(outer)] == outer


# -- reading and vendoring ---------------------------------------------------------------


def read_bundle(source: Path | bytes) -> Bundle:
    """A bundle from a `.tar.gz` (bytes or a file) or a directory."""
    if isinstance(source, Path) and source.is_dir():
        files = {
            p.relative_to(source).as_posix(): p.read_bytes()
            for p in sorted(source.rglob("*"))
            if p.is_file()
        }
        return Bundle(files)
    data = source.read_bytes() if isinstance(source, Path) else source
    files = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar:
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BundleRefused(f"{member.name}: only plain files may be in a bundle")
                name = _safe_name(member.name)
                total += member.size
                if total > MAX_BUNDLE:
                    raise BundleRefused(f"the bundle unpacks to more than {MAX_BUNDLE} bytes")
                extracted = tar.extractfile(member)
                assert extracted is not None
                files[name] = extracted.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleRefused(f"not a gzipped tar bundle: {exc}") from None
    return Bundle(files)


def _safe_name(name: str) -> str:
    path = PurePosixPath(name.lstrip("/"))
    if not path.parts or any(part in ("..", "") for part in path.parts):
        raise BundleRefused(f"{name!r}: a bundle path may not leave the bundle")
    return path.as_posix()


def trusted_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """Key id -> key, for every Ed25519 PEM public key in `directory`."""
    keys: dict[str, Ed25519PublicKey] = {}
    if not directory.is_dir():
        return keys
    for path in sorted(directory.glob("*.pem")):
        try:
            public = serialization.load_pem_public_key(path.read_bytes())
        except ValueError:
            raise BundleRefused(f"{path}: not a PEM public key") from None
        if not isinstance(public, Ed25519PublicKey):
            raise BundleRefused(f"{path}: not an Ed25519 key")
        keys[key_id(public)] = public
    return keys


def vendor(
    bundle: Bundle,
    policy_dir: Path,
    name: str,
    public: Ed25519PublicKey,
    local_packages: Iterable[str],
) -> Path:
    """Verify the bundle against `public`, check its roots own nothing of the repository,
    and write it to `<policy_dir>/vendor/<name>/` (replacing an earlier import of that
    name) with its key under `vendor/keys/<name>.pem`. Returns the directory written."""
    if not name or not name.replace("-", "").replace("_", "").isalnum() or name == KEYS:
        raise BundleRefused(f"{name!r}: a vendored bundle's name is letters, digits, - and _")
    verify_bundle(bundle, {key_id(public): public})
    for root in bundle.roots:
        taken = next((p for p in local_packages if _overlaps(p, root)), None)
        if taken is not None:
            raise BundleRefused(
                f"its root {root or '(everything)'!r} overlaps package {taken} of this "
                "repository: import only bundles exported with --package for packages "
                "this repository does not have"
            )
    for path in bundle.files:
        if not (path.endswith(".rego") or PurePosixPath(path).name in _STRUCTURED):
            raise BundleRefused(f"{path}: a vendored bundle holds .rego and data.json only")
    target = policy_dir / VENDOR / name
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    for path, content in bundle.files.items():
        out = staging / path
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(content)
    if target.exists():
        shutil.rmtree(target)
    staging.replace(target)
    keys = policy_dir / VENDOR / KEYS
    keys.mkdir(exist_ok=True)
    if key_id(public) not in trusted_keys(keys):
        (keys / f"{name}.pem").write_bytes(
            public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return target


def vendored(policy_dir: Path) -> list[Path]:
    """The vendored bundles' directories."""
    root = policy_dir / VENDOR
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if p.is_dir() and p.name not in (KEYS,)]


def check_vendored(policy_dir: Path) -> list[tuple[str, str]]:
    """(directory, problem) for each vendored bundle that does not verify against the
    keys in `vendor/keys/`."""
    try:
        keys = trusted_keys(policy_dir / VENDOR / KEYS)
    except BundleRefused as exc:
        return [(str(policy_dir / VENDOR / KEYS), exc.message)]
    problems = []
    for directory in vendored(policy_dir):
        if directory.name.startswith("."):
            continue
        try:
            verify_bundle(read_bundle(directory), keys)
        except BundleRefused as exc:
            problems.append((str(directory), exc.message))
    return problems
