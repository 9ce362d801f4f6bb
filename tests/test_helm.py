"""The Helm chart, rendered and linted with Helm's own Go library (helm-python-sdk, no binary)
and every manifest validated against the Kubernetes schemas (kubernetes-validate)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from proxy.settings import known_variables
from tests.support import REPO

CHART = REPO / "helm" / "jargate"
EXAMPLE = REPO / "helm" / "examples" / "idp-with-sidecar"
KUBE = "1.30.0"
#: Variables the chart wires itself from dedicated values (Secrets, ConfigMap).
WIRED = {"JARGATE_KEYS_FILE", "JARGATE_CLIENTS_FILE", "JARGATE_REDIS_URL"}
#: Values documented as a whole (their keys are Kubernetes' or the registry's own).
OPAQUE_VALUES = {
    "settings",
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
        if document["kind"] == "ServiceMonitor":  # a CRD: no schema in Kubernetes itself
            assert document["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(document, KUBE, strict=True)


def of_kind(documents: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in documents if d["kind"] == kind]


def jargate_container(pod: dict[str, Any]) -> dict[str, Any]:
    everything: list[dict[str, Any]] = pod.get("containers", []) + pod.get("initContainers", [])
    (container,) = [c for c in everything if c["name"] == "jargate"]
    return container


@pytest.mark.parametrize("shape", [("standalone",), ("standalone", "features"), ("sidecar",)])
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
            },
        ),
        (("sidecar",), set()),
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
