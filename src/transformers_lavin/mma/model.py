"""MMAModel: injects MMA adapters into a LaVIN (or any decoder-only LLM), routes them, and merges them."""

from __future__ import annotations

import logging

import torch
from peft.tuners.tuners_utils import BaseTuner, _filter_state_dict_by_key_prefixes, _get_tuner_state_dict_key_prefixes
from torch import nn

from .config import MMAConfig
from .layer import INPUT_PROJECTIONS, MMALayer
from .routing import (
    MODALITY_IDS_KWARG,
    ROUTING_KWARG,
    cached_table,
    rows_from_table,
    run_routing_pass,
    store_table,
)

logger = logging.getLogger(__name__)

MODALITIES = {"text": 0, "image": 1}


def _find_decoder(model: nn.Module) -> tuple[str, nn.Module]:
    """The decoder stack whose layers hold the LLM adapters, and its module name."""
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or not hasattr(decoder, "layers"):
        raise ValueError(
            f"MMA needs a decoder-only LLM with `get_decoder()` returning a stack of `layers`; "
            f"{type(model).__name__} has none. Use a LaVIN model or an AutoModelForCausalLM."
        )
    for name, module in model.named_modules():
        if module is decoder:
            return name, decoder
    raise ValueError("The decoder returned by get_decoder() is not a submodule of the model.")


def _is_under(key: str, prefix: str | None) -> bool:
    return prefix is not None and (prefix == "" or key == prefix or key.startswith(prefix + "."))


def _declare_new_biases(model: nn.Module) -> None:
    """
    Folding an adapter's constant term gives q/k/v (or gate/up) a bias. Give the sibling projections a zero bias and
    say so in the config, so that the merged model saves and reloads as the same architecture.
    """
    text_config = model.config.get_text_config()
    for module in model.modules():
        linears = {name: child for name, child in module.named_children() if isinstance(child, nn.Linear)}
        if not any(name in INPUT_PROJECTIONS and child.bias is not None for name, child in linears.items()):
            continue
        for flag, siblings in (("attention_bias", ("o_proj",)), ("mlp_bias", ("down_proj",))):
            present = [linears[name] for name in siblings if name in linears]
            if not present:
                continue
            for child in linears.values():
                if child.bias is None:
                    child.bias = nn.Parameter(torch.zeros(child.out_features, dtype=child.weight.dtype))
            if hasattr(text_config, flag):
                setattr(text_config, flag, True)


