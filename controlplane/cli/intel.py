"""`tollgate intel`: indicators, peers and pulls, through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.table import Table

from controlplane.audit.keys import load_public_key
from controlplane.cli.client import api_client, cli_settings, fail, request
from controlplane.engine.bundle import load_bundle
from controlplane.errors import TollgateError
from controlplane.intel.config import Peer, load_intel
from controlplane.policy.bundles import VENDOR, read_bundle, vendor
from controlplane.policy.rego import read_module

intel_app = typer.Typer(help="Shared intel: indicators, peers, pulls.", no_args_is_help=True)
out = Console()
UrlOption = Annotated[str | None, typer.Option(help="Server URL [TOLLGATE_URL].")]


@intel_app.command("list")
def list_indicators(
    kind: Annotated[str | None, typer.Option(help="Only this kind (cidr, account, ...).")] = None,
    source: Annotated[str | None, typer.Option(help="Only what this lab said.")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 100,
    url: UrlOption = None,
) -> None:
    """Indicators, local and pulled (identifiers as keyed hashes)."""
    settings = cli_settings()
    params: dict[str, str | int] = {"limit": limit}
    if kind:
        params["kind"] = kind
    if source:
        params["source"] = source
    with api_client(url or settings.api_url, settings.token) as client:
        rows = request(client, "GET", "/v1/intel/indicators", params=params)
    table = Table(title="Indicators")
    for column in (
        "id",
        "kind",
        "value",
        "source",
        "origin",
        "conf",
        "tlp",
        "pap",
        "until",
        "state",
    ):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(
            r["id"],
            r["kind"],
            r["value"],
            r["source"],
            r["origin"],
            f"{r['confidence']:.2f}",
            r["tlp"],
            r["pap"],
            r["expires_at"] or "-",
            "retracted" if r["revoked"] else "in force",
        )
    out.print(table if rows else "no indicators")


@intel_app.command("peers")
def peers(url: UrlOption = None) -> None:
    """Each peer: health of the last pull and what it contributed."""
    settings = cli_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        rows = request(client, "GET", "/v1/intel/peers")
    table = Table(title="Peers")
    for column in (
        "name",
        "health",
        "last pull",
        "in force",
        "accepted",
        "refused",
        "retractions",
        "lifted",
        "trust",
    ):
        table.add_column(column, overflow="fold")
    for p in rows:
        health = (
            "[green]ok[/]"
            if p["healthy"]
            else f"[red]failing[/] {p['last_error'] or 'never pulled'}"
        )
        table.add_row(
            p["name"],
            health,
            p["last_pull_at"] or "never",
            str(p["indicators_in_force"]),
            str(p["accepted"]),
            str(p["rejected"]),
            str(p["retractions"]),
            str(p["lifted"]),
            f"{p['trust']:.2f}",
        )
    out.print(table if rows else "no peers configured (intel.peers in TOLLGATE_CONFIG)")


@intel_app.command("pull")
def pull(
    peer: Annotated[str, typer.Argument(help="The peer's name in intel.peers.")],
    url: UrlOption = None,
) -> None:
    """Pull one peer's collection now."""
    settings = cli_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        r = request(client, "POST", f"/v1/intel/peers/{peer}/pull")
    out.print(
        f"{r['peer']}: {r['pages']} page(s), {r['accepted']} accepted, {r['rejected']} refused, "
        f"{r['duplicates']} already held, {r['retractions']} retraction(s), {r['lifted']} lifted"
    )
    if r["error"]:
        out.print(f"[red]error:[/] {r['error']}")
        raise typer.Exit(code=1)


@intel_app.command("retract")
def retract(
    indicator_id: Annotated[
        str, typer.Argument(help="The indicator that caused a false positive.")
    ],
    reason: Annotated[str, typer.Option(help="Why; published to peers in the opinion.")],
    url: UrlOption = None,
) -> None:
    """Mark an indicator a false positive: revoke, tell peers, lift what rested on it."""
    settings = cli_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        r = request(
            client, "POST", f"/v1/intel/indicators/{indicator_id}/retract", json={"reason": reason}
        )
    out.print(
        f"retracted {r['id']}: {r['published']} object(s) published, "
        f"{len(r['lifted'])} action(s) lifted"
    )


