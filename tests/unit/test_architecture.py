"""The rules the code keeps (STYLE.md), checked on its syntax trees, as small linters:
a violation fails with the file and line.

- SQL only in repositories (and the store): services and controllers ask them. SQL is a
  query construct of SQLAlchemy or SQLModel (imported, or through the module), a raw
  statement (`exec_driver_sql`, `execute("...")`).
- Services never import litestar: HTTP stays in controllers.
- Settings only from `controlplane/settings.py`: nothing else reads `os.environ`.
- Connectors see only the connector SDK (`sdk`, `targets`, `toolkit`), never the domain.
- Stages call forward only: ingest -> evaluate -> plan -> enforce; a stage never imports
  an earlier stage.
- Each stage makes its own spans and pipeline events: `verdict.ingest` and
  `verdict.received` in ingest, `policy.evaluate` and `decision.recorded` in evaluate,
  `action.plan` and `action.planned` in plan, `connector.apply` and `connector.reconcile`
  in enforce; no other module names them where it would make one.
- No broad `except` that swallows: a handler of `Exception`/`BaseException` (or a bare
  one, or a tuple holding one) re-raises, logs, or uses the exception it caught; no
  `contextlib.suppress` of them.
- Handlers call services: a controller never imports a repository nor opens a
  database session itself (it asks for the request's `session`).
- Transactions open at the boundary: everywhere but the store (which is the database)
  and the engines (which never touch it), only the boundary modules (`BOUNDARIES`:
  controllers and dependency providers, guards, jobs, the runtime, the CLI) open a
  session or a transaction; services are given a session. The few jobs and streams
  that live beside their rules are named in `JOB_ENTRY_POINTS`.
- Nobody is handed the whole runtime: only the modules that make it and give out its
  parts (`RUNTIME_HOLDERS`: the runtime, the apps, the dependency providers, the CLI)
  import it or read it from the app's state (the guards too: `STATE_READERS`), and no
  route handler takes it as a parameter; each is given what it uses.
- Each area exports its routes: a module with route handlers has a `ROUTES` list, and
  `api/app.py` imports it (its `AREAS`); nothing wires a controller by hand.
- One owner per table: only the owning area's repository names a table's row class in
  code (a query, a row it builds); the others ask that repository. Type annotations
  may name any row. Every table of `store/models.py` has an owner here.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "controlplane").rglob("*.py"), *(REPO / "connectors").rglob("*.py")])
SQL = {"select", "insert", "update", "delete", "text", "func", "tuple_", "or_", "and_", "col"}
SQL_PACKAGES = {"sqlalchemy", "sqlmodel"}
RAW_SQL = {"exec_driver_sql"}
CONNECTOR_SDK = {
    "controlplane.enforce.sdk",
    "controlplane.enforce.targets",
    "controlplane.enforce.toolkit",
}
STAGES = ["ingest", "evaluate", "plan", "enforce"]
STAGE_SPANS = {
    "SPAN_INGEST": "ingest",
    "SPAN_EVALUATE": "evaluate",
    "SPAN_PLAN": "plan",
    "SPAN_APPLY": "enforce",
    "SPAN_RECONCILE": "enforce",
}
"""The pipeline's span names (`telemetry/tracing.py` and `enforce/follower.py` define
them) and the stage that alone starts each."""
SPAN_NAMES = {
    "verdict.ingest": "ingest",
    "policy.evaluate": "evaluate",
    "action.plan": "plan",
    "connector.apply": "enforce",
    "connector.reconcile": "enforce",
}
"""The same spans by their names, for one started with a literal name."""
STAGE_EVENTS = {
    "verdict.received": "ingest",
    "decision.recorded": "evaluate",
    "action.planned": "plan",
}
"""The pipeline's audit events and the stage that alone drafts each (a reviewer's
confirmation plans through the plan step too)."""
SPAN_DEFINITIONS = {"controlplane/telemetry/tracing.py"}
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
    "SightingTallyRow": "customers",
    "SpanRow": "telemetry",
}
"""The area whose repository alone queries each table (its row class)."""
LOGS = {"debug", "info", "warning", "error", "exception", "critical"}
UNIT_OF_WORK = ["controlplane/"]
"""Where transactions open at the request or job boundary only: everywhere, but for
`NOT_UNIT_OF_WORK`."""
NOT_UNIT_OF_WORK = ["controlplane/store/", "controlplane/engine/"]
"""The store is the database (`Database.transaction()` is the unit of work); the policy
engines never touch it (their `begin()` marks a push to a remote OPA), and a check
below keeps them from importing the store."""
BOUNDARIES = {
    "controlplane/api/dependencies.py",
    "controlplane/auth/guards.py",
    "controlplane/runtime.py",
    "controlplane/ui/sessions.py",
}
"""Boundary modules besides controllers, `jobs.py` modules and the CLI: the request's
session providers, the guards (they run before the handler), the runtime's jobs."""
JOB_ENTRY_POINTS: dict[str, set[str]] = {
    # The decide thread: a group of requests is decided and stored in one transaction
    # of its own (group commit), off the event loop; recovery of `received` verdicts.
    "controlplane/ingest/service.py": {"IngestService"},
    # The intel index reload, in a thread off the request path.
    "controlplane/evaluate/repository.py": {"IntelCache._load_apart"},
    # The connector followers and their worker thread, with an engine of their own.
    "controlplane/enforce/follower.py": {"Follower"},
    "controlplane/enforce/service.py": {"Enforcer.expire", "_Worker"},
    "controlplane/audit/service.py": {"export"},
    "controlplane/audit/verify.py": {"verify_database"},
    "controlplane/audit/checkpoints.py": {"write_checkpoint"},
    "controlplane/audit/subjects.py": {"catch_up_blocking", "rebuild_blocking"},
    "controlplane/bouncers/service.py": {"answer"},
    "controlplane/policy/service.py": {"PolicyService"},
    "controlplane/telemetry/spanstore.py": {"_Sink.write"},
}
"""Functions (or classes) of service modules that are jobs or streams, by module: each
opens the transactions it needs itself, and says why in its docstring (the pipeline's,
in the comment above them). A streamed
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
STATE_READERS = {"controlplane/auth/guards.py", "controlplane/ui/sessions.py"}
"""Modules that, besides `RUNTIME_HOLDERS`, read the runtime from the app's state: the
guards and the console's cookie session, which run before any handler (and so before
its dependencies) to tell who is calling."""
APP = "controlplane/api/app.py"
OTHER_APPS = {"controlplane/api/worker.py"}
"""Modules that make an app of their own with its own few routes (the connector worker's
probes), not part of the API's."""
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


