"""`tollgate policy check|test`: the gate a revision passes before it may be activated."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar
from xml.etree import ElementTree

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from controlplane.cli.client import api_client, cli_settings, fail, local_database, request
from controlplane.domain.action import parse_duration
from controlplane.engine.bundle import PolicyBundle, load_bundle
from controlplane.engine.embedded import EmbeddedEngine
from controlplane.errors import PolicyError, TollgateError
from controlplane.evaluate.repository import count_decisions
from controlplane.policy.checks import check_dir
from controlplane.policy.impact import ImpactReport, markdown, replay
from controlplane.policy.service import PolicyService
from controlplane.policy.source import WORKTREE, source_at, source_from
from controlplane.policy.testing import TestOutcome, TestReport, run_tests
from controlplane.settings import Settings, get_settings, load_providers
from controlplane.store.db import Database, upgrade

policy_app = typer.Typer(
    help="Policies: check, test, sync and roll back revisions.", no_args_is_help=True
)
out = Console()
T = TypeVar("T")

DirArgument = Annotated[
    Path | None, typer.Argument(help="Policy directory [TOLLGATE_POLICY_DIR].", show_default=False)
]


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"
    JUNIT = "junit"
    GITHUB = "github"


@policy_app.command("check")
def check(
    directory: DirArgument = None,
    entrypoint: Annotated[str | None, typer.Option(help="[TOLLGATE_ENTRYPOINT]")] = None,
) -> None:
    """Compile every module with the real engine, probe the entrypoint, require
    METADATA on rules that can emit actions, refuse network builtins."""
    settings = cli_settings()
    root = directory or settings.policy_dir
    try:
        problems = check_dir(root, entrypoint or settings.entrypoint)
    except TollgateError as exc:
        raise fail(exc.message) from None
    for problem in problems:
        location = f"{problem.file}:{problem.line}" if problem.line else problem.file
        out.print(f"[bold red]{location}[/]: {problem.message}", highlight=False)
        if problem.hint:
            out.print(f"  [dim]hint: {problem.hint}[/]", highlight=False)
    if problems:
        out.print(f"{len(problems)} problem(s) in {root}")
        raise typer.Exit(code=1)
    out.print(f"{root}: ok")


@policy_app.command("test")
def test(
    directory: DirArgument = None,
    coverage: Annotated[bool, typer.Option(help="Report line coverage per file.")] = False,
    fail_under: Annotated[
        float | None, typer.Option(help="Fail when total coverage is below PCT.", metavar="PCT")
    ] = None,
    output: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.TEXT,
    entrypoint: Annotated[str | None, typer.Option(help="[TOLLGATE_ENTRYPOINT]")] = None,
) -> None:
    """Run every `test_*` rule with `opa test` semantics: true passes; false,
    undefined or an error fails, naming the expression that failed. Every decision a
    test makes the entrypoint produce must also meet the output contract."""
    settings = cli_settings()
    root = directory or settings.policy_dir
    try:
        bundle = load_bundle(root)
        # Every decision a test makes the entrypoint produce must meet the output
        # contract, with blocks no wider than the loosest configured `min_prefix`.
        floor = load_providers(settings.config).loosest_floor()
        report = run_tests(
            bundle,
            coverage=coverage or fail_under is not None,
            entrypoint=entrypoint or settings.entrypoint,
            floor=floor,
        )
    except TollgateError as exc:
        raise fail(exc.message, "run `tollgate policy check` for the details") from None
    under = fail_under is not None and report.coverage_percent < fail_under
    if under and output in (Format.TEXT, Format.GITHUB):
        # Before the report: its last line stays `N passed, M failed`.
        message = f"coverage {report.coverage_percent:.1f}% is under {fail_under}%"
        print(f"::error::{message}" if output is Format.GITHUB else message)
    {
        Format.TEXT: _text,
        Format.JSON: _json,
        Format.JUNIT: _junit,
        Format.GITHUB: _github,
    }[output](report)
    if report.failed or under or not report.outcomes:
        raise typer.Exit(code=1)


def _text(report: TestReport) -> None:
    table = Table(title="Policy tests")
    for column in ("result", "package", "test", "where", "ms", "why"):
        table.add_column(column, overflow="fold")
    for o in report.outcomes:
        mark = "[green]PASS[/]" if o.passed else "[bold red]FAIL[/]"
        table.add_row(
            mark, o.package, o.name, f"{o.file}:{o.line}", f"{o.duration_ms:.1f}", o.message
        )
    out.print(table)
    if report.coverage:
        cov = Table(title="Coverage")
        for column in ("file", "covered", "not covered", "%"):
            cov.add_column(column)
        for file, entry in report.coverage.items():
            missing = _ranges(entry["not_covered"])
            cov.add_row(file, str(len(entry["covered"])), missing or "-", f"{entry['percent']:.1f}")
        out.print(cov)
        out.print(f"total coverage: {report.coverage_percent:.1f}%")
    if not report.outcomes:
        out.print("[bold red]no test_* rules found[/]")
    print(f"{report.passed} passed, {report.failed} failed")


def _json(report: TestReport) -> None:
    print(
        json.dumps(
            {
                "passed": report.passed,
                "failed": report.failed,
                "tests": [o.__dict__ for o in report.outcomes],
                "coverage": {"percent": report.coverage_percent, "files": report.coverage}
                if report.coverage
                else None,
            },
            indent=2,
        )
    )


def _junit(report: TestReport) -> None:
    suite = ElementTree.Element(
        "testsuite",
        name="tollgate-policies",
        tests=str(len(report.outcomes)),
        failures=str(report.failed),
        errors="0",
        time=f"{sum(o.duration_ms for o in report.outcomes) / 1000:.3f}",
    )
    for o in report.outcomes:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=o.package,
            name=o.name,
            file=o.file,
            line=str(o.line),
            time=f"{o.duration_ms / 1000:.4f}",
        )
        if not o.passed:
            ElementTree.SubElement(case, "failure", message=o.message).text = o.message
    ElementTree.indent(suite)
    print(ElementTree.tostring(suite, encoding="unicode", xml_declaration=True))


def _github(report: TestReport) -> None:
    failed: list[TestOutcome] = [o for o in report.outcomes if not o.passed]
    for o in failed:
        file = o.failed_at.rpartition(":")[0] or o.file
        title = _prop(f"{o.package}.{o.name}")
        where = f"file={_prop(file)},line={o.failed_line},title={title}"
        print(f"::error {where}::{_data(o.message)}")
    for file, entry in report.coverage.items():
        if entry["not_covered"]:
            print(
                f"::notice file={_prop(file)}::lines not covered: {_ranges(entry['not_covered'])}"
            )
    print(f"{report.passed} passed, {report.failed} failed")


def _data(text: str) -> str:
    """A workflow command's message: one line, escaped as GitHub's runner expects."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _prop(text: str) -> str:
    return _data(text).replace(":", "%3A").replace(",", "%2C")