class MMAModel(BaseTuner):
    """
    Mixture-of-Modality Adaptation (Luo et al., 2023) as a PEFT tuner. Wraps every targeted LLM attention (and MLP,
    for `adapter_type="block"`) and every vision-tower block in an [`MMALayer`], and routes the LLM adapters exactly
    as the reference does with its modality token (see `transformers_lavin.mma.routing`).

    Example:

    ```python
    >>> import transformers_lavin
    >>> from peft import get_peft_model
    >>> model = get_peft_model(lavin_model, transformers_lavin.MMAConfig())
    >>> model.print_trainable_parameters()  # 3,781,296 at LLaMA-7B + ViT-L/14 shapes
    >>> merged = model.merge_and_unload(modality="image")  # a plain LaVIN for image prompts
    ```
    """

    prefix: str = "mma_"
    tuner_layer_cls = MMALayer
    target_module_mapping: dict[str, list[str]] = {}
    uses_shared_state = True  # a plain LLM's modality embedding lives on the tuner

    def __init__(self, model, config, adapter_name, low_cpu_mem_usage: bool = False, state_dict=None):
        self._routing_hook = None
        self._llm_layers: list[MMALayer] = []
        super().__init__(model, config, adapter_name, low_cpu_mem_usage=low_cpu_mem_usage, state_dict=state_dict)

    # ------------------------------------------------------------------------------------------------- injection
    def _prepare_adapter_config(self, peft_config: MMAConfig, model_config: dict) -> MMAConfig:
        return peft_config

    def _pre_injection_hook(self, model: nn.Module, config: MMAConfig, adapter_name: str) -> None:
        self._decoder_name, decoder = _find_decoder(model)
        vision = getattr(getattr(model, "model", model), "vision_tower", None)
        self._vision_name = next((n for n, m in model.named_modules() if m is vision), None) if vision else None
        names = {name for name, _ in model.named_modules()}
        self._modality_embedding_name = next(
            (n for n in names if n == "modality_embedding" or n.endswith(".modality_embedding")), None
        )
        decoder_children = {
            name.rsplit(".", 1)[-1]
            for name in names
            if _is_under(name, self._decoder_name) and name != self._decoder_name
        }
        missing = [target for target in config.llm_target_names if target not in decoder_children]
        if missing:
            raise ValueError(
                f"MMA target_modules {missing} match no module in the LLM ({type(decoder).__name__}). Its layers "
                f"have modules such as {sorted(decoder_children & {'self_attn', 'mlp', 'attention', 'attn'})}; set "
                "target_modules to the name of each decoder layer's attention module."
            )
        if config.modules_to_save:
            present = [m for m in config.modules_to_save if any(n == m or n.endswith("." + m) for n in names)]
            dropped = sorted(set(config.modules_to_save) - set(present))
            if dropped:
                logger.info("MMA: the base model has no %s; not saving them.", dropped)
            config.modules_to_save = present or None
        if self._modality_embedding_name is None:
            # A plain LLM has no modality token: give the adapters one, trained with them (text path only).
            if not hasattr(self, "mma_modality_embedding"):
                self.mma_modality_embedding = nn.ModuleDict()
            width = decoder.get_input_embeddings().weight.shape[1]
            embedding = nn.Embedding(2, width, device=decoder.get_input_embeddings().weight.device)
            nn.init.normal_(embedding.weight)
            self.mma_modality_embedding[adapter_name] = embedding

    def _check_target_module_exists(self, peft_config: MMAConfig, key: str) -> bool:
        name = key.rsplit(".", 1)[-1]
        if _is_under(key, self._vision_name):
            return name in peft_config.vision_target_names
        return _is_under(key, self._decoder_name) and name in peft_config.llm_target_names

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key) -> None:
        settings = {
            "hidden_size": peft_config.adapter_hidden_size,
            "groups": peft_config.groups,
            "scale": peft_config.scale,
            "temperature": peft_config.temperature,
            "dropout": peft_config.dropout,
        }
        if isinstance(target, MMALayer):
            target.update_layer(adapter_name, **settings)
            return
        in_vision = _is_under(current_key, self._vision_name)
        config = self.model.config
        if in_vision:
            width = config.vision_config.hidden_size
        else:
            width = config.get_text_config().hidden_size
        new_module = MMALayer(
            target,
            adapter_name,
            width=width,
            routed=not (in_vision and peft_config.vision_adapter_type == "normal"),
            routing_key=None if in_vision else current_key,
            **settings,
        )
        device = next(target.parameters()).device
        new_module._move_adapter_to_device_of_base_layer(adapter_name, device=device)
        if adapter_name != self.active_adapter:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _post_injection_hook(self, model: nn.Module, config: MMAConfig, adapter_name: str) -> None:
        layers = {name: module for name, module in model.named_modules() if isinstance(module, MMALayer)}
        # Kept so the per-forward routing hook need not walk the whole model.
        self._llm_layers = [module for module in layers.values() if module.routing_key is not None]
        for name, module in layers.items():
            parent, _, leaf = name.rpartition(".")
            if leaf == "mlp" and module.routing_key is not None:
                partners = [layers.get(f"{parent}.{target}") for target in config.target_modules]
                partner = next((p for p in partners if p is not None), None)
                if partner is None:
                    raise ValueError(f"adapter_type='block' needs an adapted attention beside {name}.")
                # A plain attribute, not a submodule: the MLP adapter must not be registered twice.
                object.__setattr__(partner, "_mlp_partner", module)
        if self._routing_hook is None:
            decoder = self.model.get_submodule(self._decoder_name) if self._decoder_name else self.model
            self._routing_hook = decoder.register_forward_pre_hook(self._route, with_kwargs=True)

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        super()._mark_only_adapters_as_trainable(model)
        if hasattr(self, "mma_modality_embedding"):
            for name, embedding in self.mma_modality_embedding.items():
                embedding.requires_grad_(name in self.active_adapters)

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        # MMALayer keeps its adapters in fp32 itself; nothing to cast.
        pass

    @classmethod
    def _remap_adapter_state_dict_for_load(cls, model, config, adapter_name, state_dict):
        remapped = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        # PEFT only warns about adapter tensors that fit nowhere; for MMA that means the adapter belongs to
        # another architecture, and a silently half-loaded adapter is worse than an error.
        prefixes = _get_tuner_state_dict_key_prefixes(model, adapter_name=adapter_name)
        expected = set(_filter_state_dict_by_key_prefixes(model.state_dict(), prefixes))
        given = {key for key in remapped if ".mma_" in key or key.startswith("mma_")}
        unexpected, missing = sorted(given - expected), sorted(expected - given)
        if unexpected or missing:
            raise ValueError(
                f"This MMA adapter does not fit the base model ({type(model.base_model.model).__name__}): "
                f"{len(unexpected)} adapter tensors have no place in it (e.g. {unexpected[:2]}) and {len(missing)} "
                f"of its adapter slots get nothing (e.g. {missing[:2]}). Load the adapter onto the base model it was "
                "trained for (see base_model_name_or_path in adapter_config.json)."
            )
        return remapped

    # --------------------------------------------------------------------------------------------------- routing
    def modality_embeddings(self) -> torch.Tensor:
        """The two modality-token embeddings (text, image), shape (2, width), in the decoder's dtype."""
        decoder = self.model.get_submodule(self._decoder_name)
        dtype = decoder.get_input_embeddings().weight.dtype
        if self._modality_embedding_name is not None:
            embedding = self.model.get_submodule(self._modality_embedding_name)
            device = decoder.get_input_embeddings().weight.device
            return embedding(torch.arange(2, device=device)).to(dtype)
        adapter = self.active_adapters[0]
        return self.mma_modality_embedding[adapter].weight.to(dtype)

    def routing_table(self) -> dict[str, torch.Tensor]:
        """
        The routing weights of every LLM adapter for each modality: adapter key -> (2, 2), row 0 for text-only
        inputs and row 1 for inputs with an image; column j weights the adapter's up-projection j.
        """
        decoder = self.model.get_submodule(self._decoder_name)
        table = run_routing_pass(decoder, self.modality_embeddings())
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            if table and not any(w.requires_grad for w in table.values()):
                raise RuntimeError(
                    "The MMA routing weights lost their gradient. This happens with reentrant gradient "
                    "checkpointing; enable it with gradient_checkpointing_kwargs={'use_reentrant': False}."
                )
        return table

    def _route(self, module: nn.Module, args: tuple, kwargs: dict):
        """Forward pre-hook on the decoder: give every row the routing weights of its modality."""
        if ROUTING_KWARG in kwargs:  # the routing pass itself, or routing given by the caller
            return None
        modality_ids = kwargs.pop(MODALITY_IDS_KWARG, None)
        if not self._has_active_llm_adapters():
            return args, kwargs
        cache = kwargs.get("cache")
        table = cached_table(cache)
        if table is None:
            table = self.routing_table()
            store_table(cache, table)
        reference = kwargs.get("inputs_embeds")
        if reference is None:
            reference = kwargs.get("input_ids", args[0] if args else None)
        if modality_ids is None:
            modality_ids = torch.zeros(reference.shape[0], dtype=torch.long, device=reference.device)
        first = next(iter(table.values()))
        kwargs[ROUTING_KWARG] = rows_from_table(table, modality_ids.to(first.device))
        return args, kwargs

    def _has_active_llm_adapters(self) -> bool:
        return any(not layer.disable_adapters for layer in self._llm_layers)

    # ----------------------------------------------------------------------------------------------------- merge
    def merge_and_unload(
        self,
        modality: str | None = None,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        """
        Fold the adapters into the linear layers that read their output and return the plain base model.

        LLM adapters fold exactly for one modality, since their routing depends only on it: the merged model is for
        `modality="image"` prompts (with an image) or `modality="text"` prompts. Vision adapters without a router
        (`normal`) fold exactly; routed vision adapters depend on each token and stay in place.

        Args:
            modality (`str`): `"image"` or `"text"`.
        """
        if modality not in MODALITIES:
            raise ValueError(
                "MMA's LLM adapters route by modality, so merging fixes one: call "
                "merge_and_unload(modality='image') or merge_and_unload(modality='text')."
            )
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            table = self.routing_table()
        self.model.train(was_training)
        index = MODALITIES[modality]
        for module in self.model.modules():
            if isinstance(module, MMALayer):
                weights = table[module.routing_key][index] if module.routing_key is not None else None
                module._merge_weights = weights
        merged = self._unload_and_optionally_merge(
            merge=True, progressbar=progressbar, safe_merge=safe_merge, adapter_names=adapter_names
        )
        self._remove_routing()
        _declare_new_biases(merged)
        return merged

    def unload(self) -> nn.Module:
        """Remove the adapters without merging and return the base model."""
        model = self._unload_and_optionally_merge(merge=False)
        self._remove_routing()
        return model

    def _replace_module(self, parent, child_name, new_module, child) -> None:
        if isinstance(new_module, MMALayer):
            super()._replace_module(parent, child_name, new_module, child)
        else:  # unloading: the plain module goes back as it is (PEFT's version assumes a Linear-like layer)
            setattr(parent, child_name, new_module)

    def merge_adapter(self, *args, **kwargs) -> None:
        raise NotImplementedError("MMA merges for one modality at a time: use merge_and_unload(modality=...).")

    def _remove_routing(self) -> None:
        if self._routing_hook is not None:
            self._routing_hook.remove()
            self._routing_hook = None
