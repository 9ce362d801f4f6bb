"""The Helm chart, rendered and linted with Helm's own Go library (helm-python-sdk, no binary)
and every manifest validated against the Kubernetes schemas (kubernetes-validate)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from proxy.observability import Metrics
from proxy.settings import known_variables
from tests.helm_schema import SCHEMA, settings_schema
from tests.support import REPO

CHART = REPO / "helm" / "jargate"
EXAMPLE = REPO / "helm" / "examples" / "idp-with-sidecar"
KUBE = "1.30.0"
#: Variables the chart wires itself from dedicated values (Secrets, ConfigMap).
WIRED = {"JARGATE_KEYS_FILE", "JARGATE_CLIENTS_FILE", "JARGATE_REDIS_URL"}
#: Prometheus Operator resources: CRDs, so no schema in Kubernetes itself.
MONITORING_KINDS = {"ServiceMonitor", "PrometheusRule"}
#: Values documented as a whole (their keys are Kubernetes' or the registry's own).
OPAQUE_VALUES = {
    "settings",
    "metrics.grafanaDashboard.labels",
    "clients.registry",
    "resources",
    "podSecurityContext",
    "securityContext",
}


def ci_values(*names: str) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in names:
        values = yaml.safe_load((CHART / "ci" / f"{name}-values.yaml").read_text())
        merged = _merge(merged, values)
    return merged


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = value
    return result


def render(values: dict[str, Any], chart: Path = CHART) -> list[dict[str, Any]]:
    """Every manifest the chart renders (NOTES excluded)."""
    rendered = helm.Chart.load(str(chart)).render(values, name="gw", namespace="identity")
    documents = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        documents += [doc for doc in yaml.safe_load_all(text) if doc]
    return documents


def validate(documents: list[dict[str, Any]]) -> None:
    for document in documents:
        if document["kind"] in MONITORING_KINDS:
            assert document["apiVersion"] == "monitoring.coreos.com/v1"
            assert document["metadata"]["name"]
            continue
        kubernetes_validate.validate(document, KUBE, strict=True)


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def jargate_container(pod: dict[str, Any]) -> dict[str, Any]:
    everything: list[dict[str, Any]] = pod.get("containers", []) + pod.get("initContainers", [])
    (container,) = [c for c in everything if c["name"] == "jargate"]
    return container


SHAPES = [
    ("standalone",),
    ("standalone", "features"),
    ("sidecar",),
    ("sidecar", "sidecar-features"),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_chart_lints_clean(shape: tuple[str, ...]) -> None:
    """helm lint --strict finds nothing, for each shape."""
    report = helm.lint(str(CHART), ci_values(*shape), strict=True, kube_version=f"v{KUBE}")
    errors = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert [] == errors


@pytest.mark.parametrize(
    ("shape", "kinds"),
    [
        (("standalone",), {"Deployment", "Service", "ConfigMap"}),
        (
            ("standalone", "features"),
            {
                "Deployment",
                "Service",
                "ConfigMap",
                "ServiceMonitor",
                "PodDisruptionBudget",
                "HorizontalPodAutoscaler",
                "NetworkPolicy",
                "ServiceAccount",
                "PrometheusRule",
            },
        ),
        (("sidecar",), set()),
        (
            ("sidecar", "sidecar-features"),
            {
                "Service",
                "ServiceMonitor",
                "PodDisruptionBudget",
                "NetworkPolicy",
                "PrometheusRule",
                "ConfigMap",
            },
        ),
    ],
)
def test_each_shape_renders_valid_manifests(shape: tuple[str, ...], kinds: set[str]) -> None:
    """Every manifest of each shape and feature is valid for Kubernetes 1.30."""
    documents = render(ci_values(*shape))
    assert kinds == {d["kind"] for d in documents}
    validate(documents)


def test_standalone_pod_is_hardened_and_probed() -> None:
    """Non-root, read-only root with /tmp on an emptyDir, no capabilities, seccomp, no token;
    liveness on /healthz, readiness on /readyz; rolled on config change; drains in time."""
    (deployment,) = of_kind(render(ci_values("standalone")), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "RuntimeDefault" == pod["securityContext"]["seccompProfile"]["type"]
    container = jargate_container(pod)
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert ["ALL"] == security["capabilities"]["drop"]
    assert "/healthz" == container["livenessProbe"]["httpGet"]["path"]
    assert "/readyz" == container["readinessProbe"]["httpGet"]["path"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert "secret" in volumes[mounts["/secrets/jargate-keys"]]
    assert "configMap" in volumes[mounts["/config/jargate"]]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
    assert pod["terminationGracePeriodSeconds"] > 20  # JARGATE_SHUTDOWN_TIMEOUT_SECONDS


def test_config_change_rolls_the_pods() -> None:
    """checksum/config changes when the registry or a setting does."""

    def checksum(values: dict[str, Any]) -> str:
        (deployment,) = of_kind(render(values), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    base = ci_values("standalone")
    changed = _merge(base, {"settings": {"JARGATE_LOG_LEVEL": "debug"}})
    assert checksum(base) != checksum(changed)


def test_chart_and_settings_name_the_same_variables() -> None:
    """Every JARGATE_* the chart can set is a setting, and every setting is reachable from
    values (the settings map, or the keys/clients/redis values that wire the rest)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    in_values = set(values["settings"])
    assert known_variables() == in_values | WIRED
    (deployment,) = of_kind(render(ci_values("standalone")), "Deployment")
    rendered = {e["name"] for e in jargate_container(deployment["spec"]["template"]["spec"])["env"]}
    assert rendered <= known_variables()
    assert WIRED <= rendered