def _ranges(lines: list[int]) -> str:
    spans: list[str] = []
    for line in lines:
        if spans and spans[-1].split("-")[-1] == str(line - 1):
            spans[-1] = f"{spans[-1].split('-')[0]}-{line}"
        else:
            spans.append(str(line))
    return ", ".join(spans)


async def _with_service(
    work: Callable[[PolicyService], Awaitable[T]], *, may_create: bool = False
) -> T:
    settings = get_settings()
    db = Database(local_database("policy sync/rollback", may_create=may_create))
    try:
        await asyncio.to_thread(upgrade, db.url)
        return await work(PolicyService(db, source_from(settings), settings.entrypoint))
    finally:
        await db.dispose()


@policy_app.command("sync")
def sync(
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "manual sync",
    actor: Annotated[str, typer.Option(help="Who, for the record.")] = "cli",
) -> None:
    """Fetch the policy source; check, test and activate its revision if it is new.
    Running servers switch to it within seconds. With TOLLGATE_URL set, the server syncs
    from its own policy source (and records the token's name, not --actor)."""
    settings = cli_settings()
    if settings.url:
        with api_client(settings.api_url, settings.token, timeout=600) as client:
            answer = request(client, "POST", "/v1/policies/sync", json={"reason": reason})
        revision, outcome = str(answer["revision"]), str(answer["outcome"])
        problems, tests = list(answer["problems"]), dict(answer["tests"])
    else:
        try:
            result = asyncio.run(_with_service(lambda s: s.sync(actor, reason), may_create=True))
        except TollgateError as exc:
            raise fail(exc.message) from None
        revision, outcome, problems, tests = (
            result.revision,
            result.outcome,
            result.problems,
            result.tests,
        )
    if outcome == "rejected":
        out.print(f"[bold red]revision {revision} rejected[/]: it can never be activated")
        for problem in problems:
            out.print(f"  {problem}", highlight=False)
        raise typer.Exit(code=1)
    out.print(f"revision [bold]{revision}[/]: {outcome} ({tests.get('passed', 0)} tests passed)")