@functools.cache
def violations() -> dict[str, list[str]]:
    """Every rule's findings over the tree, read once per run."""
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
        "a stage's span or event made outside it": [],
        "a route module the app does not take its ROUTES from": [],
    }
    assembled = app_areas()
    for path, tree in trees():
        found["SQL outside a repository"] += sql_outside(path, tree)
        found["a repository queries a table another area owns"] += foreign_rows(path, tree)
        found["a service opens a transaction"] += transactions_opened(path, tree)
        found["a service or handler is handed the runtime"] += runtime_reached(path, tree)
        found["a stage's span or event made outside it"] += stage_work(path, tree)
        found["a route module the app does not take its ROUTES from"] += unrouted(
            path, tree, assembled
        )
        found["a stage imports an earlier stage"] += backward_imports(path, tree)
        found["os.environ read outside settings"] += environment_read(path, tree)
        for line, module, names in imports(tree):
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
        for node in ast.walk(tree):
            if is_controller(path) and opens_session(node):
                found["a handler calls a repository or opens a session"].append(
                    f"{path}:{node.lineno}"
                )
            if isinstance(node, ast.ExceptHandler) and swallows(node):
                found["a broad except swallows"].append(f"{path}:{node.lineno}")
            if suppresses_all(node):
                found["a broad except swallows"].append(f"{path}:{node.lineno}: suppress")
    return found


