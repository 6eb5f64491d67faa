"""Live deployments: consumer groups served by reader replicas the supervisor keeps and scales."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

import httpx

from support.servers import Server, ServerFactory, wait_for

API = "/api/v2/models/liveDeployments"
PREVIEW = {"preview": "true"}
RID = re.compile(r"^ri\.liftoff\.main\.live-deployment\.[0-9a-f-]{36}$")
WORDS = " ".join(f"w{i}" for i in range(9))  # ten tokens


def runtime(**overrides: Any) -> dict[str, Any]:
    return {"minReplicas": 1, "maxReplicas": 3, "cpu": 0.5, "memory": "256MiB", "threadCount": 1, **overrides}


def create(server: Server, **body: Any) -> httpx.Response:
    body.setdefault("deploymentType", {"type": "direct", "branch": "master"})
    body.setdefault("modelName", "echo")
    body.setdefault("runtimeConfiguration", runtime())
    return httpx.post(server.mgmt + API, params=PREVIEW, json=body, timeout=10)


def get(server: Server, rid: str) -> dict[str, Any]:
    r = httpx.get(f"{server.mgmt}{API}/{rid}", params=PREVIEW, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def replicas(server: Server, dep: dict[str, Any], state: str = "live") -> list[str]:
    readers = server.status()["status"][f"{state}_readers"]
    return sorted(r for r, info in readers.items() if info["consumer_groups"][0] == dep["consumerGroup"])


def assert_error(r: httpx.Response, status: int, code: str, name: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"errorCode", "errorName", "errorInstanceId", "parameters"}, body
    assert (body["errorCode"], body["errorName"]) == (code, name), body
    return body["parameters"]


def test_deployment_lifecycle(make_server: ServerFactory) -> None:
    server = make_server(readers=[], wait_healthy=False, reserved_consumers="")
    r = create(server, readerConfig={"max_batch_size": 4})
    assert r.status_code == 200, r.text
    dep = r.json()
    rid = dep["rid"]
    assert RID.match(rid) and dep["status"] == {"state": "STARTING", "isReady": False}
    assert dep["branch"] == "master" and dep["runtimeConfiguration"]["threadCount"] == 1
    assert set(dep["modelVersion"]) == {"modelRid", "modelVersionRid"}
    wait_for(lambda: get(server, rid)["status"]["isReady"], 30, "deployment ready", server)
    assert get(server, rid)["status"] == {"state": "ACTIVE", "isReady": True}
    (replica,) = replicas(server, dep)
    assert replica.startswith("ld-") and "-r" in replica
    config = httpx.get(f"{server.mgmt}/config/{replica}", timeout=5).json()
    assert config["cpu_threads"] == 1 and config["max_batch_size"] == 4 and config["model_name"] == "echo"

    # Inference: the ordinary /generate on the deployment's group, and transformJson.
    out = httpx.post(server.url + "/generate", json={"text": "hello there", "consumer_group": dep["consumerGroup"]},
                     timeout=10)
    assert out.status_code == 200 and out.json()["text"] == "hello there"
    out = httpx.post(f"{server.mgmt}{API}/{rid}/transformJson", params=PREVIEW, json={"input": {"text": "hi"}},
                     timeout=10)
    assert out.json() == {"output": {"text": "hi"}}

    # List and its filters.
    listed = httpx.get(server.mgmt + API, params=PREVIEW, timeout=5).json()["data"]
    assert [d["rid"] for d in listed] == [rid]
    model_rid = dep["modelVersion"]["modelRid"]
    by_model = httpx.get(server.mgmt + API, params={**PREVIEW, "modelRid": model_rid}, timeout=5).json()["data"]
    assert [d["rid"] for d in by_model] == [rid]
    assert httpx.get(server.mgmt + API, params={**PREVIEW, "branch": "dev"}, timeout=5).json() == {"data": []}

    # Scale to three replicas.
    r = httpx.put(f"{server.mgmt}{API}/{rid}", params=PREVIEW,
                  json={"runtimeConfiguration": runtime(minReplicas=3)}, timeout=10)
    assert r.status_code == 200 and r.json()["runtimeConfiguration"]["minReplicas"] == 3, r.text
    wait_for(lambda: len(replicas(server, dep)) == 3, 40, "three live replicas", server)
    assert get(server, rid)["status"]["state"] == "ACTIVE"

    # Disable removes the replicas and keeps the deployment.
    assert httpx.post(f"{server.mgmt}{API}/{rid}/disable", params=PREVIEW, timeout=10).status_code == 204
    wait_for(lambda: not replicas(server, dep) and not replicas(server, dep, "dead"), 30, "replicas gone", server)
    assert get(server, rid)["status"] == {"state": "DISABLED", "isReady": False}
    assert httpx.post(f"{server.mgmt}{API}/{rid}/start", params=PREVIEW, timeout=10).status_code == 204
    wait_for(lambda: len(replicas(server, dep)) == 3, 40, "replicas back", server)

    # Delete: replicas stop, the deployment is gone.
    assert httpx.delete(f"{server.mgmt}{API}/{rid}", params=PREVIEW, timeout=10).status_code == 204
    wait_for(lambda: not any(r.startswith(replica[:11]) for s in ("live", "loading", "dead")
                             for r in server.status()["status"][f"{s}_readers"]), 30, "replicas stopped", server)
    gone = httpx.get(f"{server.mgmt}{API}/{rid}", params=PREVIEW, timeout=5)
    assert assert_error(gone, 404, "NOT_FOUND", "LiveDeploymentNotFound") == {"liveDeploymentRid": rid}
    time.sleep(1.0)  # nothing brings them back
    assert not replicas(server, dep, "loading") and not replicas(server, dep)


def test_errors_use_one_envelope(make_server: ServerFactory) -> None:
    idle_server = make_server(readers=[], wait_healthy=False)
    mgmt = idle_server.mgmt
    rid = "ri.liftoff.main.live-deployment.00000000-0000-4000-8000-000000000000"
    assert_error(httpx.get(f"{mgmt}{API}/{rid}", timeout=5), 400, "INVALID_ARGUMENT", "ApiFeaturePreviewUsageOnly")
    assert_error(httpx.get(mgmt + API, timeout=5), 400, "INVALID_ARGUMENT", "ApiFeaturePreviewUsageOnly")
    params = assert_error(httpx.get(f"{mgmt}{API}/{rid}", params=PREVIEW, timeout=5), 404, "NOT_FOUND",
                          "LiveDeploymentNotFound")
    assert params == {"liveDeploymentRid": rid}
    params = assert_error(httpx.get(f"{mgmt}{API}/not-a-rid", params=PREVIEW, timeout=5), 400, "INVALID_ARGUMENT",
                          "InvalidResourceIdentifier")
    assert params == {"liveDeploymentRid": "not-a-rid"}
    other = "ri.foundry-ml-live.main.live-deployment.f351c142-0e4c-4b12-adc2-6e1539737ae9"
    assert_error(httpx.get(f"{mgmt}{API}/{other}", params=PREVIEW, timeout=5), 400, "INVALID_ARGUMENT",
                 "UnsupportedLiveDeployment")
    assert_error(create(idle_server, deploymentType={"type": "modelAdapter"}), 400, "INVALID_ARGUMENT",
                 "UnsupportedLiveDeployment")
    params = assert_error(create(idle_server, runtimeConfiguration={"minReplicas": 1}), 400, "INVALID_ARGUMENT",
                          "InvalidArgument")
    assert params["field"] == "runtimeConfiguration.maxReplicas"
    params = assert_error(create(idle_server, runtimeConfiguration=runtime(minReplicas=4)), 400, "INVALID_ARGUMENT",
                          "InvalidArgument")
    assert params["field"] == "runtimeConfiguration" and "minReplicas" in params["message"]
    params = assert_error(create(idle_server, runtimeConfiguration=runtime(cpu=4096)), 400, "INVALID_ARGUMENT",
                          "RuntimeConfigurationNotSatisfiable")
    assert params["field"] == "runtimeConfiguration.cpu"
    params = assert_error(create(idle_server, runtimeConfiguration=runtime(memory="64TiB")), 400,
                          "INVALID_ARGUMENT", "RuntimeConfigurationNotSatisfiable")
    assert params["field"] == "runtimeConfiguration.memory"
    params = assert_error(create(idle_server, runtimeConfiguration=runtime(threadCount=100_000)), 400,
                          "INVALID_ARGUMENT", "ThreadCountTooHigh")
    assert params["providedThreadCount"] == 100_000 and params["maxThreadCount"] >= 1
    params = assert_error(create(idle_server, readerConfig={"max_batch_size": 0}), 400, "INVALID_ARGUMENT",
                          "InvalidArgument")
    assert params["field"] == "readerConfig.max_batch_size"
    unknown_model = "ri.liftoff.main.model.00000000-0000-4000-8000-000000000000"
    body = {"deploymentType": {"type": "direct", "modelRid": unknown_model}, "modelName": None}
    assert_error(create(idle_server, **body), 404, "NOT_FOUND", "ModelNotFound")
    assert_error(httpx.patch(mgmt + API, params=PREVIEW, timeout=5), 405, "INVALID_ARGUMENT", "MethodNotAllowed")
    assert_error(httpx.get(f"{mgmt}{API}/{rid}/nothing", params=PREVIEW, timeout=5), 404, "NOT_FOUND", "NotFound")
    assert_error(httpx.post(mgmt + API, params=PREVIEW, content=b"{", timeout=5), 400, "INVALID_ARGUMENT",
                 "InvalidArgument")


async def fire(url: str, group: str, texts: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=len(texts))) as c:
        return await asyncio.gather(*(c.post("/generate", json={"text": t, "consumer_group": group}) for t in texts))


def test_autoscales_up_under_backlog_and_down_when_idle(make_server: ServerFactory) -> None:
    server = make_server(readers=[], wait_healthy=False, reserved_consumers="", request_timeout_s=60.0)
    scaling = {"scaleUpLoadThreshold": 0.5, "scaleUpDelay": "0.5s", "scaleDownDelay": "1s"}
    r = create(server, runtimeConfiguration=runtime(scalingConfiguration=scaling),
               readerConfig={"max_batch_size": 2, "echo_token_delay_ms": 50})
    assert r.status_code == 200, r.text
    dep = r.json()
    wait_for(lambda: get(server, dep["rid"])["status"]["isReady"], 30, "deployment ready", server)
    peak = 0
    results: list[httpx.Response] = []
    texts = [f"a{i} {WORDS}" for i in range(80)]  # 40 s of work for one replica of two slots
    worker = threading.Thread(target=lambda: results.extend(asyncio.run(fire(server.url, dep["consumerGroup"],
                                                                               texts))))
    worker.start()
    while worker.is_alive():
        peak = max(peak, len(replicas(server, dep)))
        time.sleep(0.2)
    assert [r.status_code for r in results] == [200] * 80, {r.text for r in results if r.status_code != 200}
    assert peak == 3, f"the deployment peaked at {peak} live replicas"
    wait_for(lambda: len(replicas(server, dep)) == 1, 20, "scaled back to minReplicas", server)
    assert get(server, dep["rid"])["status"] == {"state": "ACTIVE", "isReady": True}