@policy_app.command("rollback")
def rollback(
    revision: Annotated[
        str | None,
        typer.Argument(
            help="Revision (or a unique prefix) to reactivate; default: the one before."
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "manual rollback",
    actor: Annotated[str, typer.Option(help="Who, for the record.")] = "cli",
) -> None:
    """Reactivate an earlier revision that passed its gate. Running servers switch to it
    within seconds; the next sync activates only a newer commit. With TOLLGATE_URL set,
    the server does it (and records the token's name, not --actor)."""
    settings = cli_settings()
    if settings.url:
        body = {"revision": revision, "reason": reason}
        with api_client(settings.api_url, settings.token) as client:
            done = str(request(client, "POST", "/v1/policies/rollback", json=body)["revision"])
    else:
        try:
            done = asyncio.run(_with_service(lambda s: s.rollback(revision, actor, reason)))
        except TollgateError as exc:
            raise fail(
                exc.message, "list revisions with `curl $TOLLGATE_URL/v1/policies`"
            ) from None
    out.print(f"revision [bold]{done}[/] is active again")


class ImpactFormat(StrEnum):
    MARKDOWN = "markdown"
    JSON = "json"


async def _bundle(service: PolicyService, revision: str) -> PolicyBundle:
    recorded = await service.recorded(revision)
    if recorded is not None:
        return recorded
    return await asyncio.to_thread(source_at(get_settings(), revision).fetch)


async def _impact(base: str | None, head: str, since: timedelta | None) -> ImpactReport:
    settings = get_settings()
    db = Database(local_database("policy impact"))
    try:
        await asyncio.to_thread(upgrade, db.url)
        service = PolicyService(db, source_from(settings), settings.entrypoint)
        if base is None:
            active = await service.active()
            if active is None:
                raise PolicyError("no revision is active yet: pass --base")
            base_bundle = active
        else:
            base_bundle = await _bundle(service, base)
        head_bundle = await _bundle(service, head)
        engines = [
            await asyncio.to_thread(EmbeddedEngine, b, settings.entrypoint, settings.engine_workers)
            for b in (base_bundle, head_bundle)
        ]
        try:
            # The command is the replay's boundary: one read session counts and streams.
            async with db.read() as session:
                total = await count_decisions(session, since)
                with Progress(
                    TextColumn("replaying"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeRemainingColumn(),
                    console=Console(stderr=True),
                    transient=True,
                ) as progress:
                    task = progress.add_task("", total=total)
                    return await replay(
                        session,
                        engines[0],
                        engines[1],
                        since,
                        lambda n: progress.update(task, completed=n),
                    )
        finally:
            for engine in engines:
                engine.close()
    finally:
        await db.dispose()


@policy_app.command("impact")
def impact(
    base: Annotated[
        str | None,
        typer.Option(
            help="Revision to compare from (recorded id or prefix, git commit/branch/tag, "
            "or `worktree`); default: the active one."
        ),
    ] = None,
    head: Annotated[str, typer.Option(help="Revision to compare to.")] = WORKTREE,
    since: Annotated[
        str | None,
        typer.Option(help="Only verdicts decided in this window, e.g. 7d, 24h; default: all."),
    ] = None,
    output: Annotated[
        ImpactFormat, typer.Option("--format", help="markdown (for a pull request) or json.")
    ] = ImpactFormat.MARKDOWN,
) -> None:
    """Replay stored verdicts, each with the history and context it had, against two
    revisions, and report what would change. With TOLLGATE_URL set, the server replays
    its own traffic: the head is uploaded from the policy directory (or named, when it
    is a revision the server recorded) and nothing touches a local database."""
    try:
        window = parse_duration(since) if since else None
    except ValueError as exc:
        raise fail(f"--since: {exc}") from None
    settings = cli_settings()
    if settings.url:
        _remote_impact(settings, base, head, since, output)
        return
    try:
        report = asyncio.run(_impact(base, head, window))
    except TollgateError as exc:
        raise fail(exc.message) from None
    if output is ImpactFormat.JSON:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(markdown(report), end="")


def _remote_impact(
    settings: Settings, base: str | None, head: str, since: str | None, output: ImpactFormat
) -> None:
    body: dict[str, Any] = {"base": base, "since": since}
    if head == WORKTREE:
        try:
            bundle = load_bundle(settings.policy_dir)
        except TollgateError as exc:
            raise fail(exc.message) from None
        body["head_modules"] = bundle.modules
        body["head_data"] = [list(item) for item in bundle.data]
    else:
        body["head"] = head
    with api_client(settings.api_url, settings.token, timeout=600) as client:
        answer = request(client, "POST", "/v1/policies/impact", json=body)
    if output is ImpactFormat.JSON:
        print(json.dumps({k: v for k, v in answer.items() if k != "markdown"}, indent=2))
    else:
        print(answer["markdown"], end="")
