"""MMAModel: injects MMA adapters into a LaVIN, any Hugging Face VLM or decoder-only LLM, routes them, and merges them."""

from __future__ import annotations

import logging

import torch
from peft.tuners.tuners_utils import BaseTuner, _filter_state_dict_by_key_prefixes, _get_tuner_state_dict_key_prefixes
from peft.utils import ModulesToSaveWrapper
from torch import nn

from .config import VISION_ATTENTION_NAMES, VISION_MLP_NAMES, MMAConfig
from .folding import ATTENTION_INPUT_PROJECTIONS
from .layer import MMALayer, MMAModalityEmbedding
from .merged_saving import keep_unfolded_adapters, refuse_saving
from .routing import MODALITIES, ImageTokenModality, ModalityRouter, find_router, visual_token_ids

logger = logging.getLogger(__name__)

# Where the tuner keeps the modality embedding of a base model that has none (inside the decoder, so PEFT's
# set/delete/cast functions, which walk the model, treat it like any adapter layer).
MODALITY_TOKEN_ATTRIBUTE = "modality_token"


def _find_decoder(model: nn.Module) -> tuple[str, nn.Module]:
    """The decoder stack whose layers hold the LLM adapters, and its module name."""
    get_decoder = getattr(model, "get_decoder", None)
    decoder = get_decoder() if callable(get_decoder) else None
    if decoder is None or not hasattr(decoder, "layers"):
        raise ValueError(
            f"MMA needs a decoder-only LLM with `get_decoder()` returning a stack of `layers`; "
            f"{type(model).__name__} has none. Use a LaVIN model, an AutoModelForImageTextToText with a decoder-only "
            "LLM or an AutoModelForCausalLM."
        )
    for name, module in model.named_modules():
        if module is decoder:
            return name, decoder
    raise ValueError("The decoder returned by get_decoder() is not a submodule of the model.")


def _find_vision_tower(model: nn.Module) -> nn.Module | None:
    """The image encoder of a vision-language model (transformers' `get_encoder(modality="image")`), if it has one."""
    get_encoder = getattr(model, "get_encoder", None)
    tower = get_encoder(modality="image") if callable(get_encoder) else None
    # Without an image encoder, transformers returns the model (or its base model) itself.
    return None if tower is None or tower is model or tower is getattr(model, "base_model", None) else tower


def _is_under(key: str, prefix: str | None) -> bool:
    return prefix is not None and (prefix == "" or key == prefix or key.startswith(prefix + "."))


def _block_child_name(key: str) -> str | None:
    """`self_attn` for `...layers.3.self_attn`: the name of a direct child of a block in a stack of blocks (a
    ModuleList), else `None` (e.g. Qwen2-VL's `visual.merger.mlp`, or SigLIP's pooling `head.attention`)."""
    parent, _, name = key.rpartition(".")
    return name if parent.rpartition(".")[2].isdigit() else None


def _input_width(module: nn.Module) -> int | None:
    """The feature width a module reads: the input width of its first linear layer (q_proj, qkv, fc1, ...)."""
    linear = next((m for m in module.modules() if isinstance(m, nn.Linear)), None)
    return None if linear is None else linear.in_features


def _declare_new_biases(model: nn.Module, folded_into: list[tuple[nn.Module, bool]]) -> list[str]:
    """
    Folding an adapter's constant term gave the input projections (q/k/v, or gate/up) of the modules `folded_into`
    (each with whether it sits in the vision tower) a bias they did not have. Give their sibling projections a zero
    bias and say so in the config of their part of the model, so that the merged model saves and reloads as the
    same architecture.

    Returns:
        The config flags the model's configs lack to declare them (e.g. `mlp_bias` for Gemma 3, `attention_bias`
        for Mistral, `vision_config.attention_bias` for Pixtral): saved, the model would lose those biases.
    """
    undeclared = set()
    for module, in_vision in folded_into:
        config = model.config.vision_config if in_vision else model.config.get_text_config()
        linears = {name: child for name, child in module.named_children() if isinstance(child, nn.Linear)}
        flag = "attention_bias" if any(name in linears for name in ATTENTION_INPUT_PROJECTIONS) else "mlp_bias"
        for child in linears.values():  # the flag gives the output projection (o_proj, down_proj) one too
            if child.bias is None:
                child.bias = nn.Parameter(torch.zeros_like(child.weight[:, 0]), requires_grad=False)
        if hasattr(config, flag):
            setattr(config, flag, True)
        else:
            undeclared.add(f"vision_config.{flag}" if in_vision else flag)
    return sorted(undeclared)