ENVIRONMENT = {"environ", "environb", "getenv", "getenvb"}


def environment_read(path: str, tree: ast.Module) -> list[str]:
    """Where a module other than `controlplane/settings.py` reads the environment:
    `os.environ`, `os.getenv`, or either imported from `os` (`file:line`)."""
    if path == "controlplane/settings.py":
        return []
    lines = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in ENVIRONMENT
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    ]
    lines += [
        line for line, module, names in imports(tree) if module == "os" and ENVIRONMENT & set(names)
    ]
    return [f"{path}:{line}" for line in sorted(lines)]


def backward_imports(path: str, tree: ast.Module) -> list[str]:
    """Where a stage imports an earlier stage, in any spelling (`controlplane.ingest.x`,
    `from controlplane import ingest`): `file:line: module`."""
    stage = stage_of(path)
    if stage is None:
        return []
    found = []
    for line, module, names in imports(tree):
        for target in (t.split(".") for t in (module, *(f"{module}.{n}" for n in names))):
            earlier = len(target) > 1 and target[0] == "controlplane" and target[1] in STAGES
            if earlier and STAGES.index(target[1]) < stage:
                found.append(f"{path}:{line}: {module}")
                break
    return found


def sql_outside(path: str, tree: ast.Module) -> list[str]:
    """Where a module that is no repository builds SQL: imports a query construct of
    SQLAlchemy or SQLModel, reaches one through the package (`sa.select`), or runs a raw
    statement (`exec_driver_sql`, `execute` of a string): `file:line: what`."""
    if is_repository(path):
        return []
    found: list[tuple[int, str]] = []
    packages = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.split(".")[0] in SQL_PACKAGES
    }
    for line, module, names in imports(tree):
        if module.split(".")[0] in SQL_PACKAGES and SQL & set(names):
            found.append((line, str(sorted(SQL & set(names)))))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in SQL
            and isinstance(node.value, ast.Name | ast.Attribute)
            and ast.unparse(node.value) in packages
        ):
            found.append((node.lineno, ast.unparse(node)))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            raw = node.func.attr in RAW_SQL
            literal = (
                node.func.attr == "execute"
                and bool(node.args)
                and isinstance(node.args[0], ast.Constant | ast.JoinedStr)
                and (
                    not isinstance(node.args[0], ast.Constant)
                    or isinstance(node.args[0].value, str)
                )
            )
            if raw or literal:
                found.append((node.lineno, f"{node.func.attr}(...)"))
    return [f"{path}:{line}: {what}" for line, what in sorted(found)]


def stage_work(path: str, tree: ast.Module) -> list[str]:
    """Where a module outside a stage names that stage's span (`SPAN_PLAN`, or its string
    where a span starts) or drafts its pipeline event (`EventDraft(type="action.planned")`):
    `file:line: name (stage)`."""
    area = area_of(path)
    found: list[tuple[int, str]] = []

    def foreign(line: int, name: str, stage: str) -> None:
        if area != stage and path not in SPAN_DEFINITIONS:
            found.append((line, f"{name} ({stage})"))

    for node in ast.walk(tree):
        named = getattr(node, "id", None) or getattr(node, "attr", None)
        if isinstance(node, ast.Name | ast.Attribute) and named in STAGE_SPANS:
            foreign(node.lineno, named, STAGE_SPANS[named])
        if not isinstance(node, ast.Call):
            continue
        called = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if called == "EventDraft":
            for keyword in node.keywords:
                value = keyword.value
                if (
                    keyword.arg == "type"
                    and isinstance(value, ast.Constant)
                    and value.value in STAGE_EVENTS
                ):
                    foreign(node.lineno, value.value, STAGE_EVENTS[value.value])
        elif called in {"start_span", "start_as_current_span"} and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and first.value in SPAN_NAMES:
                foreign(node.lineno, first.value, SPAN_NAMES[first.value])
    return [f"{path}:{line}: {what}" for line, what in sorted(found)]


