"""LoRA adapters on a generation reader: loaded with peft into the model's own layers, chosen per token.

peft's mixed-adapter batches (`adapter_names`) choose one adapter per batch row, but the scheduler's flat forward
lays many rows end to end in one batch row (paged_forward), so here the adapter is chosen per token. peft injects
each adapter and loads its weights (its LoRA layers hold every adapter's A, B and scaling, as peft reads them from
the adapter's config), with peft's own LoRA computation switched off; a forward hook on each LoRA layer then adds
the adapters' part to the layer's output (`route` says, before every forward, which adapter each token takes).

Per layer the adapters' A matrices are stacked into one [sum of ranks, in] matrix and their B into one [out, sum of
ranks] (peft's parameters become views into them: no copy is kept), so a forward whose tokens mix adapters costs two
thin matmuls per layer whatever the number of adapters: x·Aᵀ for all ranks at once, a per-token mask that keeps each
token's own adapter's ranks (times its scaling), then ·Bᵀ. A forward of one adapter uses its slices alone, and a
forward of the base model alone skips the hooks' work entirely. The base weights are read once for all rows.

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

from liftoff.readers.engines.base import EngineLoadError, EngineRequestError
from liftoff.readers.engines.models import resolve_model

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
        self._layers: dict[int, Any] = {}  # id → the LoRA layers that carry the hook
        self._stacks: dict[int, _Stack] = {}
        self._tokens = 0
        self._only: str | None = None  # this forward's one adapter, when every token takes the same one
        self._onehot: torch.Tensor | None = None  # else: [tokens, adapters] 1 where a token takes that adapter
        self._masks: dict[tuple[Any, ...], torch.Tensor] = {}  # this forward's mask per stack layout
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
            if id(module) not in self._layers:
                module.register_forward_hook(self._hook)
                self._layers[id(module)] = module
        targets = sorted({n.rsplit(".", 1)[-1] for n, _ in layers})
        adapter = Adapter(name, files.source, str(files.path), int(config.r), float(config.lora_alpha), targets,
                          parameters, nbytes, hashlib.blake2b(f"lora:{name}:{uuid.uuid4()}".encode(),
                                                              digest_size=16).digest())
        self.loaded[name] = adapter
        self._restack()
        log.info("LoRA adapter %s loaded from %s: rank %d, alpha %g, %d layers (%s), %.1f MiB", name, files.path,
                 adapter.rank, adapter.alpha, len(layers), ", ".join(targets), nbytes / 2**20)
        return adapter

    def detach(self, name: str) -> None:
        """Free the adapter's weights (on the scheduler's thread, once no row uses it)."""
        self.loaded.pop(name, None)
        self._drop(name)
        self._restack()
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
        return [a.view() for a in list(self.loaded.values())]  # read off the scheduler's thread

    def _restack(self) -> None:
        """Each hooked layer's adapters stacked (in `loaded` order), peft's parameters turned into views of them."""
        order = {name: i for i, name in enumerate(self.loaded)}
        self._stacks = {}
        for key, module in self._layers.items():
            names = [n for n in self.loaded if n in module.lora_A]
            if not names:
                continue
            a = torch.cat([module.lora_A[n].weight.data for n in names])
            b = torch.cat([module.lora_B[n].weight.data for n in names], dim=1)
            slices, at = {}, 0
            for n in names:
                rank = module.lora_A[n].weight.shape[0]
                module.lora_A[n].weight.data = a[at:at + rank]
                module.lora_B[n].weight.data = b[:, at:at + rank]
                slices[n] = (a[at:at + rank], b[:, at:at + rank], float(module.scaling[n]))
                at += rank
            layout = tuple((n, slices[n][0].shape[0], slices[n][2]) for n in names)
            column_adapter = torch.tensor([order[n] for n, r, _ in layout for _ in range(r)], device=a.device)
            column_scale = torch.tensor([s for _, r, s in layout for _ in range(r)], device=a.device, dtype=a.dtype)
            self._stacks[key] = _Stack(a, b, slices, layout, column_adapter, column_scale)

    # --- routing ----------------------------------------------------------------------------------------------------
    def route(self, spans: list[tuple[str | None, int]]) -> None:
        """The next forward's tokens, in order, as (adapter or None for the base model, how many tokens)."""
        self._only, self._onehot, self._masks = None, None, {}
        names = {name for name, _ in spans}
        if not self.loaded or names == {None}:
            self._tokens = 0
            return
        self._tokens = sum(n for _, n in spans)
        if len(names) == 1:
            self._only = next(iter(names))
            return
        order = {name: i for i, name in enumerate(self.loaded)}
        ids = torch.cat([torch.full((n,), order.get(name, -1) if name is not None else -1, dtype=torch.long)
                         for name, n in spans])
        self._onehot = (ids[:, None] == torch.arange(len(order))[None, :]).to(self._device)

    def _hook(self, module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        if not self._tokens:
            return None
        stack = self._stacks.get(id(module))
        if stack is None:
            return None
        x = args[0]
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] != self._tokens:
            raise RuntimeError(f"a LoRA layer saw {flat.shape[0]} tokens where the forward routed {self._tokens}")
        out = output.view(-1, output.shape[-1])
        if self._only is not None:
            part = stack.slices.get(self._only)
            if part is None:
                return None
            a, b, scale = part
            out.add_(torch.nn.functional.linear(torch.nn.functional.linear(flat.to(a.dtype), a) * scale, b)
                     .to(out.dtype))
            return output
        assert self._onehot is not None
        mask = self._masks.get(stack.layout)
        if mask is None:
            mask = self._onehot.index_select(1, stack.column_adapter).to(stack.a.dtype) * stack.column_scale
            self._masks[stack.layout] = mask
        hidden = torch.nn.functional.linear(flat.to(stack.a.dtype), stack.a) * mask
        out.add_(torch.nn.functional.linear(hidden, stack.b).to(out.dtype))
        return output


@dataclass(frozen=True, slots=True)
class _Stack:
    """One LoRA layer's adapters side by side: A [ranks, in], B [out, ranks], each adapter's slices and scaling,
    and for each rank column its adapter's index in `loaded` and its scaling."""

    a: torch.Tensor
    b: torch.Tensor
    slices: dict[str, tuple[torch.Tensor, torch.Tensor, float]]
    layout: tuple[tuple[str, int, float], ...]
    column_adapter: torch.Tensor
    column_scale: torch.Tensor
