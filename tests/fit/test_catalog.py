"""The curated catalog, the repository scan and the overlay."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from liftoff.fit.catalog import CATEGORIES, curated_models, find_model, load_catalog, parameter_count_label
from liftoff.fit.repository import params_from_config, scan_repository

from support.fit import write_tiny_model


def test_curated_catalog_is_broad() -> None:
    models = curated_models()
    assert len(models) >= 150
    assert len({m.name.lower() for m in models}) == len(models)
    categories = Counter(m.category for m in models)
    assert set(categories) == set(CATEGORIES)
    assert all(categories[c] >= 5 for c in CATEGORIES)
    assert sum(m.is_moe for m in models) >= 10
    for m in models:
        assert m.params_b > 0 and m.context_length > 0 and m.provider
        assert not m.is_moe or (m.active_params_b and m.active_params_b < m.params_b)
        assert m.release_date is None or len(m.release_date) == 10


def test_use_case_categories() -> None:
    models = curated_models()
    assert find_model(models, "BAAI/bge-reranker-base").category == "Embedding"  # type: ignore[union-attr]
    assert find_model(models, "Qwen/QwQ-32B").category == "Reasoning"  # type: ignore[union-attr]
    assert find_model(models, "bigcode/starcoder2-7b").category == "Coding"  # type: ignore[union-attr]
    assert find_model(models, "gemma-3-27b-it").category == "Multimodal"  # type: ignore[union-attr]


def test_parameter_count_labels() -> None:
    assert parameter_count_label(0.0227) == "23M"
    assert parameter_count_label(7.0) == "7B"
    assert parameter_count_label(30.5) == "30.5B"


def test_repository_scan_counts_parameters_from_safetensors(tmp_path: Path) -> None:
    params = write_tiny_model(tmp_path / "tiny")
    write_tiny_model(tmp_path / "org" / "tiny-embedding-model", name_or_arch="BertModel")
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    specs = {s.name: s for s in scan_repository(tmp_path)}
    assert set(specs) == {"tiny", "org/tiny-embedding-model"}
    tiny = specs["tiny"]
    assert tiny.params_b == round(params / 1e9, 4) and tiny.source == "repository"
    assert (tiny.num_layers, tiny.num_kv_heads, tiny.head_dim) == (2, 2, 16)
    assert tiny.weights_gb is not None and tiny.context_length == 2048
    assert specs["org/tiny-embedding-model"].category == "Embedding"


def test_repository_model_without_weights_counts_from_config(tmp_path: Path) -> None:
    config = {"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "intermediate_size": 14336,
              "tie_word_embeddings": False, "max_position_embeddings": 131072}
    # The shapes of Llama 3.1 8B give its published 8.03 B parameters (norms aside).
    assert params_from_config(config) / 1e9 == __import__("pytest").approx(8.03, abs=0.01)
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps(config))
    (spec,) = scan_repository(tmp_path)
    assert spec.params_b == __import__("pytest").approx(8.03, abs=0.01)


def test_repository_copy_of_a_curated_model_keeps_its_metadata(tmp_path: Path) -> None:
    write_tiny_model(tmp_path / "Qwen" / "Qwen2.5-7B-Instruct")
    catalog = load_catalog(str(tmp_path), "")
    spec = find_model(catalog, "Qwen/Qwen2.5-7B-Instruct")
    assert spec is not None and spec.source == "repository" and spec.params_b < 0.01
    assert spec.release_date == "2024-09-19" and spec.category == "Chat"
    assert len(catalog) == len(curated_models())
