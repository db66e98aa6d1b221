"""The rules the code keeps (STYLE.md), checked on its syntax trees, as small linters:
a violation fails with the file and line.

- SQL only in repositories (and the store): services and controllers ask them.
- Services never import litestar: HTTP stays in controllers.
- Settings only from `controlplane/settings.py`: nothing else reads `os.environ`.
- Connectors see only the connector SDK (`sdk`, `targets`, `toolkit`), never the domain.
- Stages call forward only: ingest -> evaluate -> plan -> enforce; a stage never imports
  an earlier stage.
- No broad `except` that swallows: a handler of `Exception`/`BaseException` (or a bare
  one) re-raises, logs, or uses the exception it caught.
- Handlers call services: a controller never imports a repository nor opens a
  database session itself (it asks for the request's `session`).
- Transactions open at the boundary: in the areas listed in `UNIT_OF_WORK`, only the
  boundary modules (`BOUNDARIES`: controllers and dependency providers, guards, jobs,
  the runtime, the CLI) open a session or a transaction; services are given a session.
  The few jobs and streams that live beside their rules are named in `JOB_ENTRY_POINTS`.
- Nobody is handed the whole runtime: only the modules that make it and give out its
  parts (`RUNTIME_HOLDERS`: the runtime, the apps, the dependency providers, the CLI)
  import it, and no route handler takes it as a parameter; each is given what it uses.
- One owner per table: only the owning area's repository names a table's row class in
  code (a query, a row it builds); the others ask that repository. Type annotations
  may name any row. Every table of `store/models.py` has an owner here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "controlplane").rglob("*.py"), *(REPO / "connectors").rglob("*.py")])
SQL = {"select", "insert", "update", "delete", "text", "func", "tuple_", "or_", "and_"}
CONNECTOR_SDK = {
    "controlplane.enforce.sdk",
    "controlplane.enforce.targets",
    "controlplane.enforce.toolkit",
}
STAGES = ["ingest", "evaluate", "plan", "enforce"]
MODELS = REPO / "controlplane" / "store" / "models.py"
OWNERS = {
    "VerdictRow": "ingest",
    "DecisionRow": "evaluate",
    "ActionRow": "plan",
    "ActionEnforcementRow": "enforce",
    "ChangeRow": "enforce",
    "ChangeHeadRow": "enforce",
    "ConnectorCursorRow": "enforce",
    "ConnectorStatusRow": "enforce",
    "AuditEventRow": "audit",
    "AuditHeadRow": "audit",
    "AuditCheckpointRow": "audit",
    "AuditSubjectRow": "audit",
    "AuditSubjectHeadRow": "audit",
    "ExemptionRow": "remedy",
    "AppealRow": "remedy",
    "AppealActionRow": "remedy",
    "LiftRow": "remedy",
    "ReviewRow": "remedy",
    "IndicatorRow": "intel",
    "IntelObjectRow": "intel",
    "IntelPeerRow": "intel",
    "IntelStatusRow": "intel",
    "PolicyRevisionRow": "policy",
    "PolicyActivationRow": "policy",
    "PolicySourceRow": "policy",
    "ApiTokenRow": "auth",
    "BouncerCursorRow": "bouncers",
    "CustomerRow": "customers",
    "SightingRow": "customers",
    "SpanRow": "telemetry",
}
"""The area whose repository alone queries each table (its row class)."""
LOGS = {"debug", "info", "warning", "error", "exception", "critical"}
UNIT_OF_WORK = [
    "controlplane/remedy/",
    "controlplane/customers/",
    "controlplane/auth/",
    "controlplane/intel/",
    "controlplane/bouncers/",
    "controlplane/audit/",
    "controlplane/policy/",
    "controlplane/telemetry/",
    "controlplane/ui/",
    "controlplane/api/",
    "controlplane/evaluate/explain.py",
]
"""Where transactions open at the request or job boundary only."""
BOUNDARIES = {
    "controlplane/api/dependencies.py",
    "controlplane/auth/guards.py",
    "controlplane/runtime.py",
    "controlplane/ui/sessions.py",
}
"""Boundary modules besides controllers, `jobs.py` modules and the CLI: the request's
session providers, the guards (they run before the handler), the runtime's jobs."""
JOB_ENTRY_POINTS: dict[str, set[str]] = {
    "controlplane/audit/service.py": {"export"},
    "controlplane/audit/verify.py": {"verify_database"},
    "controlplane/audit/checkpoints.py": {"write_checkpoint"},
    "controlplane/audit/subjects.py": {"catch_up_blocking", "rebuild_blocking"},
    "controlplane/bouncers/service.py": {"answer"},
    "controlplane/policy/service.py": {"PolicyService"},
    "controlplane/telemetry/spanstore.py": {"_Sink.write"},
}
"""Functions (or classes) of service modules that are jobs or streams, by module: each
opens the transactions it needs itself, and says why in its docstring. A streamed
answer outlives the request's session; a job works for a while between transactions,
or chunk by chunk; the span exporter's thread has an engine of its own. The audit
jobs and the policy sync stay beside their rules as the CLI's local paths import them
from there."""
RUNTIME_HOLDERS = {
    "controlplane/runtime.py",
    "controlplane/api/app.py",
    "controlplane/api/worker.py",
    "controlplane/api/dependencies.py",
}
"""Modules besides the CLI's that may import the runtime: it, the API's and the connector
worker's apps (which make it and run its start and stop), and the providers that give
each handler its part of it."""
ROUTE_DECORATORS = {"get", "post", "put", "patch", "delete", "head", "route", "websocket"}
RUNTIMES = {"Runtime", "WorkerRuntime"}
DATABASE_NAMES = {"db", "_db"}
OPENERS = {"read", "write", "transaction", "read_blocking", "write_blocking"}
BEGINS = {"begin", "begin_nested"}


def relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def trees() -> Iterator[tuple[str, ast.Module]]:
    for path in SOURCES:
        if "/migrations/" not in relative(path):
            yield relative(path), ast.parse(path.read_text(encoding="utf-8"), str(path))


def imports(tree: ast.Module) -> Iterator[tuple[int, str, list[str]]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.lineno, node.module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def is_repository(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return "repository" in name or path.startswith("controlplane/store/")


def is_controller(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name == "controllers.py" or name.endswith("_controllers.py")


def is_boundary(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return (
        is_controller(path)
        or name == "jobs.py"
        or path.startswith("controlplane/cli/")
        or path in BOUNDARIES
    )


def is_service(path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return name == "service.py" or name.endswith("_service.py")


def stage_of(path: str) -> int | None:
    parts = path.split("/")
    return STAGES.index(parts[1]) if len(parts) > 2 and parts[1] in STAGES else None


def area_of(path: str) -> str | None:
    parts = path.split("/")
    return parts[1] if parts[0] == "controlplane" and len(parts) > 2 else None


def tables(models: ast.Module) -> list[str]:
    """The row classes of the models module: classes declared with `table=True`."""
    return [
        node.name
        for node in models.body
        if isinstance(node, ast.ClassDef)
        and any(
            k.arg == "table" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in node.keywords
        )
    ]


def annotations(tree: ast.Module) -> set[int]:
    """The ids of every node inside a type annotation (naming a row there is no query)."""
    roots: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            every = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            every += [a for a in (node.args.vararg, node.args.kwarg) if a is not None]
            roots += [a.annotation for a in every if a.annotation is not None]
            if node.returns is not None:
                roots.append(node.returns)
        elif isinstance(node, ast.AnnAssign):
            roots.append(node.annotation)
    return {id(n) for root in roots for n in ast.walk(root)}


def foreign_rows(path: str, tree: ast.Module) -> list[str]:
    """Where a repository module names, outside annotations, the row class of a table
    another area owns: `file:line: RowClass (owner)`."""
    area = area_of(path)
    if not is_repository(path) or area is None or area == "store":
        return []
    aliases = {
        (alias.asname or alias.name): alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
        if alias.name in OWNERS
    }
    skip = annotations(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Name):
            name = aliases.get(node.id)
        elif isinstance(node, ast.Attribute) and node.attr in OWNERS:
            name = node.attr
        else:
            continue
        if name is not None and OWNERS[name] != area:
            found.append((node.lineno, f"{path}:{node.lineno}: {name} (owned by {OWNERS[name]})"))
    return [text for _, text in sorted(found)]


def violations() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {
        "SQL outside a repository": [],
        "litestar imported by a service": [],
        "os.environ read outside settings": [],
        "a connector imports beyond the SDK": [],
        "a stage imports an earlier stage": [],
        "a broad except swallows": [],
        "a repository queries a table another area owns": [],
        "a handler calls a repository or opens a session": [],
        "a service opens a transaction": [],
        "a service or handler is handed the runtime": [],
    }
    for path, tree in trees():
        found["a repository queries a table another area owns"] += foreign_rows(path, tree)
        found["a service opens a transaction"] += transactions_opened(path, tree)
        found["a service or handler is handed the runtime"] += runtime_reached(path, tree)
        stage = stage_of(path)
        for line, module, names in imports(tree):
            if module.startswith("sqlalchemy") and SQL & set(names) and not is_repository(path):
                found["SQL outside a repository"].append(
                    f"{path}:{line}: {sorted(SQL & set(names))}"
                )
            touched = [module, *(f"{module}.{n}" for n in names)]
            if is_controller(path) and any("repository" in m.rsplit(".", 1)[-1] for m in touched):
                found["a handler calls a repository or opens a session"].append(
                    f"{path}:{line}: {module}"
                )
            if module.split(".")[0] == "litestar" and is_service(path):
                found["litestar imported by a service"].append(f"{path}:{line}")
            outside = module.startswith("controlplane") and module not in CONNECTOR_SDK
            if path.startswith("connectors/") and outside:
                found["a connector imports beyond the SDK"].append(f"{path}:{line}: {module}")
            target = module.split(".")
            earlier = len(target) > 1 and target[0] == "controlplane" and target[1] in STAGES
            if stage is not None and earlier and STAGES.index(target[1]) < stage:
                found["a stage imports an earlier stage"].append(f"{path}:{line}: {module}")
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "environ"
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
                and path != "controlplane/settings.py"
            ):
                found["os.environ read outside settings"].append(f"{path}:{node.lineno}")
            if is_controller(path) and opens_session(node):
                found["a handler calls a repository or opens a session"].append(
                    f"{path}:{node.lineno}"
                )
            if isinstance(node, ast.ExceptHandler) and swallows(node):
                found["a broad except swallows"].append(f"{path}:{node.lineno}")
    return found


def opens_session(node: ast.AST) -> bool:
    """`<...>.db.read()` / `.db.write()`: a session opened where it is called."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"read", "write"}
        and isinstance(node.func.value, ast.Attribute | ast.Name)
        and (getattr(node.func.value, "attr", None) or getattr(node.func.value, "id", "")) == "db"
    )


def opens_transaction(node: ast.AST) -> bool:
    """`<...>.db.read()`, `db.transaction()`, `self._db.write()` (a session of the
    Database), or `<...>.begin()` (a transaction of a session or an engine)."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
        return False
    if node.func.attr in BEGINS:
        return True
    receiver = node.func.value
    name = getattr(receiver, "attr", None) or getattr(receiver, "id", None)
    return node.func.attr in OPENERS and name in DATABASE_NAMES


def transactions_opened(path: str, tree: ast.Module) -> list[str]:
    """Where a module of the `UNIT_OF_WORK` areas that is no boundary opens a session or
    a transaction, outside its `JOB_ENTRY_POINTS` (`file:line: function`)."""
    if not any(path.startswith(area) for area in UNIT_OF_WORK) or is_boundary(path):
        return []
    allowed = JOB_ENTRY_POINTS.get(path, set())
    found: list[str] = []

    def visit(node: ast.AST, scope: list[str]) -> None:
        for child in ast.iter_child_nodes(node):
            inner = scope
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                inner = [*scope, child.name]
            within = {".".join(inner[:i]) for i in range(1, len(inner) + 1)}
            if isinstance(child, ast.Call) and opens_transaction(child) and not within & allowed:
                found.append(f"{path}:{child.lineno}: {'.'.join(inner) or '<module>'}")
            visit(child, inner)

    visit(tree, [])
    return found


def is_route_handler(node: ast.AST) -> bool:
    """A function litestar routes to: decorated with `get`, `post`, ... (called or not)."""
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = getattr(target, "attr", None) or getattr(target, "id", None)
        if name in ROUTE_DECORATORS:
            return True
    return False


def names_runtime(annotation: ast.expr | None) -> bool:
    """An annotation that names `Runtime` or `WorkerRuntime` anywhere (`NamedDependency[
    Runtime]`, a quoted one too)."""
    if annotation is None:
        return False
    for node in ast.walk(annotation):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            try:
                if names_runtime(ast.parse(node.value, mode="eval").body):
                    return True
            except SyntaxError:
                continue
        elif (getattr(node, "id", None) or getattr(node, "attr", None)) in RUNTIMES:
            return True
    return False


def runtime_reached(path: str, tree: ast.Module) -> list[str]:
    """Where a module that is not one of `RUNTIME_HOLDERS` nor the CLI imports the runtime
    (`file:line: controlplane.runtime`), and where a route handler anywhere takes it
    (`file:line: handler(parameter)`): a parameter named `runtime`, or annotated with it."""
    found: list[str] = []
    if path not in RUNTIME_HOLDERS and not path.startswith("controlplane/cli/"):
        found += [
            f"{path}:{line}: controlplane.runtime"
            for line, module, names in imports(tree)
            if module == "controlplane.runtime" or (module == "controlplane" and "runtime" in names)
        ]
    for node in ast.walk(tree):
        if not is_route_handler(node):
            continue
        assert isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        every = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
        for arg in every:
            if arg.arg == "runtime" or names_runtime(arg.annotation):
                found.append(f"{path}:{arg.lineno}: {node.name}({arg.arg})")
    return found


def swallows(handler: ast.ExceptHandler) -> bool:
    broad = handler.type is None or (
        isinstance(handler.type, ast.Name) and handler.type.id in {"Exception", "BaseException"}
    )
    if not broad:
        return False
    for node in (n for statement in handler.body for n in ast.walk(statement)):
        if isinstance(node, ast.Raise):
            return False
        if isinstance(node, ast.Attribute) and node.attr in LOGS:
            return False
        if handler.name and isinstance(node, ast.Name) and node.id == handler.name:
            return False
    return True


@pytest.mark.parametrize("rule", list(violations()))
def test_the_rule_holds(rule: str) -> None:
    found = violations()[rule]
    assert not found, f"{rule}:\n" + "\n".join(found)


def test_the_linters_find_what_they_look_for(tmp_path: Path) -> None:
    """Each check fires on a small offending module (so a passing run means something)."""
    swallowing = ast.parse("try:\n    x = 1\nexcept Exception:\n    pass\n")
    logged = ast.parse("try:\n    x = 1\nexcept Exception:\n    log.exception('x')\n")
    handlers = [
        n for t in (swallowing, logged) for n in ast.walk(t) if isinstance(n, ast.ExceptHandler)
    ]
    assert [swallows(h) for h in handlers] == [True, False]
    assert (
        stage_of("controlplane/plan/service.py") == 2
        and stage_of("controlplane/audit/x.py") is None
    )
    assert is_repository("controlplane/remedy/reviews_repository.py")
    assert not is_repository("controlplane/evaluate/service.py")
    assert is_service("controlplane/remedy/reviews_service.py")
    opened = ast.parse("async def f(runtime, db):\n    runtime.db.read()\n    db.write()\n")
    assert [opens_session(n) for n in ast.walk(opened) if isinstance(n, ast.Call)] == [True, True]
    assert is_controller("controlplane/remedy/reviews_controllers.py")
    assert not is_controller("controlplane/remedy/reviews_service.py")
    source = ast.parse("from sqlalchemy import select\nimport litestar\n")
    assert [(m, n) for _, m, n in imports(source)] == [("sqlalchemy", ["select"]), ("litestar", [])]


def test_the_transaction_rule_finds_a_service_that_opens_one() -> None:
    """A service of a converted area that opens a session or a transaction fails with
    file, line and function; a boundary module, a job entry point, and a session that
    is only used, pass; an area not converted yet is not looked at."""
    source = ast.parse(
        "class Remedy:\n"
        "    async def lift(self, session):\n"
        "        async with self._db.write() as s, s.begin():\n"
        "            await session.execute(q)\n"
        "    async def job(self):\n"
        "        async with self.db.transaction() as session:\n"
        "            await session.flush()\n"
        "async def read(db, session):\n"
        "    async with db.read() as s:\n"
        "        await session.get(X, 1)\n"
    )
    assert transactions_opened("controlplane/remedy/service.py", source) == [
        "controlplane/remedy/service.py:3: Remedy.lift",
        "controlplane/remedy/service.py:3: Remedy.lift",
        "controlplane/remedy/service.py:6: Remedy.job",
        "controlplane/remedy/service.py:9: read",
    ]
    for covered in ("controlplane/telemetry/metrics.py", "controlplane/policy/impact.py"):
        assert len(transactions_opened(covered, source)) == 4, covered
    JOB_ENTRY_POINTS["controlplane/remedy/x.py"] = {"Remedy.job", "read"}
    try:
        assert transactions_opened("controlplane/remedy/x.py", source) == [
            "controlplane/remedy/x.py:3: Remedy.lift",
            "controlplane/remedy/x.py:3: Remedy.lift",
        ]
    finally:
        del JOB_ENTRY_POINTS["controlplane/remedy/x.py"]
    for boundary in (
        "controlplane/remedy/controllers.py",
        "controlplane/remedy/jobs.py",
        "controlplane/runtime.py",
        "controlplane/cli/remedy.py",
        "controlplane/api/dependencies.py",
    ):
        assert transactions_opened(boundary, source) == [], boundary
    assert transactions_opened("controlplane/plan/service.py", source) == []


def test_the_runtime_rule_finds_who_is_handed_the_runtime() -> None:
    """A service or a handler module that imports the runtime fails with file and line,
    and so does a route handler that takes it (by name, or by its type, quoted or inside
    `NamedDependency`), wherever it is; the modules that make the runtime and give out
    its parts may import it, and a handler given one part of it passes."""
    source = ast.parse(
        "from controlplane.runtime import Runtime\n"
        "from controlplane import runtime as whole\n"
        "class C(Controller):\n"
        "    @post('/sync')\n"
        "    async def sync(self, runtime, data: Body) -> None: ...\n"
        "    @get('/metrics')\n"
        "    async def metrics(self, r: NamedDependency[Runtime]) -> None: ...\n"
        "    @litestar.get('/readyz')\n"
        "    async def readyz(self, w: 'NamedDependency[WorkerRuntime]') -> None: ...\n"
        "    @get('/ok')\n"
        "    async def ok(self, converge: NamedDependency[Converge]) -> None: ...\n"
        "def provider(runtime: Runtime) -> Converge:\n"
        "    return runtime.converge\n"
    )
    handlers = [
        "controlplane/policy/controllers.py:5: sync(runtime)",
        "controlplane/policy/controllers.py:7: metrics(r)",
        "controlplane/policy/controllers.py:9: readyz(w)",
    ]
    assert runtime_reached("controlplane/policy/controllers.py", source) == [
        "controlplane/policy/controllers.py:1: controlplane.runtime",
        "controlplane/policy/controllers.py:2: controlplane.runtime",
        *handlers,
    ]
    assert runtime_reached("controlplane/telemetry/metrics.py", source)[:2] == [
        "controlplane/telemetry/metrics.py:1: controlplane.runtime",
        "controlplane/telemetry/metrics.py:2: controlplane.runtime",
    ]
    for holder in ("controlplane/api/app.py", "controlplane/cli/main.py"):
        found = runtime_reached(holder, source)
        assert found == [h.replace("controlplane/policy/controllers.py", holder) for h in handlers]


def test_every_job_entry_point_is_there() -> None:
    """A named entry point that was renamed or moved fails here rather than keep a hole
    in the rule open."""
    for path, names in JOB_ENTRY_POINTS.items():
        tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
        defined: set[str] = set()

        def collect(node: ast.AST, scope: list[str], into: set[str] = defined) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                    into.add(".".join([*scope, child.name]))
                    collect(child, [*scope, child.name])

        collect(tree, [])
        assert names <= defined, f"{path}: no {sorted(names - defined)}"


def test_every_table_has_one_owner() -> None:
    """A new table gets an owning area here, or the ownership rule could not see it."""
    declared = tables(ast.parse(MODELS.read_text(encoding="utf-8")))
    assert declared, "no row classes found in store/models.py"
    assert sorted(set(declared) - set(OWNERS)) == [], "tables without an owner"
    assert sorted(set(OWNERS) - set(declared)) == [], "owners of tables that no longer exist"


def test_the_ownership_rule_finds_a_foreign_query() -> None:
    """A repository that queries another area's table fails, with file and line; the
    owner's own queries, annotations and aliased imports are seen for what they are."""
    source = ast.parse(
        "from controlplane.store.models import ActionRow, VerdictRow as V\n"
        "from controlplane.store import models\n"
        "async def f(session, row: VerdictRow) -> list[ActionRow]:\n"
        "    await session.execute(select(ActionRow))\n"
        "    await session.get(V, 'x')\n"
        "    return select(models.DecisionRow)\n"
    )
    assert foreign_rows("controlplane/remedy/repository.py", source) == [
        "controlplane/remedy/repository.py:4: ActionRow (owned by plan)",
        "controlplane/remedy/repository.py:5: VerdictRow (owned by ingest)",
        "controlplane/remedy/repository.py:6: DecisionRow (owned by evaluate)",
    ]
    assert foreign_rows("controlplane/plan/repository.py", source) == [
        "controlplane/plan/repository.py:5: VerdictRow (owned by ingest)",
        "controlplane/plan/repository.py:6: DecisionRow (owned by evaluate)",
    ]
    assert foreign_rows("controlplane/remedy/service.py", source) == []
    assert tables(ast.parse("class A(SQLModel, table=True): ...\nclass B(SQLModel): ...")) == ["A"]