def app_areas() -> set[str]:
    """The modules `api/app.py` imports (dotted), the areas it takes `ROUTES` from."""
    tree = ast.parse((REPO / APP).read_text(encoding="utf-8"))
    return {
        name
        for _, module, names in imports(tree)
        for name in (module, *(f"{module}.{n}" for n in names))
    }


def unrouted(path: str, tree: ast.Module, assembled: set[str]) -> list[str]:
    """A module with route handlers that has no top-level `ROUTES`, or that `api/app.py`
    does not import (its routes would be wired by hand, or not at all)."""
    handlers = [n for n in ast.walk(tree) if is_route_handler(n)]
    if not handlers or not path.startswith("controlplane/") or path in OTHER_APPS:
        return []
    exported = any(
        isinstance(node, ast.Assign | ast.AnnAssign)
        and any(
            isinstance(t, ast.Name) and t.id == "ROUTES"
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
        )
        for node in tree.body
    )
    dotted = path.removesuffix(".py").replace("/", ".")
    found = []
    if not exported:
        found.append(f"{path}:{handlers[0].lineno}: no ROUTES")
    if dotted not in assembled:
        found.append(f"{path}:{handlers[0].lineno}: not in {APP}")
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
    if path.startswith("controlplane/engine/"):
        return [
            f"{path}:{line}: {module} (an engine opens no session)"
            for line, module, names in imports(tree)
            if any(
                m.startswith("controlplane.store")
                for m in (module, *(f"{module}.{n}" for n in names))
            )
        ]
    covered = any(path.startswith(area) for area in UNIT_OF_WORK)
    if not covered or any(path.startswith(a) for a in NOT_UNIT_OF_WORK) or is_boundary(path):
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
    if path not in RUNTIME_HOLDERS | STATE_READERS:
        found += [
            f"{path}:{node.lineno}: {ast.unparse(node)}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr == "runtime"
            and (getattr(node.value, "attr", None) or getattr(node.value, "id", None)) == "state"
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


BROAD = {"Exception", "BaseException"}


def is_broad(caught: ast.expr | None) -> bool:
    """`Exception`, `BaseException`, or a tuple holding one (None: a bare `except:`)."""
    if caught is None:
        return True
    if isinstance(caught, ast.Tuple):
        return any(is_broad(e) for e in caught.elts)
    return isinstance(caught, ast.Name) and caught.id in BROAD


def suppresses_all(node: ast.AST) -> bool:
    """`contextlib.suppress(..., Exception, ...)`: a broad except with nothing in it."""
    if not isinstance(node, ast.Call):
        return False
    called = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
    return called == "suppress" and any(
        isinstance(a, ast.Name) and a.id in BROAD for a in node.args
    )


def swallows(handler: ast.ExceptHandler) -> bool:
    if not is_broad(handler.type):
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
    """A service that opens a session or a transaction fails with file, line and
    function, in every area (the pipeline's stages too); a boundary module, a job entry
    point, and a session that is only used, pass; the store (the database itself) is not
    looked at, and an engine may not even import it."""
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
    for covered in (
        "controlplane/telemetry/metrics.py",
        "controlplane/policy/impact.py",
        "controlplane/plan/read_service.py",
        "controlplane/enforce/service.py",
        "controlplane/leadership.py",
    ):
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
    assert transactions_opened("controlplane/store/db.py", source) == []
    assert transactions_opened("controlplane/engine/remote.py", source) == []
    reaching = ast.parse(
        "from controlplane.store.db import Database\nfrom controlplane import store\n"
    )
    assert transactions_opened("controlplane/engine/remote.py", reaching) == [
        "controlplane/engine/remote.py:1: controlplane.store.db (an engine opens no session)",
        "controlplane/engine/remote.py:2: controlplane (an engine opens no session)",
    ]


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
        "def page(request):\n"
        "    return request.app.state.runtime.settings\n"
    )
    handlers = [
        "controlplane/policy/controllers.py:5: sync(runtime)",
        "controlplane/policy/controllers.py:7: metrics(r)",
        "controlplane/policy/controllers.py:9: readyz(w)",
    ]
    assert runtime_reached("controlplane/policy/controllers.py", source) == [
        "controlplane/policy/controllers.py:1: controlplane.runtime",
        "controlplane/policy/controllers.py:2: controlplane.runtime",
        "controlplane/policy/controllers.py:15: request.app.state.runtime",
        *handlers,
    ]
    for reader in ("controlplane/auth/guards.py", "controlplane/ui/sessions.py"):
        assert not [f for f in runtime_reached(reader, source) if ":15:" in f], reader
    assert runtime_reached("controlplane/telemetry/metrics.py", source)[:2] == [
        "controlplane/telemetry/metrics.py:1: controlplane.runtime",
        "controlplane/telemetry/metrics.py:2: controlplane.runtime",
    ]
    for holder in ("controlplane/api/app.py", "controlplane/cli/main.py"):
        found = [f for f in runtime_reached(holder, source) if "state.runtime" not in f]
        assert found == [h.replace("controlplane/policy/controllers.py", holder) for h in handlers]
    assert "state.runtime" not in " ".join(runtime_reached("controlplane/api/app.py", source))


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