def _make_checkpointing_non_reentrant(model: nn.Module) -> None:
    """
    MMA's routing weights come from one pass shared by all layers, which reentrant checkpointing cannot
    differentiate through. PEFT's k-bit recipe enables reentrant checkpointing by default; switch it over.
    """
    layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
    reentrant = [
        m
        for m in layers
        if getattr(getattr(m, "_gradient_checkpointing_func", None), "keywords", {}).get("use_reentrant", True)
    ]
    if not reentrant:
        return
    pretrained = next((m for m in [model, *model.modules()] if hasattr(m, "activation_checkpointing_enable")), None)
    if pretrained is None:
        return
    logger.warning(
        "MMA needs non-reentrant gradient checkpointing (its routing is shared by all layers); switching to "
        "activation_checkpointing_kwargs={'use_reentrant': False}."
    )
    pretrained.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})


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
    tuner_layer_cls = (MMALayer, MMAModalityEmbedding)
    target_module_mapping: dict[str, list[str]] = {}

    # ------------------------------------------------------------------------------------------------- injection
    def _prepare_adapter_config(self, peft_config: MMAConfig, model_config: dict) -> MMAConfig:
        return peft_config

    def inject_adapter(
        self,
        model: nn.Module,
        adapter_name: str,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> None:
        # Runs for the first adapter and for every one added later (add_adapter, load_adapter).
        self._inspect_base(model, self.peft_config[adapter_name])
        _make_checkpointing_non_reentrant(model)
        super().inject_adapter(
            model,
            adapter_name,
            autocast_adapter_dtype=autocast_adapter_dtype,
            low_cpu_mem_usage=low_cpu_mem_usage,
            state_dict=state_dict,
        )
        config = self.peft_config[adapter_name]
        if not config.llm_target_names:  # vision adapters only: they route per token, on their own input
            return
        # After PEFT froze the base: a base without a modality token gets one per adapter, owned by the tuner.
        if self._modality_embedding_name is None:
            self._add_modality_token(model, adapter_name, config.inference_mode)
        self._install_routing(model, config)

    def _inspect_base(self, model: nn.Module, config: MMAConfig) -> None:
        """Find the decoder, the vision tower and LaVIN's modality embedding; check the targets before injecting."""
        self._decoder_name, decoder = _find_decoder(model)
        vision = _find_vision_tower(model)
        self._vision_name = next((n for n, m in model.named_modules() if m is vision), None) if vision else None
        self._visual_token_ids = visual_token_ids(model.config)
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
        self._check_vision_targets(vision, config, names)
        if config.modules_to_save:
            present = [m for m in config.modules_to_save if any(n == m or n.endswith("." + m) for n in names)]
            dropped = sorted(set(config.modules_to_save) - set(present))
            if dropped:
                logger.info("MMA: the base model has no %s; not saving them.", dropped)
            config.modules_to_save = present or None

    def _check_vision_targets(self, vision: nn.Module | None, config: MMAConfig, names: set[str]) -> None:
        """
        Choose the modules of the vision tower's blocks to adapt: the configured names, or by default the first of
        the usual attention (and, for `router_block`, MLP) names that the blocks use. A tower whose blocks have none
        of them stays without adapters, with an info log.
        """
        self._vision_targets: set[str] = set()
        if vision is None or not config.vision_target_names:
            return
        found = {_block_child_name(n) for n in names if _is_under(n, self._vision_name)} - {None}
        if config.vision_target_modules is not None:
            self._vision_targets = found & set(config.vision_target_names)
        else:
            for candidates in (VISION_ATTENTION_NAMES, VISION_MLP_NAMES):
                chosen = next((name for name in candidates if name in found), None)
                if chosen is not None and chosen in config.vision_target_names:
                    self._vision_targets.add(chosen)
        if not self._vision_targets:
            logger.info(
                "MMA: the vision tower (%s) has no blocks with %s modules, so it gets no adapters; set "
                "vision_target_modules to the name of its blocks' attention to adapt it.",
                type(vision).__name__,
                config.vision_target_names,
            )

    def _add_modality_token(self, model: nn.Module, adapter_name: str, inference_mode: bool) -> None:
        decoder = model.get_submodule(self._decoder_name)
        token = getattr(decoder, MODALITY_TOKEN_ATTRIBUTE, None)
        if isinstance(token, MMAModalityEmbedding):
            token.update_layer(adapter_name)
        else:
            weight = decoder.get_input_embeddings().weight
            dtype = weight.dtype if weight.is_floating_point() else None
            token = MMAModalityEmbedding(adapter_name, weight.shape[1], weight.device, dtype)
            decoder.add_module(MODALITY_TOKEN_ATTRIBUTE, token)
        token.set_adapter(self.active_adapters, inference_mode=inference_mode)

    def _check_target_module_exists(self, peft_config: MMAConfig, key: str) -> bool:
        name = key.rsplit(".", 1)[-1]
        if _is_under(key, self._vision_name):
            return _block_child_name(key) in self._vision_targets
        return _is_under(key, self._decoder_name) and name in peft_config.llm_target_names

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key) -> None:
        settings = {
            "hidden_size": peft_config.adapter_hidden_size,
            "groups": peft_config.groups,
            "scale": peft_config.scale,
            "temperature": peft_config.temperature,
            "dropout": peft_config.dropout,
            "init_weights": peft_config.init_weights,
        }
        if isinstance(target, MMALayer):
            target.update_layer(adapter_name, **settings)
            return
        in_vision = _is_under(current_key, self._vision_name)
        # A tower's config may name its block width differently (Qwen2-VL's `embed_dim`): read it from the module.
        config = self.model.config
        width = (_input_width(target) or config.vision_config.hidden_size) if in_vision else None
        width = width or config.get_text_config().hidden_size
        new_module = MMALayer(
            target,
            adapter_name,
            width=width,
            routed=not (in_vision and peft_config.vision_adapter_type == "normal"),
            routing_key=None if in_vision else current_key,
            **settings,
        )
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _install_routing(self, model: nn.Module, config: MMAConfig) -> None:
        """
        Give MLP adapters their routing source and (once) put the modality router on the decoder. A VLM whose
        modality token the tuner owns also gets the tuner's reader of each row's modality from its image token
        (LaVIN reads its own and passes `modality_ids` down itself).
        """
        owns_modality = self._modality_embedding_name is None and bool(self._visual_token_ids)
        if owns_modality and ImageTokenModality.installed_on(model) is None:
            ImageTokenModality(model)
        decoder = model.get_submodule(self._decoder_name)
        named = {name: m for name, m in model.named_modules() if isinstance(m, MMALayer) and m.routing_key is not None}
        for name, layer in named.items():
            parent, _, leaf = name.rpartition(".")
            if leaf in config.target_modules:
                continue
            attention = next((named[f"{parent}.{t}"] for t in config.target_modules if f"{parent}.{t}" in named), None)
            if attention is None:
                raise ValueError(f"adapter_type='block' needs an adapted attention beside {name}.")
            layer.take_routing_from(attention)
        llm_layers = list(named.values())
        router = find_router(decoder)
        if router is not None:
            router.llm_layers = llm_layers
            return
        if self._modality_embedding_name is not None:
            source = model.get_submodule(self._modality_embedding_name)
        else:
            source = getattr(decoder, MODALITY_TOKEN_ATTRIBUTE)
        ModalityRouter(decoder, self._modality_embeddings, source, llm_layers)

    def _modality_embeddings(self, adapter_name: str | None = None) -> torch.Tensor:
        """
        The two modality-token embeddings (text, image) of `adapter_name` (the active adapter by default), shape
        (2, width), in the decoder's dtype.
        """
        decoder = self.model.get_submodule(self._decoder_name)
        weight = decoder.get_input_embeddings().weight
        dtype = weight.dtype if weight.is_floating_point() else torch.float32
        if self._modality_embedding_name is None:
            return getattr(decoder, MODALITY_TOKEN_ATTRIBUTE).embeddings(adapter_name).to(weight.device, dtype)
        embedding = self.model.get_submodule(self._modality_embedding_name)
        if adapter_name is not None and isinstance(embedding, ModulesToSaveWrapper):
            # LaVIN's own modality embedding, trained per adapter by `modules_to_save`
            copies = embedding.modules_to_save
            embedding = copies[adapter_name] if adapter_name in copies else embedding.original_module
        return embedding(torch.arange(2, device=weight.device)).to(dtype)

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
    def routing_table(self) -> dict[str, torch.Tensor]:
        """The routing weights of every LLM adapter per modality (see [`ModalityRouter.table`])."""
        return find_router(self.model.get_submodule(self._decoder_name)).table()

    # ----------------------------------------------------------------------------------------------------- merge
    def _merge_modality(self, modality: str | None, adapter_names: list[str] | None) -> str:
        names = adapter_names or self.active_adapters
        configured = {self.peft_config[name].merge_modality for name in names if name in self.peft_config}
        modality = modality or (configured.pop() if len(configured) == 1 else None)
        if modality is None and not self._visual_token_ids:
            modality = "text"  # a model without image tokens only has the text path
        if modality not in MODALITIES:
            raise ValueError(
                "MMA's LLM adapters route by modality, so merging fixes one: pass modality='image' or "
                "modality='text' (or set merge_modality in the MMAConfig)."
            )
        return modality

    def merge_adapter(
        self, adapter_names: list[str] | None = None, safe_merge: bool = False, modality: str | None = None
    ) -> None:
        """
        Merge the adapters into the base weights in place, for one modality; `unmerge_adapter()` takes them out
        again. The merged model serves inputs of that modality only (a batch holding the other one is refused).
        Routed vision adapters mix per token and stay unmerged.

        Each adapter folds with its own routing weights, those it has when it runs alone: an adapter that is not the
        active one merges as it would if it were. Adapters merged already are left as they are, with PEFT's warning.

        Args:
            adapter_names (`list[str]`, *optional*): Adapters to merge; the active ones by default.
            safe_merge (`bool`): Check the merged weights for NaNs before writing them.
            modality (`str`, *optional*): `"image"` or `"text"`; defaults to the config's `merge_modality` (and to
                `"text"` on a plain LLM, which has no image path).
        """
        self._check_merge_allowed()
        layers = [m for m in self.model.modules() if isinstance(m, MMALayer) and m.can_merge()]
        names = self.active_adapters if adapter_names is None else adapter_names
        pending = [n for n in names if any(n in m.mma_down and n not in m.merged_adapters for m in layers)]
        tables = {}
        if pending:
            modality = self._merge_modality(modality, pending)
            router = find_router(self.model.get_submodule(self._decoder_name))
            routed = {n for m in layers if m.routing_key is not None for n in m.mma_down}
            # Every table before any fold: a fold changes the weights the routing pass runs through.
            index = MODALITIES[modality]
            for name in pending:
                if name in routed:
                    tables[name] = {key: weights[index] for key, weights in router.table_of(name).items()}
        for module in layers:
            weights = {
                name: table[module.routing_key] for name, table in tables.items() if module.routing_key in table
            }
            module.merge(
                safe_merge=safe_merge, adapter_names=adapter_names, routing_weights=weights, modality=modality
            )

    def merge_and_unload(
        self,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
        modality: str | None = None,
    ) -> nn.Module:
        """
        Merge the adapters for one modality (see [`merge_adapter`]) and return the plain base model.

        LLM adapters fold exactly for one modality, since their routing depends only on it: the merged model is for
        `modality="image"` prompts (with an image) or `modality="text"` prompts. Vision adapters without a router
        (`normal`) fold exactly; routed vision adapters depend on each token and stay in place, and the merged model's
        `save_pretrained` saves them beside the base weights so that `from_pretrained` reloads it exactly (see
        `merged_saving.py`).

        What cannot fold comes from one adapter: the active one, or the only one of `adapter_names` (its
        `modules_to_save` copies, e.g. LaVIN's projector, and its routed vision adapters).
        """
        kept = self._adapter_kept_whole(adapter_names)
        active = self.active_adapters
        if [kept] != active:
            self.set_adapter(kept)
        try:
            self.merge_adapter(adapter_names=adapter_names, safe_merge=safe_merge, modality=modality)
        except Exception:
            if [kept] != active:
                self.set_adapter(active)
            raise
        config = self.peft_config[kept]
        folded_into = [
            (m.get_base_layer(), m.routing_key is None)
            for m in self.model.modules()
            if isinstance(m, MMALayer) and m.created_biases
        ]
        merged = self._unload_and_optionally_merge(merge=True, progressbar=progressbar, adapter_names=adapter_names)
        self._remove_routing()
        if any(isinstance(m, MMALayer) for m in merged.modules()):
            keep_unfolded_adapters(merged, kept, config)
        undeclared = _declare_new_biases(merged, folded_into)
        if undeclared:
            reason = (
                f"The merged {type(merged).__name__} is exact in memory, but its config has no {undeclared} to "
                "declare the biases merging gave its layers: saved and reloaded, it would lose them. Save the adapter "
                "instead (PeftModel.save_pretrained)"
                + (
                    ", or merge adapters on the attentions only (adapter_type='attn')."
                    if undeclared == ["mlp_bias"]
                    else "."
                )
            )
            logger.warning(reason)
            refuse_saving(merged, reason)
        return merged

    def _adapter_kept_whole(self, adapter_names: list[str] | None) -> str:
        """The adapter whose unfoldable parts a merged model keeps (see [`merge_and_unload`])."""
        active = self.active_adapters
        if adapter_names is None or (len(active) == 1 and active[0] in adapter_names):
            if len(active) != 1:
                raise ValueError(f"MMA merges one active adapter at a time; active: {active}. Use set_adapter(name).")
            kept = active[0]
        elif len(adapter_names) == 1:
            kept = adapter_names[0]
        else:
            raise ValueError(
                f"Merging {adapter_names} while {active} is active: the merged model keeps the projector and "
                "modality copies of one adapter. Call set_adapter() with the one to keep first."
            )
        routed_vision = any(isinstance(m, MMALayer) and not m.can_merge() for m in self.model.modules())
        if routed_vision and adapter_names is not None and len(adapter_names) > 1:
            raise ValueError(
                f"Routed vision adapters cannot fold, and one layer runs one of them: merge one adapter of "
                f"{adapter_names} at a time, or use vision_adapter_type='normal', which folds."
            )
        return kept

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

    def _remove_routing(self) -> None:
        decoder = self.model.get_submodule(self._decoder_name)
        router = find_router(decoder)
        if any(isinstance(m, MMALayer) and m.routing_key is not None for m in self.model.modules()):
            return
        if router is not None:
            router.remove()
        if (modality_source := ImageTokenModality.installed_on(self.model)) is not None:
            modality_source.remove()
        if isinstance(getattr(decoder, MODALITY_TOKEN_ATTRIBUTE, None), MMAModalityEmbedding):
            delattr(decoder, MODALITY_TOKEN_ATTRIBUTE)
