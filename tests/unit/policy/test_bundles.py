"""Signed OPA bundles: export, OPA's file hashes and JWT, verification, vendoring, and
`tollgate policy check` over vendored bundles; the real OPA evaluator checks the JWT
and the hashes Tollgate wrote."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from opa_bindings import OpaEngine

from controlplane.audit.keys import generate, key_id, load_public_key, load_signer
from controlplane.engine.bundle import load_bundle
from controlplane.policy.bundles import (
    SIGNATURES,
    Bundle,
    BundleRefused,
    check_vendored,
    export_bundle,
    file_hash,
    read_bundle,
    vendor,
    verify_bundle,
)
from tests.unit.policy.policy_dirs import VALID, tollgate, write_policies

SHARED = """\
# METADATA
# title: Shared sweep blocking
# description: Rate-limits capability sweeps.
# custom:
#   owner: lab-a
package tollgate.shared.sweep

# METADATA
# title: sweep
# description: A sweep above the shared threshold.
# custom:
#   owner: lab-a
sweep if input.verdict.score >= data.tollgate.shared.sweep.threshold
"""


@pytest.fixture
def lab_a(tmp_path: Path) -> tuple[Path, Path, Path]:
    """lab-a's policy repository with a shared package, its key pair."""
    repo = write_policies(
        tmp_path / "lab-a",
        {"tollgate/shared/sweep/sweep.rego": SHARED},
    )
    (repo / "tollgate/shared/sweep/data.json").write_text(
        json.dumps({"threshold": 0.9, "note": "sweeps \u2028 <fast>"}, indent=4)
    )
    generate(tmp_path / "a.key", tmp_path / "a.pub.pem")
    return repo, tmp_path / "a.key", tmp_path / "a.pub.pem"


def exported(lab: tuple[Path, Path, Path], *packages: str) -> Bundle:
    repo, private, _ = lab
    return export_bundle(load_bundle(repo), packages, load_signer(private), "lab-a")


def keys_of(public: Path) -> dict[str, object]:
    key = load_public_key(public)
    return {key_id(key): key}


def test_an_exported_package_is_an_opa_bundle_that_verifies(lab_a: tuple[Path, Path, Path]) -> None:
    bundle = read_bundle(exported(lab_a, "tollgate.shared").archive())

    assert sorted(bundle.files) == [
        ".manifest",
        SIGNATURES,
        "tollgate/shared/sweep/data.json",
        "tollgate/shared/sweep/sweep.rego",
    ]
    assert bundle.manifest["roots"] == ["tollgate/shared"]
    assert bundle.manifest["metadata"]["lab"] == "lab-a"
    [token] = json.loads(bundle.files[SIGNATURES])["signatures"]
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header["alg"] == "EdDSA"
    assert verify_bundle(bundle, keys_of(lab_a[2])) == header["kid"]  # type: ignore[arg-type]


def test_the_whole_revision_is_exported_when_no_package_is_named(
    lab_a: tuple[Path, Path, Path],
) -> None:
    bundle = exported(lab_a)

    assert bundle.roots == [""]
    assert "tollgate/decision/decision.rego" in bundle.files


def test_structured_files_hash_as_opa_walks_them() -> None:
    loose = b'{ "b" : 1.50, "a": [true, null, "x\\u2028y", "<&>"] }'

    expected = '{"a":[true,null,"x\\u2028y","<&>"],"b":1.50}'
    assert file_hash("data.json", loose) == file_hash("data.json", expected.encode())
    assert file_hash("data.json", loose) == hashlib.sha256(expected.encode()).hexdigest()
    assert file_hash("x.rego", b"package x\n") == hashlib.sha256(b"package x\n").hexdigest()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda f: f.update({"tollgate/shared/sweep/sweep.rego": b"package evil\n"}), "changed"),
        (lambda f: f.update({"tollgate/shared/extra.rego": b"package extra\n"}), "not covered"),
        (lambda f: f.pop("tollgate/shared/sweep/data.json"), "missing"),
        (lambda f: f.pop(SIGNATURES), "unsigned"),
        (lambda f: f.update({".manifest": b'{"roots": [""]}'}), "changed"),
    ],
)
def test_any_change_after_signing_is_refused(
    lab_a: tuple[Path, Path, Path], change: object, reason: str
) -> None:
    files = dict(exported(lab_a, "tollgate.shared").files)
    change(files)  # type: ignore[operator]

    with pytest.raises(BundleRefused, match=reason):
        verify_bundle(Bundle(files), keys_of(lab_a[2]))  # type: ignore[arg-type]


def test_a_key_not_held_here_is_refused(lab_a: tuple[Path, Path, Path], tmp_path: Path) -> None:
    generate(tmp_path / "other.key", tmp_path / "other.pub.pem")

    with pytest.raises(BundleRefused, match="not a trusted key"):
        verify_bundle(exported(lab_a, "tollgate.shared"), keys_of(tmp_path / "other.pub.pem"))  # type: ignore[arg-type]