bundle_app = typer.Typer(
    help="Blocking strategies shared as signed OPA bundles.", no_args_is_help=True
)
intel_app.add_typer(bundle_app, name="bundle")


@bundle_app.command("export")
def export_bundle(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the .tar.gz.")],
    package: Annotated[
        list[str] | None,
        typer.Option(help="A Rego package to export (repeat); default: the whole revision."),
    ] = None,
    url: UrlOption = None,
) -> None:
    """The active policy revision (or its named packages) as an OPA bundle signed with
    this lab's intel key: `.manifest`, `.signatures.json`, `.rego` files, `data.json`."""
    settings = cli_settings()
    with api_client(url or settings.api_url, settings.token) as client:
        archive = request(
            client, "GET", "/v1/intel/bundle/", params={"package": package or []}, raw=True
        )
    output.write_bytes(archive)
    manifest = read_bundle(archive).manifest
    out.print(
        f"{output}: revision {str(manifest.get('revision', ''))[:12]}, roots "
        f"{', '.join(r or '(everything)' for r in manifest.get('roots', ['']))}"
    )


@bundle_app.command("import")
def import_bundle(
    source: Annotated[
        Path | None, typer.Argument(help="A bundle .tar.gz or directory; default: the peer's.")
    ] = None,
    peer: Annotated[
        str | None,
        typer.Option(help="The peer (intel.peers) it comes from: its key verifies it."),
    ] = None,
    public_key: Annotated[
        Path | None, typer.Option(help="Verify with this Ed25519 public key (PEM) instead.")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Vendor it as policies/vendor/NAME (default: the peer).")
    ] = None,
    policy_dir: Annotated[
        Path | None, typer.Option(help="The policy repository [TOLLGATE_POLICY_DIR].")
    ] = None,
) -> None:
    """Verify a signed OPA bundle (from a peer, a file or a directory) against a key
    held here and write it to `<policy dir>/vendor/NAME/`, with the key under
    `vendor/keys/`: a change to review and commit like any policy."""
    settings = cli_settings()
    root = policy_dir or settings.policy_dir
    try:
        config = load_intel(settings.config)
        found = config.peer(peer) if peer else None
        if peer and found is None:
            raise fail(f"no peer {peer!r} under intel.peers in {settings.config}")
        if public_key is not None:
            public = load_public_key(public_key)
        elif found is not None:
            public = found.public
        else:
            raise fail("say whose key verifies it: --peer NAME or --public-key FILE")
        if source is not None:
            bundle = read_bundle(source)
        elif found is not None:
            bundle = read_bundle(_fetch_from(found))
        else:
            raise fail("give a bundle file or directory, or --peer to fetch the peer's")
        label = name or peer or str(bundle.manifest.get("metadata", {}).get("lab") or "")
        local = load_bundle(root)
        own = [
            read_module(path, text).package
            for path, text in local.modules.items()
            if not path.startswith(f"{VENDOR}/{label}/")
        ]
        target = vendor(bundle, root, label, public, own)
    except TollgateError as exc:
        raise fail(exc.message) from None
    manifest = bundle.manifest
    out.print(
        f"vendored {', '.join(r or '(everything)' for r in bundle.roots)} "
        f"(revision {str(manifest.get('revision', ''))[:12]}) into {target}; review and "
        "commit it, then run `tollgate policy check`"
    )


def _fetch_from(peer: Peer) -> bytes:
    """The peer's shared bundle (`GET /v1/intel/bundle` beside its TAXII root)."""
    base = peer.url.split("/taxii2/", 1)[0]
    try:
        response = httpx.get(
            f"{base}/v1/intel/bundle/",
            headers={"Authorization": f"Bearer {peer.token}"},
            timeout=httpx.Timeout(30, connect=5),
        )
    except httpx.HTTPError as exc:
        raise fail(f"{peer.name} at {base}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        try:
            message = response.json().get("message", "")
        except ValueError:
            message = response.text[:200]
        raise fail(f"{peer.name} answered {response.status_code}: {message}")
    return response.content
