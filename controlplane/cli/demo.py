"""`tollgate demo`: an embedded server, a bundled day of traffic, and what was decided.

The scenario mixes legitimate heavy users (who must never be touched) with
distillation operations; each verdict says which action types the bundled
policies should decide, so the demo checks itself and exits non-zero on a miss.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from controlplane.api.app import create_app
from controlplane.auth.roles import Role
from controlplane.auth.service import TokenService
from controlplane.cli.client import request
from controlplane.settings import get_settings
from controlplane.store.db import Database, upgrade

SCENARIO = Path(__file__).resolve().parent.parent / "demo" / "scenario.json"
out = Console()


def run_demo(*, keep_serving: bool, port: int) -> int:
    scenario = json.loads(SCENARIO.read_text(encoding="utf-8"))
    settings = get_settings()
    data_dir = settings.data_dir / "demo"
    shutil.rmtree(data_dir, ignore_errors=True)
    settings = replace(settings, data_dir=data_dir, database_url="", url="")
    port = port or _free_port()
    base = f"http://127.0.0.1:{port}"

    out.rule("[bold]Tollgate demo")
    out.print(scenario["description"], style="dim")
    out.print(
        f"policies: [bold]{settings.policy_dir}[/]  database: [bold]{data_dir}/tollgate.db[/]"
    )
    token = asyncio.run(_demo_token(settings.resolved_database_url))
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="tollgate-demo-server", daemon=True)
    thread.start()
    try:
        with httpx.Client(
            base_url=base, timeout=60, headers={"Authorization": f"Bearer {token}"}
        ) as client:
            ready = _wait_ready(client, server)
            out.print(
                f"server ready at [bold]{base}[/], policy revision "
                f"[bold]{ready['checks']['policy']['revision'][:16]}[/]"
            )
            _seed(client, scenario)
            results = _replay(client, scenario["verdicts"])
        misses = _report(scenario, results)
        if keep_serving:
            out.print(
                f"\nServing at [bold]{base}[/] (API docs: {base}/schema/swagger). Ctrl-C stops."
            )
            out.print(f"An admin token for this demo server: [bold]{token}[/]", highlight=False)
            while thread.is_alive():
                thread.join(0.5)
        return 1 if misses else 0
    except KeyboardInterrupt:
        return 0
    finally:
        server.should_exit = True
        thread.join(10)


async def _demo_token(url: str) -> str:
    """An admin token on the fresh demo database (the server checks tokens like any other)."""
    await asyncio.to_thread(upgrade, url)
    db = Database(url)
    try:
        token, _ = await TokenService(db).create("demo", Role.ADMIN, actor="demo")
        return token
    finally:
        await db.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(client: httpx.Client, server: uvicorn.Server) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.should_exit or (server.started is False and not _alive(server)):
            break
        try:
            response = client.get("/readyz")
            if response.status_code == 200:
                return response.json()  # type: ignore[no-any-return]
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the demo server did not become ready: see the errors above")


def _alive(server: uvicorn.Server) -> bool:
    return not server.should_exit


def _seed(client: httpx.Client, scenario: dict[str, Any]) -> None:
    for exemption in scenario["exemptions"]:
        request(client, "POST", "/v1/exemptions", json=exemption)
    request(client, "POST", "/v1/intel/indicators", json={"indicators": scenario["indicators"]})
    out.print(
        f"seeded {len(scenario['exemptions'])} exemption(s) and "
        f"{len(scenario['indicators'])} shared intel indicator(s)"
    )


def _replay(client: httpx.Client, verdicts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    with Progress(
        TextColumn("replaying verdicts"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=out,
    ) as progress:
        task = progress.add_task("", total=len(verdicts))
        for verdict in verdicts:
            body = {k: v for k, v in verdict.items() if k != "expect"}
            answer = request(client, "POST", "/v1/verdicts", json=body)
            result = answer["results"][0]
            results[verdict["id"]] = result
            kinds = ", ".join(a["type"] for a in result["actions"]) or "no action"
            progress.update(task, advance=1, description=f"{verdict['id']}: {kinds}")
    return results


def _actor_of(actors: list[dict[str, Any]], verdict: dict[str, Any]) -> dict[str, Any]:
    subject = verdict["subject"]
    for actor in actors:
        if (
            (subject.get("account_id") and subject.get("account_id") == actor.get("account_id"))
            or (subject.get("org_id") and subject.get("org_id") == actor.get("org_id"))
            or set(subject.get("ips") or ()) & set(actor.get("ips") or ())
        ):
            return actor
    return {"name": subject.get("account_id") or "unknown", "kind": "?", "description": ""}


def _report(scenario: dict[str, Any], results: dict[str, dict[str, Any]]) -> int:
    by_actor: dict[str, list[dict[str, Any]]] = defaultdict(list)
    actors = {a["name"]: a for a in scenario["actors"]}
    for verdict in scenario["verdicts"]:
        by_actor[_actor_of(scenario["actors"], verdict)["name"]].append(verdict)

    misses = 0
    reasons: dict[str, str] = {}
    table = Table(title="What was decided, per subject", show_lines=True)
    for column in ("subject", "verdict", "score", "decided", "rule"):
        table.add_column(column, overflow="fold")
    for name, verdicts in by_actor.items():
        actor = actors.get(name, {"kind": "?"})
        style = "green" if actor["kind"] == "legitimate" else "red"
        label = f"[{style}]{name}[/]\n[dim]{actor['kind']}[/]"
        for verdict in verdicts:
            result = results[verdict["id"]]
            got = sorted(a["type"] for a in result["actions"])
            ok = got == sorted(verdict.get("expect", got))
            misses += not ok
            decided = (
                "\n".join(
                    f"{a['type']} {a['target']['kind']}:{a['target']['value']}"
                    + (f" ({_ttl(a['ttl_seconds'])})" if a["ttl_seconds"] else "")
                    for a in result["actions"]
                )
                or "[dim]no action[/]"
            )
            if not ok:
                decided += f"\n[bold red]expected {verdict['expect']}[/]"
            for a in result["actions"]:
                reasons.setdefault(a["rule"], a["reason"])
            rules = "\n".join(a["rule"] for a in result["actions"])
            table.add_row(
                label,
                verdict["id"],
                f"{verdict['score']:.2f}",
                decided,
                rules or result.get("error") or "[dim]below the bar[/]",
            )
            label = ""
    out.print(table)
    out.print("\n[bold]Why, in the policies' words[/] (one example per rule):")
    for rule, reason in sorted(reasons.items()):
        out.print(f"  [bold]{rule}[/]: {reason}")

    legit = [n for n, a in actors.items() if a["kind"] == "legitimate"]
    touched = sorted(
        n
        for n in legit
        for v in by_actor.get(n, [])
        for a in results[v["id"]]["actions"]
        if a["type"] != "flag_review"
    )
    distillers = [n for n, a in actors.items() if a["kind"] == "distiller"]
    enforced = [
        n for n in distillers if any(results[v["id"]]["actions"] for v in by_actor.get(n, []))
    ]
    out.print(
        f"\n[bold]{len(results)}[/] verdicts decided. Distillers enforced against: "
        f"[bold]{len(enforced)}/{len(distillers)}[/]. Legitimate heavy users rate-limited, "
        f"revoked or blocked: [bold]{len(set(touched))}/{len(legit)}[/] "
        "(an exempt subject gets flag_review only)."
    )
    if misses:
        out.print(
            f"[bold red]{misses} verdict(s) were decided differently than the scenario "
            "expects: the policies in use are not the bundled ones, or they changed.[/]"
        )
    else:
        out.print("[green]Every decision matches the scenario's expectation.[/]")
    return misses


def _ttl(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