def test_every_value_is_documented_by_a_comment_naming_it() -> None:
    """values.yaml: each value has a comment starting with its name."""
    text = (CHART / "values.yaml").read_text()
    documented = set(re.findall(r"^\s*# ([A-Za-z0-9_.]+) --", text, flags=re.MULTILINE))

    def leaves(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict) and node and prefix not in OPAQUE_VALUES:
            return [
                path
                for key, value in node.items()
                for path in leaves(value, f"{prefix}.{key}" if prefix else key)
            ]
        return [prefix]

    values = yaml.safe_load(text)
    names = leaves(values, "") + list(values["settings"])
    missing = [name for name in names if name not in documented]
    assert [] == missing


@pytest.mark.parametrize(
    "bad",
    [
        {"mode": "bogus"},
        {"replicaCount": 0},
        {"settings": {"NOT_JARGATE": "x"}},
        {"typo": 1},
        {"terminationGracePeriodSeconds": 10},
    ],
)
def test_schema_refuses_bad_values(bad: dict[str, Any]) -> None:
    """values.schema.json catches typos and impossible values before anything renders."""
    with pytest.raises(helm.HelmError):
        helm.Chart.load(str(CHART)).render(_merge(ci_values("standalone"), bad), name="gw")


def test_issuer_is_required() -> None:
    """Without JARGATE_ISSUER the chart refuses to render, naming it."""
    with pytest.raises(helm.HelmError, match="JARGATE_ISSUER is required"):
        render({})