def test_a_forged_signature_under_the_right_kid_is_refused(
    lab_a: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    generate(tmp_path / "mallory.key", tmp_path / "mallory.pub.pem")
    genuine = exported(lab_a, "tollgate.shared")
    forged = export_bundle(
        load_bundle(lab_a[0]), ["tollgate.shared"], load_signer(tmp_path / "mallory.key"), "x"
    )
    token = json.loads(forged.files[SIGNATURES])["signatures"][0]
    real_header = json.loads(genuine.files[SIGNATURES])["signatures"][0].split(".")[0]
    files = {
        **forged.files,
        SIGNATURES: json.dumps(
            {"signatures": [".".join([real_header, *token.split(".")[1:]])]}
        ).encode(),
    }

    with pytest.raises(BundleRefused, match="does not verify"):
        verify_bundle(Bundle(files), keys_of(lab_a[2]))  # type: ignore[arg-type]


def test_vendoring_writes_the_bundle_and_its_key_and_policy_check_verifies_it(
    lab_a: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    lab_b = write_policies(tmp_path / "lab-b", {})
    bundle = read_bundle(exported(lab_a, "tollgate.shared").archive())

    target = vendor(bundle, lab_b, "lab-a", load_public_key(lab_a[2]), ["tollgate.decision"])

    assert target == lab_b / "vendor" / "lab-a"
    assert (target / ".signatures.json").is_file()
    assert list((lab_b / "vendor" / "keys").glob("*.pem"))
    assert check_vendored(lab_b) == []
    revision = load_bundle(lab_b)
    assert ("tollgate.shared.sweep", {"threshold": 0.9, "note": "sweeps \u2028 <fast>"}) in (
        revision.data
    )
    checked = tollgate("policy", "check", str(lab_b))
    assert checked.exit_code == 0, checked.output

    rego = target / "tollgate/shared/sweep/sweep.rego"
    rego.write_text(rego.read_text().replace("0.9", "0.1") + "\n# tuned\n")
    [(where, problem)] = check_vendored(lab_b)
    assert where == str(target) and "changed after signing" in problem
    refused = tollgate("policy", "check", str(lab_b))
    assert refused.exit_code == 1
    assert "vendor/lab-a: tollgate/shared/sweep/sweep.rego was changed after signing" in (
        refused.output
    )


def test_a_bundle_whose_roots_own_local_packages_is_refused_in_one_line(
    lab_a: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    lab_b = write_policies(tmp_path / "lab-b", {})
    whole = exported(lab_a)

    with pytest.raises(BundleRefused, match=r"overlaps package tollgate\.decision") as refused:
        vendor(whole, lab_b, "lab-a", load_public_key(lab_a[2]), ["tollgate.decision"])
    assert "\n" not in refused.value.message
    assert not (lab_b / "vendor" / "lab-a").exists()


def test_import_refuses_an_unverified_bundle_with_one_readable_line(
    lab_a: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    lab_b = write_policies(tmp_path / "lab-b", {})
    generate(tmp_path / "other.key", tmp_path / "other.pub.pem")
    archive = tmp_path / "bundle.tar.gz"
    archive.write_bytes(exported(lab_a, "tollgate.shared").archive())

    wrong = tollgate(
        "intel",
        "bundle",
        "import",
        str(archive),
        "--public-key",
        str(tmp_path / "other.pub.pem"),
        "--name",
        "lab-a",
        "--policy-dir",
        str(lab_b),
    )
    right = tollgate(
        "intel",
        "bundle",
        "import",
        str(archive),
        "--public-key",
        str(lab_a[2]),
        "--name",
        "lab-a",
        "--policy-dir",
        str(lab_b),
    )

    assert wrong.exit_code == 1
    assert "not a trusted key" in wrong.output and "Traceback" not in wrong.output
    assert right.exit_code == 0, right.output
    assert "vendored tollgate/shared" in right.output
    assert (lab_b / "vendor/lab-a/tollgate/shared/sweep/sweep.rego").read_text() == SHARED


def test_the_real_opa_evaluator_verifies_the_jwt_and_the_file_hashes(
    lab_a: tuple[Path, Path, Path],
) -> None:
    # Rego's json.marshal escapes <, > and & where OPA's bundle hasher does not: plain
    # data here, so the real evaluator's marshalling equals the hasher's walk.
    (lab_a[0] / "tollgate/shared/sweep/data.json").write_text('{"threshold": 0.9, "n": 2}')
    bundle = exported(lab_a, "tollgate.shared")
    [token] = json.loads(bundle.files[SIGNATURES])["signatures"]
    pem = load_public_key(lab_a[2]).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    engine = OpaEngine()
    engine.add_policy(
        "verify.rego",
        """package verify

valid := io.jwt.verify_eddsa(input.token, input.pem)

claims := io.jwt.decode(input.token)[1]

hashes_match if {
	every f in claims.files {
		f.hash == _hash(f.name, input.files[f.name])
	}
}

_hash(name, content) := crypto.sha256(content) if endswith(name, ".rego")

_hash(name, content) := crypto.sha256(json.marshal(json.unmarshal(content))) if {
	not endswith(name, ".rego")
}
""",
    )
    files = {n: c.decode() for n, c in bundle.files.items() if n != SIGNATURES}
    given = {"token": token, "pem": pem.decode(), "files": files}

    assert engine.eval_document("verify.valid", given) is True
    assert engine.eval_document("verify.hashes_match", given) is True
    tampered = {**given, "token": token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")}
    assert engine.eval_document("verify.valid", tampered) is False


def test_vendored_data_mounts_from_the_bundle_root(
    lab_a: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    lab_b = write_policies(tmp_path / "lab-b", {"tollgate/decision/decision.rego": VALID})
    vendor(
        exported(lab_a, "tollgate.shared"),
        lab_b,
        "lab-a",
        load_public_key(lab_a[2]),
        ["tollgate.decision"],
    )

    mounts = [path for path, _ in load_bundle(lab_b).data]

    assert mounts == ["tollgate.shared.sweep"]