def test_the_sql_rule_finds_sql_however_it_is_written() -> None:
    """A query construct imported from SQLAlchemy or SQLModel, reached through the
    package, or a raw statement, outside a repository, fails with file and line; a
    session type, an exception class and a repository's own SQL pass."""
    source = ast.parse(
        "import sqlalchemy as sa\n"
        "from sqlmodel import col, Session\n"
        "from sqlalchemy.exc import IntegrityError\n"
        "from sqlalchemy.ext.asyncio import AsyncSession\n"
        "async def f(session, conn, cursor):\n"
        "    q = sa.select(X)\n"
        "    conn.exec_driver_sql('BEGIN IMMEDIATE')\n"
        "    cursor.execute('PRAGMA journal_mode=WAL')\n"
        "    cursor.execute(f'PRAGMA {x}')\n"
        "    await session.execute(q)\n"
    )
    assert sql_outside("controlplane/telemetry/spanstore.py", source) == [
        "controlplane/telemetry/spanstore.py:2: ['col']",
        "controlplane/telemetry/spanstore.py:6: sa.select",
        "controlplane/telemetry/spanstore.py:7: exec_driver_sql(...)",
        "controlplane/telemetry/spanstore.py:8: execute(...)",
        "controlplane/telemetry/spanstore.py:9: execute(...)",
    ]
    assert sql_outside("controlplane/telemetry/repository.py", source) == []
    assert sql_outside("controlplane/store/db.py", source) == []


def test_the_stage_rule_finds_a_span_or_event_made_elsewhere() -> None:
    """A module outside plan that drafts `action.planned` or names `SPAN_PLAN` fails with
    file and line, and so does one that starts a stage's span by its literal name; the
    stage itself, the module defining the names and an event of no stage pass."""
    source = ast.parse(
        "from controlplane.telemetry.tracing import SPAN_PLAN\n"
        "def f(now):\n"
        "    tracer().start_span(SPAN_PLAN)\n"
        "    t.start_as_current_span('connector.apply')\n"
        "    return [EventDraft(type='action.planned', at=now),\n"
        "            audit.EventDraft(type='review.confirmed', at=now)]\n"
    )
    assert stage_work("controlplane/remedy/reviews_service.py", source) == [
        "controlplane/remedy/reviews_service.py:3: SPAN_PLAN (plan)",
        "controlplane/remedy/reviews_service.py:4: connector.apply (enforce)",
        "controlplane/remedy/reviews_service.py:5: action.planned (plan)",
    ]
    assert stage_work("controlplane/plan/service.py", source) == [
        "controlplane/plan/service.py:4: connector.apply (enforce)"
    ]
    assert stage_work("controlplane/telemetry/tracing.py", source) == []


