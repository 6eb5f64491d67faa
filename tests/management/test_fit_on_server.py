"""The fit engine on a live management port, polled the way a scheduler polls it."""

from __future__ import annotations

import httpx

from support.servers import Server


def test_scheduler_polling_loop(echo_server: Server) -> None:
    with httpx.Client(base_url=echo_server.mgmt, timeout=10) as client:
        for _ in range(3):
            health = client.get("/health")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            system = client.get("/api/v1/system").json()
            assert system["system"]["has_gpu"] is False
            top = client.get("/api/v1/models/top", params={"use_case": "embedding"}).json()
            assert 0 < top["returned_models"] <= 5
            assert all(m["fit_level"] != "too_tight" for m in top["models"])
        bad = client.get("/api/v1/models", params={"min_fit": "great"})
        assert bad.status_code == 400
        assert bad.json() == {"error": "invalid min_fit value: use perfect|good|marginal|too_tight"}
        assert client.get("/healthz").status_code == 200  # readiness stays where it was