@pytest.mark.parametrize("native", [True, False])
def test_sidecar_example_renders_jargate_in_the_idp_pod(tmp_path: Path, native: bool) -> None:
    """The worked example: jargate's container in the IdP's own pod (a native sidecar on
    Kubernetes >= 1.29, or an ordinary container), hardened and valid."""
    example = tmp_path / "idp-with-sidecar"
    shutil.copytree(EXAMPLE, example)
    shutil.copytree(CHART, example / "charts" / "jargate")  # what `helm dependency build` does
    values = {"jargate": {"sidecar": {"native": native}}}
    documents = render(values, chart=example)
    validate(documents)
    (deployment,) = of_kind(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = jargate_container(pod)
    if native:
        assert container in pod["initContainers"]
        assert "Always" == container["restartPolicy"]
    else:
        assert container in pod["containers"]
        assert "restartPolicy" not in container
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/readyz" == container["readinessProbe"]["httpGet"]["path"]
    assert {"jargate-tmp", "jargate-keys", "jargate-clients"} <= {v["name"] for v in pod["volumes"]}
    assert of_kind(documents, "ConfigMap"), "the registry ConfigMap comes with the subchart"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert {"checksum/config", "checksum/mounted"} == set(annotations)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("NetworkPolicy", "PodDisruptionBudget"):
        (selecting,) = of_kind(documents, kind)
        selector = selecting["spec"].get("podSelector") or selecting["spec"]["selector"]
        assert selector["matchLabels"].items() <= labels.items()


def exported_samples() -> set[str]:
    """The sample names the gateway's /metrics can carry, from its own registry."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    return {
        family.name + suffix
        for family in Metrics().registry.collect()
        for suffix in suffixes.get(family.type, [""])
    }


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bjargate_[a-z_]+", expr))


def test_schema_lists_exactly_the_gateways_settings() -> None:
    """values.schema.json's settings are the gateway's variables, with the types, bounds and
    choices of its Settings model (`python -m tests.helm_schema` rewrites them)."""
    schema = json.loads(SCHEMA.read_text())
    settings = schema["properties"]["settings"]
    assert known_variables() == set(settings["properties"])
    assert settings["additionalProperties"] is False
    assert settings_schema() == settings


@pytest.mark.parametrize(
    "settings",
    [
        {"JARGATE_UPSTREAM_JWKS_PAT": "/jwks"},  # a typo of JARGATE_UPSTREAM_JWKS_PATH
        {"JARGATE_LOG_LEVEL": "verbose"},
        {"JARGATE_PROFILE": "fapi3"},
        {"JARGATE_PORT": 70000},
        {"JARGATE_PORT": "eighty"},
        {"JARGATE_REQUIRE_PAR": "maybe"},
        {"JARGATE_WORKERS": 0},
        {"JARGATE_ISSUER": ["https://a.example"]},
    ],
)
def test_schema_refuses_bad_settings(settings: dict[str, Any]) -> None:
    """A misspelt setting or an impossible value fails before anything renders, naming it."""
    (name,) = settings
    values = _merge(ci_values("standalone"), {"settings": settings})
    with pytest.raises(helm.HelmError, match=name):
        helm.Chart.load(str(CHART)).render(values, name="gw")


@pytest.mark.parametrize(
    "settings",
    [
        {"JARGATE_LOG_LEVEL": "debug", "JARGATE_PROFILE": "fapi2"},
        {"JARGATE_PORT": "8080", "JARGATE_REQUIRE_PAR": True, "JARGATE_CLOCK_SKEW_SECONDS": 10},
        {"JARGATE_REQUIRE_PAR": "true", "JARGATE_UPSTREAM_READ_TIMEOUT_SECONDS": 12.5},
        {"JARGATE_CODE_LIFETIME_SECONDS": "", "JARGATE_JARM_DEFAULT_ALG": "ES256"},
    ],
)
def test_schema_takes_each_form_a_setting_comes_in(settings: dict[str, Any]) -> None:
    """Numbers and booleans as values or as --set-string strings, "" for unset."""
    documents = render(_merge(ci_values("standalone"), {"settings": settings}))
    (deployment,) = of_kind(documents, "Deployment")
    env = {
        e["name"]: e.get("value")
        for e in jargate_container(deployment["spec"]["template"]["spec"])["env"]
    }
    for name, value in settings.items():
        if value != "":
            assert str(value).lower() == str(env[name]).lower()


@pytest.mark.parametrize(
    "bad",
    [
        {"serviceAccount": {"creat": True}},
        {"serviceAccount": {"name": "Not_A_Name"}},
        {"imagePullSecrets": ["registry-credentials"]},
        {"extraEnv": [{"name": "JARGATE_LOG_LEVEL", "value": "debug"}]},
        {"extraEnv": [{"value": "x"}]},
        {"extraVolumeMounts": [{"name": "ca"}]},
        {"topologySpreadConstraints": [{"maxSkew": 1}]},
        {"acknowledge": {"memoryStore": True}},
        {"metrics": {"prometheusRule": {"enable": True}}},
        {"metrics": {"grafanaDashboard": {"labels": {"grafana_dashboard": 1}}}},
        {"sidecar": {"podSelector": {"app": 1}}},
        {"checksumAnnotations": "yes"},
    ],
)
def test_schema_refuses_bad_new_values(bad: dict[str, Any]) -> None:
    """Typos and wrong shapes of the operator values fail before rendering; JARGATE_*
    variables go through settings (and its schema), never extraEnv."""
    with pytest.raises(helm.HelmError, match="schema"):
        helm.Chart.load(str(CHART)).render(_merge(ci_values("standalone"), bad), name="gw")


def test_operator_values_reach_the_pod() -> None:
    """serviceAccount, imagePullSecrets, extraEnv/extraVolumes/extraVolumeMounts,
    priorityClassName and topologySpreadConstraints (this release's pods selected when the
    constraint names none) land where Kubernetes reads them; the manifests stay valid."""
    documents = render(ci_values("standalone", "features"))
    validate(documents)
    (account,) = of_kind(documents, "ServiceAccount")
    assert "gw-jargate" == account["metadata"]["name"]
    assert {"iam.example/role": "jargate"} == account["metadata"]["annotations"]
    assert account["automountServiceAccountToken"] is False
    (deployment,) = of_kind(documents, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert "gw-jargate" == pod["serviceAccountName"]
    assert pod["automountServiceAccountToken"] is False
    assert [{"name": "registry-credentials"}] == pod["imagePullSecrets"]
    assert "identity-critical" == pod["priorityClassName"]
    (spread,) = pod["topologySpreadConstraints"]
    assert "topology.kubernetes.io/zone" == spread["topologyKey"]
    assert {"app.kubernetes.io/name": "jargate", "app.kubernetes.io/instance": "gw"} == spread[
        "labelSelector"
    ]["matchLabels"]
    container = jargate_container(pod)
    assert {"name": "SSL_CERT_FILE", "value": "/etc/jargate-ca/ca.crt"} in container["env"]
    assert {"name": "jargate-ca", "mountPath": "/etc/jargate-ca", "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": "jargate-ca", "configMap": {"name": "corporate-ca"}} in pod["volumes"]


def test_defaults_render_no_service_account_and_no_optional_fields() -> None:
    """Without the new values the pod is as before: the namespace's default account, no
    token, no pull secrets, priority or spread."""
    (deployment,) = of_kind(render(ci_values("standalone")), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    for field in ("serviceAccountName", "imagePullSecrets", "priorityClassName"):
        assert field not in pod
    assert "topologySpreadConstraints" not in pod
    assert pod["automountServiceAccountToken"] is False
    named = {"name": "gw-existing"}
    (deployment,) = of_kind(
        render(_merge(ci_values("standalone"), {"serviceAccount": named})), "Deployment"
    )
    assert "gw-existing" == deployment["spec"]["template"]["spec"]["serviceAccountName"]


def test_spread_constraint_keeps_its_own_label_selector() -> None:
    own = {"matchLabels": {"tier": "identity"}}
    constraint = {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": own,
    }
    values = _merge(ci_values("standalone"), {"topologySpreadConstraints": [constraint]})
    (deployment,) = of_kind(render(values), "Deployment")
    assert [constraint] == deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]


def test_checksums_cover_mounted_objects_and_can_be_turned_off() -> None:
    """checksum/config follows the values that make the environment and the registry
    (extraEnv and the Redis Secret's name included); checksum/mounted the content of the
    Secrets and ConfigMap the chart does not render (read at install; empty offline).
    checksumAnnotations: false leaves both out, for a gateway that reloads its files."""

    def annotations(values: dict[str, Any]) -> dict[str, str]:
        (deployment,) = of_kind(render(values), "Deployment")
        found: dict[str, str] = deployment["spec"]["template"]["metadata"].get("annotations", {})
        return found

    base = ci_values("standalone")
    first = annotations(base)
    assert re.fullmatch(r"[0-9a-f]{64}", first["checksum/mounted"])
    for change in (
        {"extraEnv": [{"name": "TZ", "value": "UTC"}]},
        {"redis": {"existingSecret": "other-redis"}},
        {"clients": {"registry": {"clients": [{"client_id": "other"}]}}},
    ):
        assert first["checksum/config"] != annotations(_merge(base, change))["checksum/config"]
    off = annotations(_merge(base, {"checksumAnnotations": False}))
    assert {} == off
    kept = annotations(
        _merge(base, {"checksumAnnotations": False, "podAnnotations": {"team": "identity"}})
    )
    assert {"team": "identity"} == kept


@pytest.mark.parametrize(
    ("values", "message", "acknowledgement"),
    [
        (
            {"redis": {"existingSecret": ""}},
            "without redis.existingSecret",
            {"memoryStoreWithReplicas": True},
        ),
        (
            {"keys": {"existingSecret": ""}},
            "without keys.existingSecret",
            {"throwAwayKeysWithReplicas": True},
        ),
        (
            {"replicaCount": 1, "redis": {"existingSecret": ""}, "autoscaling": {"enabled": True}},
            "up to 6 replicas without redis.existingSecret",
            {"memoryStoreWithReplicas": True},
        ),
    ],
)
def test_unsafe_combinations_fail_unless_acknowledged(
    values: dict[str, Any], message: str, acknowledgement: dict[str, bool]
) -> None:
    """Several replicas with the in-memory store, or with throw-away keys, refuse to render,
    naming the fix; the explicit acknowledgement renders it."""
    unsafe = _merge(ci_values("standalone"), values)
    with pytest.raises(helm.HelmError, match=message):
        render(unsafe)
    documents = render(_merge(unsafe, {"acknowledge": acknowledgement}))
    validate(documents)
    assert of_kind(documents, "Deployment")


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": 1, "redis": {"existingSecret": ""}, "keys": {"existingSecret": ""}},
        {
            "settings": {"JARGATE_REDIS_URL": "redis://redis:6379/0"},
            "redis": {"existingSecret": ""},
        },
        {"mode": "sidecar", "redis": {"existingSecret": ""}, "keys": {"existingSecret": ""}},
    ],
)
def test_safe_combinations_render(values: dict[str, Any]) -> None:
    """One replica may keep its store in memory; a Redis URL from settings counts as Redis;
    the sidecar shape's replicas are the IdP chart's."""
    validate(render(_merge(ci_values("standalone"), values)))


@pytest.mark.parametrize(
    "feature",
    [
        {"podDisruptionBudget": {"enabled": True}},
        {"networkPolicy": {"enabled": True}},
        {"metrics": {"serviceMonitor": {"enabled": True}}},
    ],
)
def test_sidecar_features_need_the_idps_pod_labels(feature: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmError, match=r"sidecar\.podSelector is required"):
        render(_merge(ci_values("sidecar"), feature))


def test_sidecar_features_select_the_idps_pods() -> None:
    """PDB, NetworkPolicy and the metrics Service select sidecar.podSelector; the
    ServiceMonitor finds the metrics Service; the policy opens jargate's ports only."""
    documents = render(ci_values("sidecar", "sidecar-features"))
    idp = {"app.kubernetes.io/name": "legacy-idp"}
    (pdb,) = of_kind(documents, "PodDisruptionBudget")
    assert idp == pdb["spec"]["selector"]["matchLabels"]
    (policy,) = of_kind(documents, "NetworkPolicy")
    assert idp == policy["spec"]["podSelector"]["matchLabels"]
    ports = [port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]]
    assert [8000, 9090] == ports
    (service,) = of_kind(documents, "Service")
    assert idp == service["spec"]["selector"]
    assert [9090] == [p["port"] for p in service["spec"]["ports"]]
    (monitor,) = of_kind(documents, "ServiceMonitor")
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()


def test_service_monitor_needs_the_metrics_port() -> None:
    values = _merge(ci_values("standalone", "features"), {"settings": {"JARGATE_METRICS_PORT": 0}})
    with pytest.raises(helm.HelmError, match="JARGATE_METRICS_PORT"):
        render(values)


def documented_alerts() -> dict[str, str]:
    """The alert rules docs/kubernetes.md lists, by name."""
    text = (REPO / "docs" / "kubernetes.md").read_text()
    block = text.split("## 7. Metrics and alerts", 1)[1].split("```yaml", 1)[1].split("```")[0]
    rules = yaml.safe_load(block)["groups"][0]["rules"]
    return {rule["alert"]: rule["expr"] for rule in rules}


def test_prometheus_rule_ships_the_documented_alerts() -> None:
    """Off by default; enabled, it holds the alerts of docs/kubernetes.md, each scoped to the
    release's namespace, with a severity, and only on metrics the gateway exports."""
    assert not of_kind(render(ci_values("standalone")), "PrometheusRule")
    documents = render(ci_values("standalone", "features"))
    (rule,) = of_kind(documents, "PrometheusRule")
    (group,) = rule["spec"]["groups"]
    rules = {r["alert"]: r for r in group["rules"]}
    documented = documented_alerts()
    assert set(documented) == set(rules)
    exported = exported_samples()
    for name, alert in rules.items():
        assert metric_names(documented[name]) == metric_names(alert["expr"])
        assert metric_names(alert["expr"]) <= exported
        assert alert["expr"].count('namespace="identity"') == alert["expr"].count("jargate_")
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert alert["annotations"]["summary"]
    assert "critical" == rules["JargateStoreFailing"]["labels"]["severity"]


def test_grafana_dashboard_configmap() -> None:
    """Off by default; enabled, a ConfigMap with Grafana's sidecar label holding a dashboard
    of decisions by outcome and reason, latency, and the store, on exported metrics only."""
    assert not [
        d for d in of_kind(render(ci_values("standalone")), "ConfigMap") if "dashboard" in str(d)
    ]
    values = _merge(
        ci_values("standalone", "features"),
        {"metrics": {"grafanaDashboard": {"namespace": "monitoring"}}},
    )
    (configmap,) = [
        d
        for d in of_kind(render(values), "ConfigMap")
        if d["metadata"]["name"].endswith("dashboard")
    ]
    kubernetes_validate.validate(configmap, KUBE, strict=True)
    assert "1" == configmap["metadata"]["labels"]["grafana_dashboard"]
    assert "monitoring" == configmap["metadata"]["namespace"]
    dashboard = json.loads(configmap["data"]["jargate.json"])
    assert "jargate" == dashboard["uid"]
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert used <= exported_samples()
    assert {
        "jargate_authorization_decisions_total",
        "jargate_http_request_duration_seconds_bucket",
        "jargate_store_errors_total",
        "jargate_store_resets_total",
    } <= used
    assert any("by (reason" in expr for expr in exprs)
    assert all('namespace=~"$namespace"' in expr for expr in exprs)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
