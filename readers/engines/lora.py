"""LoRA adapters on a generation reader: loaded with peft into the model's own layers, chosen per token.

peft's mixed-adapter batches (`adapter_names`) choose one adapter per batch row, but the scheduler's flat forward
lays many rows end to end in one batch row (paged_forward), so here the adapter is chosen per token. peft injects
each adapter and loads its weights (its LoRA layers hold every adapter's A, B and scaling, as peft reads them from
the adapter's config), with peft's own LoRA computation switched off; a forward hook on each LoRA layer then adds
B(A(x)) * scaling to the outputs of the tokens routed to each adapter (`route`, set before every forward). The base
weights are read once for every row of the batch; an adapter costs two thin matmuls per layer over its own tokens.

Attaching and detaching change the model's modules, so once the scheduler runs they happen on its thread, between
forwards (`generation_batch.Scheduler.call`); reading an adapter's files (`read`) may happen anywhere.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import SecretStr

from readers.engines.base import EngineLoadError, EngineRequestError
from readers.models import resolve_model

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Adapter:
    name: str
    source: str
    path: str
    rank: int
    alpha: float
    target_modules: list[str]
    parameters: int
    bytes: int
    root: bytes  # the first prefix-cache key of its rows' chains: KV is never shared across adapters

    def view(self) -> dict[str, Any]:
        """What /status and /config show."""
        return {"name": self.name, "source": self.source, "rank": self.rank, "alpha": self.alpha,
                "target_modules": self.target_modules, "parameters": self.parameters, "bytes": self.bytes}


@dataclass(frozen=True, slots=True)
class AdapterFiles:
    name: str
    source: str
    path: Path
    config: Any  # peft.LoraConfig
    weights: dict[str, torch.Tensor]


class LoraAdapters:
    def __init__(self, model: Any, repository_path: str | Path, access_token: SecretStr | None = None) -> None:
        self.model = model
        self.repository_path = repository_path
        self.access_token = access_token
        self.loaded: dict[str, Adapter] = {}
        self._hooked: set[int] = set()
        self._tokens = 0
        self._groups: list[tuple[str, torch.Tensor | None]] = []  # this forward's (adapter, its tokens; None: all)
        self._device = next(model.parameters()).device

    # --- loading ----------------------------------------------------------------------------------------------------
    def read(self, name: str, source: str) -> AdapterFiles:
        """The adapter's config and weights, resolved like a model name (a download for a hub id, which fails in one
        line when downloads are off); EngineLoadError saying what is wrong."""
        from peft import LoraConfig, PeftConfig
        from peft.utils import load_peft_weights

        path = resolve_model(source, self.repository_path, self.access_token)
        where = f"LoRA adapter {name!r} ({source!r})"
        if not (path / "adapter_config.json").is_file():
            raise EngineLoadError(f"{where}: {str(path)!r} has no adapter_config.json (a peft adapter directory "
                                  "holds adapter_config.json and adapter_model.safetensors)")
        try:
            config = PeftConfig.from_pretrained(str(path))
        except (OSError, ValueError, TypeError) as exc:
            raise EngineLoadError(f"{where}: adapter_config.json could not be read: {exc}") from exc
        if not isinstance(config, LoraConfig):
            raise EngineLoadError(f"{where}: a {config.peft_type} adapter; this reader serves LoRA adapters only")
        unsupported = [f for f, on in (("use_dora", config.use_dora), ("modules_to_save", config.modules_to_save),
                                       ("lora_bias", getattr(config, "lora_bias", False)),
                                       ("bias", config.bias != "none")) if on]
        if unsupported:
            raise EngineLoadError(f"{where}: {', '.join(unsupported)} is set; adapters mixed in one batch here are "
                                  "plain LoRA (A and B matrices on linear layers) only")
        try:
            weights = load_peft_weights(str(path), device=str(self._device))
        except (OSError, ValueError, RuntimeError) as exc:
            raise EngineLoadError(f"{where}: its weights could not be read: {exc}") from exc
        return AdapterFiles(name, source, path, config, weights)

    def attach(self, files: AdapterFiles) -> Adapter:
        """Inject `files` into the model under its name (on the scheduler's thread once it runs)."""
        from peft import inject_adapter_in_model, set_peft_model_state_dict
        from peft.tuners.lora import LoraLayer

        name, where = files.name, f"LoRA adapter {files.name!r} ({files.source!r})"
        if name in self.loaded:
            raise EngineRequestError(409, f"a LoRA adapter named {name!r} is already loaded")
        config = files.config
        config.inference_mode = True
        try:
            with warnings.catch_warnings():  # peft warns that a second adapter joins the first: that is the point
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                inject_adapter_in_model(config, self.model, adapter_name=name)
            weights = {k.removeprefix("base_model.model."): v for k, v in files.weights.items()}
            result = set_peft_model_state_dict(self.model, weights, adapter_name=name)
        except (ValueError, RuntimeError, KeyError, TypeError) as exc:
            self._drop(name)
            raise EngineLoadError(f"{where} does not fit this model: {exc}") from exc
        layers = [(n, m) for n, m in self.model.named_modules() if isinstance(m, LoraLayer) and name in m.lora_A]
        missing = [k for k in result.missing_keys if f".{name}." in k]
        problem = ""
        if result.unexpected_keys or missing:
            problem = f"its weights do not match the layers it targets (unexpected {result.unexpected_keys[:3]}, " \
                      f"missing {missing[:3]})"
        elif not layers:
            problem = "it targets no layer of this model"
        elif any(not isinstance(m.get_base_layer(), torch.nn.Linear) for _, m in layers):
            problem = "it adapts layers that are not linear (embeddings, convolutions); only linear layers mix"
        elif self.model.get_output_embeddings() in [m for _, m in layers]:
            problem = "it adapts the output head, which sees only the tokens whose logits are kept"
        if problem:
            self._drop(name)
            raise EngineLoadError(f"{where}: {problem}")
        parameters = nbytes = 0
        for _, module in layers:
            module.enable_adapters(False)  # peft's own pass off: the routing hook adds each token's adapter
            for part in (module.lora_A[name], module.lora_B[name]):
                for p in part.parameters():
                    p.requires_grad_(False)
                    parameters += p.numel()
                    nbytes += p.numel() * p.element_size()
            if id(module) not in self._hooked:
                module.register_forward_hook(self._hook)
                self._hooked.add(id(module))
        targets = sorted({n.rsplit(".", 1)[-1] for n, _ in layers})
        adapter = Adapter(name, files.source, str(files.path), int(config.r), float(config.lora_alpha), targets,
                          parameters, nbytes, hashlib.blake2b(f"lora:{name}:{uuid.uuid4()}".encode(),
                                                              digest_size=16).digest())
        self.loaded[name] = adapter
        log.info("LoRA adapter %s loaded from %s: rank %d, alpha %g, %d layers (%s), %.1f MiB", name, files.path,
                 adapter.rank, adapter.alpha, len(layers), ", ".join(targets), nbytes / 2**20)
        return adapter

    def detach(self, name: str) -> None:
        """Free the adapter's weights (on the scheduler's thread, once no row uses it)."""
        self.loaded.pop(name, None)
        self._drop(name)
        log.info("LoRA adapter %s removed", name)

    def _drop(self, name: str) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        for module in self.model.modules():
            if isinstance(module, BaseTunerLayer) and name in getattr(module, "lora_A", {}):
                with warnings.catch_warnings():  # that the deleted adapter was peft's active one: none is used here
                    warnings.simplefilter("ignore")
                    module.delete_adapter(name)
                module.enable_adapters(False)
        configs = getattr(self.model, "peft_config", None)
        if isinstance(configs, dict):
            configs.pop(name, None)

    def views(self) -> list[dict[str, Any]]:
        return [a.view() for a in self.loaded.values()]

    # --- routing ----------------------------------------------------------------------------------------------------
    def route(self, spans: list[tuple[str | None, int]]) -> None:
        """The next forward's tokens, in order, as (adapter or None for the base model, how many tokens)."""
        if not self.loaded or all(name is None for name, _ in spans):
            self._groups = []
            return
        total = sum(n for _, n in spans)
        positions: dict[str, list[torch.Tensor]] = {}
        at = 0
        for name, n in spans:
            if name is not None:
                positions.setdefault(name, []).append(torch.arange(at, at + n))
            at += n
        groups: list[tuple[str, torch.Tensor | None]] = []
        for name, parts in positions.items():
            index = torch.cat(parts) if len(parts) > 1 else parts[0]
            groups.append((name, None if len(index) == total else index.to(self._device)))
        self._tokens, self._groups = total, groups

    def _hook(self, module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        if not self._groups:
            return None
        x = args[0]
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] != self._tokens:
            raise RuntimeError(f"a LoRA layer saw {flat.shape[0]} tokens where the forward routed {self._tokens}")
        out = output.view(-1, output.shape[-1])
        for name, index in self._groups:
            if name not in module.lora_A:
                continue
            a, b = module.lora_A[name], module.lora_B[name]
            part = flat if index is None else flat.index_select(0, index)
            delta = b(a(part.to(a.weight.dtype))) * module.scaling[name]
            if index is None:
                out.add_(delta.to(out.dtype))
            else:
                out.index_add_(0, index, delta.to(out.dtype))
        return output
