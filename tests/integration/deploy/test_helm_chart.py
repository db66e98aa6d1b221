"""The Helm chart, rendered and linted by Helm's own library (helm-python-sdk, Helm v4's
Go SDK) and every manifest checked against Kubernetes 1.30's schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parents[3] / "deploy" / "helm" / "tollgate"
PROFILES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE = "1.30"
CRDS = {"ServiceMonitor"}
"""Kinds from operators' CRDs: kubernetes-validate has no schema for them."""


@pytest.fixture(scope="module")
def chart() -> Any:
    return helm_python.Chart.load(str(CHART))


def render(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    out = chart.render(values, name="tg", namespace="tollgate", is_install=True)
    docs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def profile(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / name).read_text())
    return loaded


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (found,) = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    return found


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in doc["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def test_lint_is_clean_in_strict_mode() -> None:
    report = helm_python.lint(str(CHART), strict=True, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_there_are_profiles_to_render() -> None:
    assert {p.name for p in PROFILES} >= {
        "production-values.yaml",
        "opa-sidecar-values.yaml",
        "single-values.yaml",
    }


@pytest.mark.parametrize("values_file", ["(defaults)", *[p.name for p in PROFILES]])
def test_every_manifest_is_valid_kubernetes(chart: Any, values_file: str) -> None:
    values = {} if values_file == "(defaults)" else profile(values_file)
    chart.validate_schema(values)
    docs = render(chart, values)
    assert docs
    for doc in docs:
        if doc["kind"] in CRDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(doc, KUBE, strict=True)


@pytest.mark.parametrize("values_file", ["(defaults)", *[p.name for p in PROFILES]])
def test_every_pod_meets_the_restricted_pod_security_standard(chart: Any, values_file: str) -> None:
    values = {} if values_file == "(defaults)" else profile(values_file)
    for doc in render(chart, values):
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, c["name"]
            assert sc["readOnlyRootFilesystem"] is True, c["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
            assert c["resources"]["requests"] and c["resources"]["limits"], c["name"]


def test_defaults_split_the_api_from_the_connector_workers(chart: Any) -> None:
    docs = render(chart, {})
    api = container(named(docs, "Deployment", "-api"), "api")
    worker = container(named(docs, "Deployment", "-worker"), "worker")
    assert api["args"] == ["serve"]
    assert env(api)["TOLLGATE_ENFORCE"] == "off"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert worker["args"][0] == "worker"
    assert worker["livenessProbe"]["httpGet"]["port"] == "probes"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for c in (api, worker):
        assert env(c)["TOLLGATE_DATABASE_URL"] == {
            "secretKeyRef": {"name": "tollgate-database", "key": "url"}
        }
        assert env(c)["TOLLGATE_CONFIG"] == "/etc/tollgate/tollgate.yaml"
    service = of_kind(docs, "Service")[0]
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "api"
    assert {d["metadata"]["name"] for d in of_kind(docs, "PodDisruptionBudget")} == {
        "tg-tollgate-api",
        "tg-tollgate-worker",
    }
    assert not of_kind(docs, "HorizontalPodAutoscaler")
    assert not of_kind(docs, "ServiceMonitor")


def test_migrations_run_as_a_hook_before_install_and_upgrade(chart: Any) -> None:
    job = named(render(chart, {}), "Job", "-migrations")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    assert container(job, "migrations")["args"] == ["db", "upgrade"]


def test_the_config_map_holds_tollgate_yaml(chart: Any) -> None:
    values = profile("production-values.yaml")
    (config,) = of_kind(render(chart, values), "ConfigMap")
    document = yaml.safe_load(config["data"]["tollgate.yaml"])
    assert document == values["config"]


def test_production_profile_wires_every_secret(chart: Any) -> None:
    docs = render(chart, profile("production-values.yaml"))
    api_doc = named(docs, "Deployment", "-api")
    api, worker_doc = container(api_doc, "api"), named(docs, "Deployment", "-worker")
    worker = container(worker_doc, "worker")
    settings = env(api)
    assert settings["TOLLGATE_CONSOLE_SECRET"]["secretKeyRef"]["name"] == "tollgate-console"
    assert settings["TOLLGATE_POLICY_REPO"]["secretKeyRef"]["name"] == "tollgate-policy-repo"
    assert settings["TOLLGATE_AUDIT_SIGNING_KEY_FILE"] == (
        "/etc/tollgate/audit/audit-signing-key.pem"
    )
    volumes = {v["name"]: v for v in api_doc["spec"]["template"]["spec"]["volumes"]}
    assert volumes["audit-signing-key"]["secret"]["secretName"] == "tollgate-audit-key"
    # Connector credentials go to the workers, which apply; never to the API.
    assert worker["envFrom"] == [{"secretRef": {"name": "tollgate-webhook"}}]
    assert "envFrom" not in api
    worker_volumes = worker_doc["spec"]["template"]["spec"]["volumes"]
    assert {
        "name": "connector-secret-0",
        "secret": {"secretName": "tollgate-gateway-ca", "defaultMode": 0o400},
    } in worker_volumes
    # Autoscaled: the HPA owns the replica count.
    assert "replicas" not in api_doc["spec"]
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == api_doc["metadata"]["name"]
    (monitor,) = of_kind(docs, "ServiceMonitor")
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    assert endpoint["authorization"]["credentials"]["name"] == "tollgate-metrics-token"
    policy = named(docs, "NetworkPolicy", "-api")
    assert "Egress" in policy["spec"]["policyTypes"]
    assert len(policy["spec"]["ingress"][0]["from"]) == 2


def test_opa_sidecar_serves_only_the_pod(chart: Any) -> None:
    docs = render(chart, profile("opa-sidecar-values.yaml"))
    api_doc = named(docs, "Deployment", "-api")
    opa = container(api_doc, "opa")
    assert "--addr=127.0.0.1:8181" in opa["args"]
    assert opa["readinessProbe"]["httpGet"]["path"] == "/health"
    settings = env(container(api_doc, "api"))
    assert settings["TOLLGATE_ENGINE"] == "remote"
    assert settings["TOLLGATE_OPA_URL"] == "http://127.0.0.1:8181"
    assert settings["TOLLGATE_POLICY_REF"] == "v42"


def test_without_workers_the_api_applies_and_holds_the_credentials(chart: Any) -> None:
    docs = render(chart, profile("single-values.yaml"))
    assert not [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("worker")]
    api = container(named(docs, "Deployment", "-api"), "api")
    assert env(api)["TOLLGATE_ENFORCE"] == "embedded"
    assert not of_kind(docs, "PodDisruptionBudget")
    assert not of_kind(docs, "NetworkPolicy")


@pytest.mark.parametrize(
    ("values", "named_in_message"),
    [
        ({"api": {"replicas": "two"}}, "/api/replicas"),
        ({"datbase": {"existingSecret": "db"}}, "datbase"),
        ({"log": {"format": "xml"}}, "/log/format"),
        ({"env": {"DATABASE_URL": "x"}}, "DATABASE_URL"),
        (
            {"config": {"connectors": [{"name": "Edge!", "type": "nginx"}]}},
            "/config/connectors/0/name",
        ),
        (
            {
                "config": {
                    "connectors": [{"name": "e", "type": "webhook", "secrets": {"k": "plain"}}]
                }
            },
            "/config/connectors/0/secrets/k",
        ),
    ],
)
def test_values_that_break_the_schema_fail_naming_the_key(
    chart: Any, values: dict[str, Any], named_in_message: str
) -> None:
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart.validate_schema(values)
    assert named_in_message in str(caught.value)
    # Rendering (what `helm install` does) refuses them too, with the same words.
    with pytest.raises(helm_python.HelmValuesError) as rendered:
        chart.render(values, name="tg", namespace="tollgate", is_install=True)
    assert named_in_message in str(rendered.value)


def test_a_values_file_that_breaks_the_schema_reads_clearly(chart: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad-values.yaml"
    bad.write_text("api:\n  replicas: two\n  port: 99999\n")
    with pytest.raises(helm_python.HelmValuesError) as caught:
        chart.validate_schema(yaml.safe_load(bad.read_text()))
    message = str(caught.value)
    assert "at '/api/replicas': got string, want integer" in message
    assert "/api/port" in message
    assert "Traceback" not in message and "panic" not in message
