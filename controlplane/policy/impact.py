"""Impact analysis: what a policy change would have done to real past traffic.

Every stored decision in the window is replayed with the input it had when it
was decided (history and context included), against a base and a head
revision; the action sets are compared. When the base is the revision that
made the stored decision, its stored result is used as is: evaluation is
deterministic, so re-running it would only cost time.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import AsyncGenerator, Callable, Container, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from controlplane.domain.action import MalformedDecision, parse_decision
from controlplane.engine.base import PolicyEngine
from controlplane.engine.bundle import short_revision
from controlplane.evaluate import repository
from controlplane.store.types import utcnow

CHUNK = 2000
SAMPLE = 20
ENFORCING = ("suspend", "revoke_key", "block", "rate_limit")

ActionKey = tuple[str, str, str, str, str]
"""(type, target kind, target value, rule, params JSON)."""


@dataclass
class ImpactReport:
    base: str
    head: str
    since: datetime | None
    replayed: int = 0
    changed: int = 0
    errors: dict[str, int] = field(default_factory=lambda: {"base": 0, "head": 0})
    by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    """Action type -> {"added": n, "removed": n}."""
    by_rule: dict[str, dict[str, int]] = field(default_factory=dict)
    newly: dict[str, list[str]] = field(default_factory=dict)
    """Enforcing action type -> subjects (kind:value) only the head enforces."""
    released: list[str] = field(default_factory=list)
    """Subjects the base enforced against and the head no longer does."""
    sample: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.replayed / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "head": self.head,
            "since": self.since.isoformat() if self.since else None,
            "replayed": self.replayed,
            "changed": self.changed,
            "errors": self.errors,
            "by_action_type": self.by_type,
            "by_rule": self.by_rule,
            "newly": self.newly,
            "released": self.released,
            "sample": self.sample,
            "seconds": round(self.seconds, 3),
            "verdicts_per_second": round(self.rate, 1),
        }


NO_ACTIONS: frozenset[ActionKey] = frozenset()


SHADOW_MARK = " (shadow)"
"""Appended to the rule of an action a shadow-mode rule asked for: recorded, not enforced,
so moving a rule in or out of shadow mode is a change and never counts as enforcement."""


def action_keys(result: Any, shadow_rules: Container[str] = ()) -> frozenset[ActionKey] | None:
    """The actions of a decision result, or None when the result breaks the contract."""
    if isinstance(result, dict) and result.get("actions") == [] and result.get("shadow") is False:
        return NO_ACTIONS  # most verdicts: nothing to parse
    try:
        decided = parse_decision(result)
    except MalformedDecision:
        return None
    return frozenset(
        (
            a.type.value,
            a.target_kind.value,
            a.target_value,
            a.rule + SHADOW_MARK if decided.shadow or a.rule in shadow_rules else a.rule,
            json.dumps(a.params, sort_keys=True),
        )
        for a in decided.actions
    )


async def replay(
    session: AsyncSession,
    base: PolicyEngine,
    head: PolicyEngine,
    since: timedelta | None,
    progress: Callable[[int], None] | None = None,
) -> ImpactReport:
    """Replay the stored decisions of the window against `base` and `head`, read in
    `session` (a read session of the request or the command; nothing else uses it
    meanwhile, as the next chunk is read while the current one is evaluated)."""
    start_at = utcnow() - since if since else None
    report = ImpactReport(base=base.revision, head=head.revision, since=start_at)
    added: Counter[tuple[str, str]] = Counter()
    removed: Counter[tuple[str, str]] = Counter()
    base_subjects: dict[str, set[str]] = defaultdict(set)
    head_subjects: dict[str, set[str]] = defaultdict(set)
    started = time.perf_counter()
    chunks = _prefetched(repository.decisions_since(session, start_at, CHUNK))
    async with aclosing(chunks):  # stopped by an error, it leaves nothing reading
        async for rows in chunks:
            inputs = [row[2] for row in rows]
            head_runs = await head.evaluate_many(inputs)
            reuse = [row[1] == base.revision and row[3] == "ok" for row in rows]
            base_runs = await base.evaluate_many(
                [given for given, stored in zip(inputs, reuse, strict=True) if not stored]
            )
            base_iter = iter(base_runs)
            for row, stored, head_run in zip(rows, reuse, head_runs, strict=True):
                before = (
                    action_keys(row[4], base.bundle.shadow)
                    if stored
                    else _keys(next(base_iter), report, "base", base.bundle.shadow)
                )
                after = _keys(head_run, report, "head", head.bundle.shadow)
                report.replayed += 1
                for keys, subjects in ((before, base_subjects), (after, head_subjects)):
                    for kind, tkind, value, rule, _ in keys or ():
                        if kind in ENFORCING and not rule.endswith(SHADOW_MARK):
                            subjects[kind].add(f"{tkind}:{value}")
                if before == after:
                    continue
                report.changed += 1
                plus, minus = (
                    (after or frozenset()) - (before or frozenset()),
                    (before or frozenset()) - (after or frozenset()),
                )
                for kind, _, _, rule, _ in plus:
                    added[(kind, rule)] += 1
                for kind, _, _, rule, _ in minus:
                    removed[(kind, rule)] += 1
                if len(report.sample) < SAMPLE:
                    report.sample.append(
                        {
                            "verdict_id": row[0],
                            "before": _describe(before),
                            "after": _describe(after),
                        }
                    )
            if progress:
                progress(report.replayed)
    report.seconds = time.perf_counter() - started
    _summarise(report, added, removed, base_subjects, head_subjects)
    return report


def _keys(
    evaluation: Any, report: ImpactReport, side: str, shadow_rules: Container[str]
) -> frozenset[ActionKey] | None:
    if not evaluation.ok:
        report.errors[side] += 1
        return None
    keys = action_keys(evaluation.result, shadow_rules)
    if keys is None:
        report.errors[side] += 1
    return keys


def _describe(keys: frozenset[ActionKey] | None) -> list[str]:
    if keys is None:
        return ["error"]
    return sorted(f"{kind} {tkind}:{value} ({rule})" for kind, tkind, value, rule, _ in keys)


def _summarise(
    report: ImpactReport,
    added: Counter[tuple[str, str]],
    removed: Counter[tuple[str, str]],
    base_subjects: dict[str, set[str]],
    head_subjects: dict[str, set[str]],
) -> None:
    for (kind, rule), n in added.items():
        report.by_type.setdefault(kind, {"added": 0, "removed": 0})["added"] += n
        report.by_rule.setdefault(rule, {"added": 0, "removed": 0})["added"] += n
    for (kind, rule), n in removed.items():
        report.by_type.setdefault(kind, {"added": 0, "removed": 0})["removed"] += n
        report.by_rule.setdefault(rule, {"added": 0, "removed": 0})["removed"] += n
    for kind in ENFORCING:
        report.newly[kind] = sorted(head_subjects[kind] - base_subjects[kind])
    enforced_before = set().union(*base_subjects.values()) if base_subjects else set()
    enforced_after = set().union(*head_subjects.values()) if head_subjects else set()
    report.released = sorted(enforced_before - enforced_after)


async def _prefetched(
    chunks: AsyncGenerator[list[tuple[Any, ...]], None],
) -> AsyncGenerator[list[tuple[Any, ...]], None]:
    """Read the next chunk from the database while the current one is evaluated. When
    the reader stops early, the read is stopped and closed before this returns: the
    session it reads in is the caller's, and goes on after the replay. A read in flight
    is let finish, never cancelled: cancelling a fetch half-way breaks the connection
    under the session (SQLAlchemy invalidates it), and the caller's next statement
    would fail."""
    queue: asyncio.Queue[list[tuple[Any, ...]] | None] = asyncio.Queue(maxsize=2)
    stopping = False

    async def produce() -> None:
        try:
            async for chunk in chunks:
                if stopping:
                    return
                await queue.put(chunk)
                if stopping:
                    return
        except Exception:
            await queue.put(None)  # wake the reader, which then sees this error
            raise
        await queue.put(None)

    producer = asyncio.create_task(produce())
    try:
        while (chunk := await queue.get()) is not None:
            yield chunk
        await producer  # re-raises a failed read
    finally:
        stopping = True
        while not producer.done():
            while not queue.empty():  # a put waiting for room returns, and stops
                queue.get_nowait()
            await asyncio.wait([producer], timeout=0.01)
        if not producer.cancelled():
            producer.exception()  # the reader's own error is what the caller sees
        await chunks.aclose()


def markdown(report: ImpactReport) -> str:
    """The report as a pull-request comment."""
    lines = [
        f"### Tollgate policy impact: `{short_revision(report.base)}` → "
        f"`{short_revision(report.head)}`",
        "",
        f"Replayed **{report.replayed:,}** stored verdicts"
        + (f" decided since {report.since:%Y-%m-%d %H:%M} UTC" if report.since else "")
        + f", each with the history and context it had, in {report.seconds:.1f} s "
        f"({report.rate:,.0f} verdicts/s).",
        "",
    ]
    share = 100 * report.changed / report.replayed if report.replayed else 0.0
    lines.append(f"**{report.changed:,} decisions change** ({share:.2f}%).")
    if any(report.errors.values()):
        lines.append(
            f"Evaluation errors: base {report.errors['base']}, head {report.errors['head']}."
        )
    lines.append("")
    for title, table in (("action type", report.by_type), ("rule", report.by_rule)):
        if table:
            lines += [f"| {title} | added | removed |", "|---|---:|---:|"]
            lines += [
                f"| `{k}` | {v['added']:,} | {v['removed']:,} |" for k, v in sorted(table.items())
            ]
            lines.append("")
    for kind, label in (
        ("suspend", "Newly suspended"),
        ("revoke_key", "Newly revoked"),
        ("block", "Newly blocked"),
        ("rate_limit", "Newly rate-limited"),
    ):
        lines.append(f"- **{label}**: {_subjects(report.newly.get(kind, []))}")
    lines.append(f"- **Newly released**: {_subjects(report.released)}")
    if report.sample:
        lines += [
            "",
            "<details><summary>Changed decisions (sample)</summary>",
            "",
            "| verdict | before | after |",
            "|---|---|---|",
        ]
        lines += [
            f"| `{s['verdict_id']}` | {'<br>'.join(s['before']) or '—'} | "
            f"{'<br>'.join(s['after']) or '—'} |"
            for s in report.sample
        ]
        lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


def _subjects(subjects: Iterable[str], limit: int = 15) -> str:
    items = list(subjects)
    if not items:
        return "none"
    shown = ", ".join(f"`{s}`" for s in items[:limit])
    return shown + (f" and {len(items) - limit:,} more" if len(items) > limit else "")
