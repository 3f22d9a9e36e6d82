"""Deploy files, checked with the real tools: kubectl kustomize + kubernetes-validate
--strict for every overlay, hadolint for every Dockerfile, promtool for the rules and
the compose Prometheus config; plus the policies the manifests promise (labels, limits,
probes, non-root, read-only root, NetworkPolicies, collector placement, no Secrets).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]

from services.broker.render import render_config
from services.broker.settings import BrokerSettings
from tests.support.servers import which_or_skip

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K3S = DEPLOY / "k3s"
OVERLAYS = sorted(p.name for p in (K3S / "overlays").iterdir() if p.is_dir())
#: The k3s release the manifests target (kubectl here is 1.32 as well).
K8S_VERSION = "1.32.0"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "CronJob"}
BIN = REPO / ".venv" / "bin"


def _tool(name: str) -> str:
    local = BIN / name
    return str(local) if local.exists() else which_or_skip(name)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def render(target: Path) -> list[dict[str, Any]]:
    out = _run([_tool("kubectl"), "kustomize", str(target)])
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


# ---------------------------------------------------------------------------- k3s
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_validates_strictly(overlay: str, tmp_path: Path) -> None:
    docs = render(K3S / "overlays" / overlay)
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    result = _run([_tool("kubernetes-validate"), "-k", K8S_VERSION, "--strict", "--quiet",
                   str(manifest)])
    assert result.returncode == 0, result.stdout + result.stderr
    kinds: dict[str, int] = {}
    for d in docs:
        kinds[d["kind"]] = kinds.get(d["kind"], 0) + 1
    print(f"{overlay}: {len(docs)} objects {kinds}")


def test_strict_validation_catches_a_typo(tmp_path: Path) -> None:
    # So a green run above means something: an unknown field fails the same check.
    docs = render(K3S / "overlays" / "single-node")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    _pod_spec(deployment)["containers"][0]["readOnlyRootFileSystem"] = True  # wrong case
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(deployment))
    result = _run([_tool("kubernetes-validate"), "-k", K8S_VERSION, "--strict", str(bad)])
    assert result.returncode != 0
    assert "readOnlyRootFileSystem" in result.stdout + result.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_follows_the_pod_policy(overlay: str) -> None:
    docs = render(K3S / "overlays" / overlay)
    problems: list[str] = []
    edgeloop = [d for d in docs if d["metadata"].get("namespace") == "edgeloop"]
    assert not [d for d in docs if d["kind"] == "Secret"], "Secrets must never be committed"
    policies = [d for d in edgeloop if d["kind"] == "NetworkPolicy"]
    protected = {p["spec"]["podSelector"].get("matchLabels", {}).get(
        "app.kubernetes.io/name") for p in policies}
    assert any(p["spec"]["podSelector"] == {} for p in policies), "no default deny"
    for d in (x for x in edgeloop if x["kind"] in WORKLOADS):
        name = f"{d['kind']}/{d['metadata']['name']}"
        labels = d["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/component",
                    "app.kubernetes.io/part-of", "app.kubernetes.io/version"):
            if key not in labels:
                problems.append(f"{name}: label {key}")
        pod = _pod_spec(d)
        if pod.get("securityContext", {}).get("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot")
        for c in pod["containers"]:
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}/{c['name']}: readOnlyRootFilesystem")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}/{c['name']}: allowPrivilegeEscalation")
            res = c.get("resources", {})
            if not {"cpu", "memory"} <= set(res.get("requests", {})) or not {
                    "cpu", "memory"} <= set(res.get("limits", {})):
                problems.append(f"{name}/{c['name']}: requests and limits")
            if d["kind"] != "CronJob" and not ("livenessProbe" in c and "readinessProbe" in c):
                problems.append(f"{name}/{c['name']}: probes")
        if d["kind"] != "CronJob" and labels["app.kubernetes.io/name"] not in protected:
            problems.append(f"{name}: no NetworkPolicy")
    assert not problems, "\n".join(problems)


def test_placement_per_overlay() -> None:
    pi = {(d["kind"], d["metadata"]["name"]): d for d in render(K3S / "overlays" / "pi-cluster")}
    one = {(d["kind"], d["metadata"]["name"]): d
           for d in render(K3S / "overlays" / "single-node")}
    for docs in (pi, one):
        collector = _pod_spec(docs["DaemonSet", "collector"])
        # Only on nodes with a board, with the device granted by the device plugin and
        # no privileges or hostPath.
        assert collector["nodeSelector"]["edgeloop.io/serial-device"] == "true"
        container = collector["containers"][0]
        assert container["resources"]["limits"]["squat.ai/serial"] == 1
        assert not container["securityContext"].get("privileged")
        assert not [v for v in collector["volumes"] if "hostPath" in v]
        assert 20 in collector["securityContext"]["supplementalGroups"]
    assert pi["Deployment", "ingest"]["spec"]["replicas"] == 2
    assert one["Deployment", "ingest"]["spec"]["replicas"] == 1
    inference = _pod_spec(pi["DaemonSet", "inference"])["nodeSelector"]
    assert inference == {"edgeloop.io/role": "edge", "kubernetes.io/arch": "arm64"}
    for kind, name in [("StatefulSet", "influxdb"), ("Deployment", "registry"),
                       ("Deployment", "mosquitto"), ("CronJob", "trainer")]:
        assert _pod_spec(pi[kind, name])["nodeSelector"]["edgeloop.io/role"] == "cloud"
    assert "nodeSelector" not in _pod_spec(one["StatefulSet", "influxdb"])


def test_mosquitto_configmap_is_what_the_renderer_writes() -> None:
    committed = (K3S / "base" / "mosquitto.conf").read_text()
    assert committed == render_config(BrokerSettings()), (
        "regenerate: edgeloop broker render --out /tmp/x && cp /tmp/x/mosquitto.conf "
        "deploy/k3s/base/")


# ---------------------------------------------------------------------------- images
DOCKERFILES = sorted((REPO / "services").glob("*/Dockerfile"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    result = _run([_tool("hadolint"), str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    for must in ("ARG BASE=", "HEALTHCHECK", "USER ", "ENTRYPOINT", " AS "):
        assert must in text, f"{dockerfile}: {must!r}"


def test_every_service_has_an_image_and_an_exec_entrypoint() -> None:
    names = {p.parent.name for p in DOCKERFILES}
    assert names == {"broker", "collector", "ingest", "inference", "trainer"}
    for name in names:
        entry = REPO / "services" / name / "docker-entrypoint"
        assert entry.stat().st_mode & 0o111, f"{entry} is not executable"
        assert 'exec "$@"' in entry.read_text()
        assert _run(["sh", "-n", str(entry)]).returncode == 0


# ---------------------------------------------------------------------------- monitoring
def test_promtool_checks_rules_and_the_compose_config(tmp_path: Path) -> None:
    promtool = which_or_skip("promtool")
    rules = DEPLOY / "monitoring" / "prometheus" / "edgeloop.rules.yml"
    result = _run([promtool, "check", "rules", str(rules)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    # The compose config names its rule files by their path in the container.
    config = tmp_path / "prometheus.yml"
    (tmp_path / "rules").mkdir()
    shutil.copy(rules, tmp_path / "rules" / rules.name)
    config.write_text((DEPLOY / "monitoring" / "prometheus" / "compose.yml").read_text()
                      .replace("/etc/prometheus/rules/", f"{tmp_path}/rules/"))
    result = _run([promtool, "check", "config", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr
    # Debian's promtool is built without Kubernetes service discovery, so the k3s config
    # is checked as YAML here; the upstream prom/prometheus image has it.
    k8s = yaml.safe_load((DEPLOY / "monitoring" / "prometheus" / "k8s.yml").read_text())
    assert k8s["scrape_configs"][0]["kubernetes_sd_configs"][0]["role"] == "pod"


def test_dashboards_use_the_provisioned_datasources() -> None:
    provisioned = yaml.safe_load((DEPLOY / "monitoring" / "grafana" / "provisioning"
                                  / "datasources" / "edgeloop.yml").read_text())
    uids = {d["uid"] for d in provisioned["datasources"]}
    seen_uids = set()
    for path in sorted((DEPLOY / "monitoring" / "grafana" / "dashboards").glob("*.json")):
        doc = json.loads(path.read_text())
        assert doc["uid"] not in seen_uids
        seen_uids.add(doc["uid"])
        ids = [p["id"] for p in doc["panels"]]
        assert len(ids) == len(set(ids)), path
        for panel in doc["panels"]:
            assert panel["datasource"]["uid"] in uids, (path.name, panel["title"])
    assert seen_uids == {"edgeloop-fleet", "edgeloop-inference", "edgeloop-model-quality",
                         "edgeloop-raw-readings"}


# ---------------------------------------------------------------------------- compose
def test_compose_file_runs_the_stack_with_secrets_from_files() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"mosquitto", "influxdb", "ingest", "registry", "inference", "collector",
            "prometheus", "grafana", "trainer"} <= set(services)
    assert services["trainer"]["profiles"] == ["train"]
    assert services["collector"]["devices"][0].endswith(":/dev/ttyACM0")
    assert not services["collector"].get("privileged")
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, name
        assert secret["file"].startswith("./secrets/")
    for name, svc in services.items():
        for key in svc.get("environment", {}):
            # Secrets are passed as *_FILE paths to mounted secret files, never as values.
            if any(w in key.upper() for w in ("PASSWORD", "TOKEN", "SECRET")):
                assert key.upper().endswith("_FILE"), f"{name}: {key} holds a secret value"
    for name in ("ingest", "registry", "inference", "collector"):
        env = services[name]["environment"]
        assert env["EDGELOOP_MQTT__PASSWORD_FILE"].startswith("/run/secrets/")
        assert services[name]["build"]["dockerfile"].startswith("services/")
    for mount in services["grafana"]["volumes"] + services["prometheus"]["volumes"]:
        source = mount.split(":")[0]
        if source.startswith("./"):
            assert (DEPLOY / source).exists(), source
    make_secrets = (DEPLOY / "make-secrets.sh").read_text()
    for name, secret in compose["secrets"].items():
        rel = secret["file"].removeprefix("./secrets/")
        assert rel.split("/")[0] in make_secrets, f"make-secrets.sh does not make {name}"