def test_the_route_rule_finds_a_controller_wired_by_hand() -> None:
    """A module with route handlers and no `ROUTES`, or one the app does not import, fails
    with file and line; an exported, assembled one passes, as does a module without
    routes."""
    handler = "from litestar import Controller, get\nclass C(Controller):\n    @get('/')\n"
    handler += "    async def read(self) -> None: ...\n"
    bare = ast.parse(handler)
    exported = ast.parse(handler + "ROUTES = [C]\n")
    assembled = {"controlplane.ui.traces_controllers"}
    assert unrouted("controlplane/ui/traces.py", bare, assembled) == [
        "controlplane/ui/traces.py:4: no ROUTES",
        "controlplane/ui/traces.py:4: not in controlplane/api/app.py",
    ]
    assert unrouted("controlplane/ui/traces_controllers.py", exported, assembled) == []
    assert unrouted("controlplane/ui/service.py", ast.parse("x = 1\n"), assembled) == []
    assert "controlplane.ui.traces_controllers" in app_areas()


def test_the_swallow_rule_finds_every_broad_form() -> None:
    """A bare except, one of a tuple holding `Exception`, and `suppress(Exception)` are
    broad; one that logs, one of named errors, and `suppress` of a named error, pass."""
    source = ast.parse(
        "try:\n    x()\nexcept:\n    pass\n"
        "try:\n    x()\nexcept (KeyError, Exception):\n    pass\n"
        "try:\n    x()\nexcept (KeyError, ValueError):\n    pass\n"
        "try:\n    x()\nexcept (KeyError, Exception):\n    log.warning('x', exc_info=True)\n"
        "with contextlib.suppress(OSError, Exception):\n    x()\n"
        "with suppress(ProcessLookupError):\n    x()\n"
    )
    handlers = [n for n in ast.walk(source) if isinstance(n, ast.ExceptHandler)]
    assert [swallows(h) for h in handlers] == [True, True, False, False]
    assert [n.lineno for n in ast.walk(source) if suppresses_all(n)] == [17]


def test_the_stage_import_rule_sees_every_spelling() -> None:
    """A later stage importing an earlier one fails, dotted or as `from controlplane
    import ingest`; an import forward, or of a shared area, passes."""
    source = ast.parse(
        "from controlplane import ingest\n"
        "import controlplane.evaluate.schemas\n"
        "from controlplane.enforce import service\n"
        "from controlplane import audit, domain\n"
    )
    assert backward_imports("controlplane/plan/service.py", source) == [
        "controlplane/plan/service.py:1: controlplane",
        "controlplane/plan/service.py:2: controlplane.evaluate.schemas",
    ]
    assert backward_imports("controlplane/ingest/service.py", source) == []
    assert backward_imports("controlplane/remedy/service.py", source) == []


def test_the_settings_rule_finds_every_read_of_the_environment() -> None:
    """`os.environ`, `os.getenv` and either imported from `os` fail outside the settings
    module, with file and line; the settings module and `os.path` pass."""
    source = ast.parse(
        "import os\nfrom os import getenv\n"
        "a = os.environ['X']\nb = os.getenv('Y')\nc = os.path.join('a', 'b')\n"
    )
    assert environment_read("controlplane/intel/service.py", source) == [
        "controlplane/intel/service.py:2",
        "controlplane/intel/service.py:3",
        "controlplane/intel/service.py:4",
    ]
    assert environment_read("controlplane/settings.py", source) == []
