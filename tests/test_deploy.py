"""The Kubernetes manifests of deploy/: rendered for every values case, checked against the Kubernetes schemas and
KEDA's ScaledObject fields, their wiring checked object against object, and their pods' commands run for real
(gateway, one reader, the reader probe) against the session's redis-server."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from liftoff.core.settings import load_settings

from support.servers import free_ports, wait_for

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"

from render import dump  # noqa: E402

from liftoff_deploy.config_file import CONFIG_DIR  # noqa: E402
from liftoff_deploy.objects import GPU_RESOURCE, PROBE_SOURCE, render  # noqa: E402
from liftoff_deploy.validate import problems  # noqa: E402
from liftoff_deploy.values import ValuesError, load_values  # noqa: E402

Obj = dict[str, Any]
CASES = {"cpu": [], "gpu": [DEPLOY / "values-gpu.yaml"]}
SECRETS = {("liftoff-api-keys", "admin"): "admin-key-for-tests"}
NODE = "gpu-node-7"


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    return request.param, render(load_values(CASES[request.param]))


def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


def container(deployment: Obj) -> Obj:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def config_map(objects: list[Obj]) -> Obj:
    (only,) = of_kind(objects, "ConfigMap")
    return only


def group_of(reader: Obj) -> str:
    import json

    command = container(reader)["command"]
    return str(json.loads(command[command.index("--config-json") + 1])["consumer_group"])


# --- schemas --------------------------------------------------------------------------------------------------------
def test_every_object_passes_the_kubernetes_and_keda_schemas(case: tuple[str, list[Obj]]) -> None:
    _, objects = case
    assert [p for o in objects for p in problems(o)] == []
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(["ConfigMap", *["Service"] * 6, *["Deployment"] * 3, *["PodDisruptionBudget"] * 3,
                            *["ScaledObject"] * 2])


def test_the_checks_find_what_is_wrong(case: tuple[str, list[Obj]]) -> None:
    import copy

    _, objects = case
    deployment = copy.deepcopy(named(objects, "Deployment", "liftoff-gateway"))
    container(deployment)["livenessProbe"]["httpGet"]["paht"] = "/health"
    assert any("'paht' was unexpected" in p for p in problems(deployment))
    scaled = copy.deepcopy(of_kind(objects, "ScaledObject")[0])
    trigger = scaled["spec"]["triggers"][0]
    trigger["metadata"]["targetValue"] = 16
    trigger["metadata"]["valueLocaton"] = "backlog"
    scaled["spec"]["minReplicaCount"] = 9
    scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["policies"][0]["kind"] = "x"
    found = "\n".join(problems(scaled))
    assert "16 is not of type 'string'" in found
    assert "'valueLocaton' was unexpected" in found
    assert "minReplicaCount must be less than or equal to maxReplicaCount" in found
    assert "'kind' was unexpected" in found


def test_the_committed_renders_are_current(case: tuple[str, list[Obj]]) -> None:
    name, objects = case
    overlays = [str(p.relative_to(DEPLOY.parent)) for p in CASES[name]]
    assert (DEPLOY / "rendered" / f"{name}.yaml").read_text() == dump(objects, overlays), \
        f"run: python deploy/render.py {' '.join(f'-f {o}' for o in overlays)} -o deploy/rendered/{name}.yaml"


# --- wiring ---------------------------------------------------------------------------------------------------------
def test_every_service_port_is_a_gateway_container_port(case: tuple[str, list[Obj]]) -> None:
    _, objects = case
    gateway = named(objects, "Deployment", "liftoff-gateway")
    ports = {p["name"]: p["containerPort"] for p in container(gateway)["ports"]}
    assert set(ports) == {"inference", "management", "vertex", "openai", "snowflake", "internal"}
    pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    for service in of_kind(objects, "Service"):
        (port,) = service["spec"]["ports"]
        assert ports[port["targetPort"]] == port["port"], service["metadata"]["name"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
    assert sorted(p for s in of_kind(objects, "Service") for p in [s["spec"]["ports"][0]["port"]]) == \
        sorted(ports.values())


def test_ports_and_settings_come_from_the_configmap(case: tuple[str, list[Obj]], tmp_path: Path) -> None:
    _, objects = case
    path = tmp_path / "config.toml"
    path.write_text(config_map(objects)["data"]["config.toml"])
    settings = load_settings(path)
    gateway = container(named(objects, "Deployment", "liftoff-gateway"))
    assert {p["name"]: p["containerPort"] for p in gateway["ports"]} == settings.ports()
    assert settings.readers == []  # the gateway pods serve no reader: readers have Deployments of their own
    assert settings.shutdown_grace_s >= settings.request_timeout_s


def test_probes(case: tuple[str, list[Obj]]) -> None:
    _, objects = case
    gateway = container(named(objects, "Deployment", "liftoff-gateway"))
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert gateway[kind]["httpGet"] == {"path": "/health", "port": "management"}
    assert config_map(objects)["data"]["reader_probe.py"] == PROBE_SOURCE.read_text()
    for reader in of_kind(objects, "Deployment")[1:]:
        kinds = ("startupProbe", "livenessProbe", "readinessProbe")
        probe = {k: container(reader)[k]["exec"]["command"] for k in kinds}
        script = f"{CONFIG_DIR}/reader_probe.py"
        assert probe["readinessProbe"] == ["python", script, "--state", "live"]
        assert probe["startupProbe"] == ["python", script, "--state", "loading"]
        assert probe["livenessProbe"] == ["python", script, "--state", "loading", "--pass-when-unreachable"]
        mounts = {m["name"]: m["mountPath"] for m in container(reader)["volumeMounts"]}
        assert mounts["config"] == CONFIG_DIR


def test_each_reader_deployment_is_the_target_of_its_groups_scaled_object(case: tuple[str, list[Obj]]) -> None:
    from starlette.routing import Match

    from liftoff.gateway.internal import internal_routes

    _, objects = case
    internal = named(objects, "Service", "liftoff-internal")
    routes = internal_routes(None)  # type: ignore[arg-type]  # the routes' paths only; no request is served
    readers = {group_of(d): d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] != "liftoff-gateway"}
    assert sorted(readers) == ["embed", "primary"]
    for scaled in of_kind(objects, "ScaledObject"):
        target = scaled["spec"]["scaleTargetRef"]
        group = scaled["metadata"]["labels"]["liftoff/consumer-group"]
        assert (target["kind"], target["name"]) == ("Deployment", readers[group]["metadata"]["name"])
        assert "replicas" not in readers[group]["spec"]  # the ScaledObject's HPA owns the count
        (trigger,) = scaled["spec"]["triggers"]
        url = httpx.URL(trigger["metadata"]["url"])
        assert url.host == f"liftoff-internal.{internal['metadata']['namespace']}.svc"
        assert url.port == internal["spec"]["ports"][0]["port"]
        scope = {"type": "http", "path": url.path, "method": "GET"}
        matched = [r for r in routes if r.matches(scope)[0] is Match.FULL]
        assert [r.path for r in matched] == ["/consumer_groups/{group}"]
        assert matched[0].matches(scope)[1]["path_params"] == {"group": group}
        assert trigger["metadata"]["valueLocation"] == "backlog"


def test_prestop_and_grace_period_cover_request_timeout(case: tuple[str, list[Obj]], tmp_path: Path) -> None:
    _, objects = case
    path = tmp_path / "config.toml"
    path.write_text(config_map(objects)["data"]["config.toml"])
    settings = load_settings(path)
    gateway = named(objects, "Deployment", "liftoff-gateway")
    assert container(gateway)["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    sleep = int(container(gateway)["lifecycle"]["preStop"]["exec"]["command"][1])
    assert sleep > 0
    grace = gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= sleep + settings.shutdown_grace_s + 5  # the supervisor's margin over gunicorn's
    for reader in of_kind(objects, "Deployment")[1:]:
        assert reader["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > settings.request_timeout_s
    with pytest.raises(ValuesError, match=r"config.shutdown_grace_s.*request_timeout_s"):
        render(load_values(CASES[case[0]], extra={"config": {"shutdown_grace_s": 30.0}}))


def test_each_disruption_budget_selects_the_pods_of_one_deployment(case: tuple[str, list[Obj]]) -> None:
    _, objects = case
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"] for d in of_kind(objects, "Deployment")}
    for budget in of_kind(objects, "PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        assert [n for n, labels in pods.items() if selector.items() <= labels.items()] == [budget["metadata"]["name"]]
    for deployment in of_kind(objects, "Deployment"):
        assert deployment["spec"]["selector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]


def test_pods_link_no_services_and_take_secrets_from_secrets(case: tuple[str, list[Obj]]) -> None:
    _, objects = case
    for deployment in of_kind(objects, "Deployment"):
        assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False
    env = {e["name"]: e for e in container(named(objects, "Deployment", "liftoff-gateway"))["env"]}
    assert env["LIFTOFF_ADMIN_API_KEY"]["valueFrom"] == {"secretKeyRef": {"name": "liftoff-api-keys", "key": "admin"}}
    with_password = render(load_values(CASES[case[0]], extra={"redis": {
        "url": "rediss://liftoff@valkey.cache.svc:6380/2", "passwordSecret": {"name": "valkey", "key": "password"}}}))
    for deployment in of_kind(with_password, "Deployment"):
        names = [e["name"] for e in container(deployment)["env"]]
        url = next(e["value"] for e in container(deployment)["env"] if e["name"] == "LIFTOFF_REDIS_URL")
        assert url == "rediss://liftoff:$(REDIS_PASSWORD)@valkey.cache.svc:6380/2"
        assert names.index("REDIS_PASSWORD") < names.index("LIFTOFF_REDIS_URL")  # defined before it expands
    from redis.connection import parse_url

    given = parse_url(expand(url, {"REDIS_PASSWORD": "p%40ss%2Fw"}))  # kept percent-encoded in its Secret
    assert (given["username"], given["password"], given["host"], given["db"]) == ("liftoff", "p@ss/w",
                                                                                  "valkey.cache.svc", 2)


def test_gpu_readers_get_gpus_and_cpu_readers_none(case: tuple[str, list[Obj]]) -> None:
    import json

    name, objects = case
    for reader in of_kind(objects, "Deployment")[1:]:
        c = container(reader)
        config = json.loads(c["command"][c["command"].index("--config-json") + 1])
        gpus = c.get("resources", {}).get("limits", {}).get(GPU_RESOURCE)
        on_gpu = name == "gpu" and config["consumer_group"] == "primary"
        assert (gpus, config["device"]) == ((1, "cuda") if on_gpu else (None, "cpu"))
        pod = reader["spec"]["template"]["spec"]
        assert ("tolerations" in pod) is on_gpu
        cpus = c["resources"].get("limits", {}).get("cpu") or c["resources"]["requests"]["cpu"]
        assert config["cpu_threads"] == int(cpus)  # the pod's CPUs, not the node's
        rolling = reader["spec"]["strategy"]["rollingUpdate"]
        assert rolling == ({"maxSurge": 0, "maxUnavailable": 1} if on_gpu else {"maxSurge": 1, "maxUnavailable": 0})


# --- refusals -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "message"), [
    ({"gateway": {"replica": 3}}, "invalid value 'gateway.replica': unknown key"),
    ({"config": {"redis_url": "redis://x"}}, "invalid value 'config.redis_url': set redis.url"),
    ({"config": {"role": "all"}}, "invalid value 'config.role': each Deployment sets its pods' role"),
    ({"config": {"request_timout_s": 5}}, "invalid setting 'request_timout_s': unknown setting"),
    ({"redis": {"url": "redis://:hunter2@valkey:6379"}}, "redis.url must not hold a password"),
    ({"redis": {"url": "unix:///tmp/redis.sock"}}, "must be a redis:// or rediss:// URL"),
    ({"apiKeys": {"admin": None}}, "invalid value 'apiKeys.admin': without a management API key"),
    ({"groups": {"primary": {"reader": {"access_token": "hf_x"}}}}, "'groups.primary.reader.access_token'"),
    ({"groups": {"primary": {"reader": {"device": "cuda"}}}}, "'groups.primary.reader.device': 'cuda' needs gpus"),
    ({"groups": {"primary": {"reader": {"max_batch_size": 0}}}}, "max_batch_size must be between 1 and 4096"),
    ({"groups": {"embed": {"autoscaling": {"minReplicas": 0}}}}, "'groups.embed.autoscaling.minReplicas': 0 readers"),
    ({"groups": {"my_group": {}}}, "consumer group 'my_group' must be a DNS label"),
    ({"groups": {"embed": {"resources": {"requests": {"cpu": "two"}}}}}, "'groups.embed.resources.requests.cpu'"),
    ({"gateway": {"services": {"internal": {"type": "LoadBalancer"}}}}, "internal port's Service stays"),
])
def test_values_that_cannot_work_are_refused_by_name(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValuesError, match=re.escape(message)):
        render(load_values(extra=extra))


def test_cpu_threads_given_stay_and_millicores_round_down_to_one() -> None:
    import json

    objects = render(load_values(extra={"groups": {"primary": {"reader": {"cpu_threads": 3}},
                                                   "embed": {"resources": {"requests": {"cpu": "500m"}}}}}))
    given = {group_of(d): json.loads(container(d)["command"][3]) for d in of_kind(objects, "Deployment")[1:]}
    assert (given["primary"]["cpu_threads"], given["embed"]["cpu_threads"]) == (3, 1)


def test_a_reserved_group_may_scale_to_zero() -> None:
    objects = render(load_values(extra={"groups": {"primary": {"autoscaling": {"minReplicas": 0}}}}))
    assert named(objects, "ScaledObject", "liftoff-reader-primary")["spec"]["minReplicaCount"] == 0
    assert [p for o in objects for p in problems(o)] == []


# --- the pods' commands, run -----------------------------------------------------------------------------------------
def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in commands and env values (an undefined variable stays as written)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


def pod_env(spec: Obj, pod_name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in spec["env"]:
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        elif "secretKeyRef" in item["valueFrom"]:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = SECRETS[(ref["name"], ref["key"])]
        else:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            env[item["name"]] = {"metadata.name": pod_name, "spec.nodeName": NODE}[field]
    return env


def test_the_rendered_pods_serve_and_drain(tmp_path: Path, redis_url: str, namespace: str) -> None:
    import os

    objects = render(load_values(extra={"groups": {"embed": None, "primary": {
        "reader": {"model_name": "echo", "fallback_model_name": None, "echo_token_delay_ms": 100}}}}))
    mount = tmp_path / "etc-liftoff"  # the ConfigMap, as its volume shows it
    mount.mkdir()
    for name, text in config_map(objects)["data"].items():
        (mount / name).write_text(text)
    ports = dict(zip(["inference", "management", "vertex", "openai", "snowflake", "internal"], free_ports(6),
                     strict=True))
    # What stands in for the pod's network and volumes here: loopback ports, a temporary state_dir, the test Redis.
    local = {"LIFTOFF_CONFIG": str(mount / "config.toml"), "LIFTOFF_REDIS_URL": redis_url,
             "LIFTOFF_REDIS_NAMESPACE": namespace, "LIFTOFF_HOST": "127.0.0.1",
             "LIFTOFF_STATE_DIR": str(tmp_path / "state"),
             **{f"LIFTOFF_{'PORT' if n == 'inference' else n.upper() + '_PORT'}": str(p) for n, p in ports.items()}}
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIFTOFF_")}
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base['PATH']}"

    def start(spec: Obj, pod: str, log: str) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
        env = {**base, **pod_env(spec, pod), **local}
        argv = [expand(a, env) for a in spec["command"]]
        out = open(tmp_path / log, "wb")
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True), env

    def probe(spec: Obj, kind: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        argv = [a.replace(CONFIG_DIR, str(mount)) for a in spec[kind]["exec"]["command"]]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)

    gateway_spec = container(named(objects, "Deployment", "liftoff-gateway"))
    reader_spec = container(named(objects, "Deployment", "liftoff-reader-primary"))
    gateway, _ = start(gateway_spec, "liftoff-gateway-6d4cf-x2x7q", "gateway.log")
    reader, reader_env = start(reader_spec, "liftoff-reader-primary-5f9b8-k8j2m", "reader.log")
    try:
        http = gateway_spec["livenessProbe"]["httpGet"]
        health = f"http://127.0.0.1:{ports[http['port']]}{http['path']}"
        wait_for(lambda: httpx.get(health).status_code == 200, 60, "the gateway's liveness path")
        wait_for(lambda: probe(reader_spec, "readinessProbe", reader_env).returncode == 0, 60, "the reader ready")
        assert probe(reader_spec, "livenessProbe", reader_env).stdout.strip() == \
            "reader liftoff-reader-primary-5f9b8-k8j2m is live"
        management = f"http://127.0.0.1:{ports['management']}"
        admin = {"Authorization": f"Bearer {SECRETS[('liftoff-api-keys', 'admin')]}"}
        assert httpx.get(f"{management}/reader_groups").status_code == 401  # the key from its Secret is in force
        listed = httpx.get(f"{management}/reader_groups", headers=admin).json()["primary"]
        assert [(r["reader_id"], r["hostname"]) for r in listed] == [("liftoff-reader-primary-5f9b8-k8j2m", NODE)]
        assert httpx.post(f"{management}/reader", headers=admin, json={"model_name": "echo"}).status_code == 409
        trigger = named(objects, "ScaledObject", "liftoff-reader-primary")["spec"]["triggers"][0]["metadata"]
        backlog = httpx.URL(trigger["url"]).copy_with(host="127.0.0.1", port=ports["internal"])
        assert httpx.get(backlog).json()[trigger["valueLocation"]] == 0
        # A node drain: both pods get SIGTERM while a request is in flight; it finishes, then both exit 0.
        words = " ".join(f"w{i}" for i in range(20))  # 2 s of tokens at 100 ms each
        answers: list[httpx.Response] = []
        inference = f"http://127.0.0.1:{ports['inference']}/generate"
        request = threading.Thread(target=lambda: answers.append(httpx.post(inference, json={"text": words},
                                                                            timeout=60)))
        request.start()
        wait_for(lambda: httpx.get(backlog).json()[trigger["valueLocation"]] == 1, 10, "the request in progress")
        reader.send_signal(signal.SIGTERM)
        gateway.send_signal(signal.SIGTERM)
        request.join(60)
        assert answers[0].status_code == 200 and answers[0].json() == {"text": words}
        assert (reader.wait(60), gateway.wait(60)) == (0, 0)
        gone = probe(reader_spec, "readinessProbe", reader_env)
        assert (gone.returncode, gone.stdout.strip()) == (1, "reader liftoff-reader-primary-5f9b8-k8j2m is not "
                                                               "registered")
        unreachable = {**reader_env, "LIFTOFF_REDIS_URL": f"redis://127.0.0.1:{free_ports(1)[0]}/0"}
        assert probe(reader_spec, "readinessProbe", unreachable).returncode == 1
        assert probe(reader_spec, "livenessProbe", unreachable).returncode == 0  # restarting cannot bring Redis back
    finally:
        for proc in (reader, gateway):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
