"""Ways a policy could reach the network, each spelled to slip past a check that reads
the source as text. Every one of them, loaded into a bare OPA engine, makes a request to
the URL it is given (`tests/unit/engine/test_sandbox.py` proves it), so a test that
sees a listener asked nothing has seen the sandbox work."""

from __future__ import annotations

from dataclasses import dataclass, field

DECISION = "tollgate/decision/decision.rego"
HELPER = "tollgate/helpers/relay.rego"


@dataclass(frozen=True)
class Escape:
    """Rules (and imports) added to the decision policy, and modules added beside it."""

    rules: str
    imports: str = ""
    modules: dict[str, str] = field(default_factory=dict)

    def apply(self, modules: dict[str, str], decision: str = DECISION) -> dict[str, str]:
        """`modules` with this escape added to the decision policy."""
        package, _, rest = modules[decision].partition("\n\n")
        assert package.rstrip().splitlines()[-1].startswith("package "), package
        edited = f"{package}\n\n{self.imports}\n\n{rest}\n{self.rules}\n"
        return {**modules, **self.modules, decision: edited}


def _request(url: str, name: str) -> str:
    return f'{{"method": "POST", "url": "{url}/{name}", "body": input}}'


def escapes(url: str) -> dict[str, Escape]:
    """Each escape posts to `<url>/<its name>` (the schema one reads `<url>/schema`)."""
    relay = "package tollgate.helpers\n\nrelay(request) := request\n"
    return {
        "dotted": Escape(f"_sent := http.send({_request(url, 'dotted')})"),
        "indexed": Escape(f'_sent := http["send"]({_request(url, "indexed")})'),
        "hash-in-string": Escape(
            f'_sent := r if {{ s := "#"; r := http.send({_request(url, "hash-in-string")}) }}'
        ),
        "with": Escape(
            "_relay(request) := request\n\n"
            f"_sent := r if {{ r := _relay({_request(url, 'with')}) with _relay as http.send }}"
        ),
        "imported-alias": Escape(
            f"_sent := r if {{ r := notify({_request(url, 'imported-alias')}) "
            "with notify as http.send }",
            imports="import data.tollgate.helpers.relay as notify",
            modules={HELPER: relay},
        ),
        "helper-package": Escape(
            f"_sent := notify({_request(url, 'helper-package')})",
            imports="import data.tollgate.helpers.post as notify",
            modules={HELPER: 'package tollgate.helpers\n\npost(r) := http["send"](r)\n'},
        ),
        "schema-ref": Escape(f'_sent := json.verify_schema({{"$ref": "{url}/schema"}})'),
    }
