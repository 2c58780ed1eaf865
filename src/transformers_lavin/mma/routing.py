"""Exact, stateless routing for the LLM adapters: every routing function of MMA lives here.

In the reference, a modality token sits at position 0 and no other token attends to it, so its hidden state, and
hence every router's input, depends only on the modality. The routing weights therefore form a small table: for each
adapter, the weights the modality token gets, for modality 0 (text) and 1 (image). We compute the table by running
the two modality embeddings alone through the decoder (one token each, at position 0), then run the real sequence
without the token, giving each row the weights of its modality. RoPE is relative and the token is never attended,
so dropping it changes nothing.

The per-row weights travel as a keyword argument: transformers' decoders hand `**kwargs` to each decoder layer and on
to `self_attn`, where the MMA wrapper picks them up, with every attention backend and inside gradient-checkpointed
layers. The table depends only on the parameters: outside training it is computed once per parameter state, with
each adapter's up-projections mixed per modality, and reused by every forward (prefill and decoding steps alike)
until a parameter changes.

A vision-language model that does not compute `modality_ids` itself gets them from its image (and video) tokens (see
[`ImageTokenModality`]): read from `input_ids` above the decoder, and from the prompt once per `generate`.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

ROUTING_KWARG = "mma_routing"
MODALITY_IDS_KWARG = "modality_ids"
MODALITIES = {"text": 0, "image": 1}
_ROUTER_ATTRIBUTE = "_mma_modality_router"
_MODALITY_SOURCE_ATTRIBUTE = "_mma_image_token_modality"
# Config attributes that hold the id of the token marking image positions in a prompt, newest name first.
IMAGE_TOKEN_ATTRIBUTES = ("image_token_id", "image_token_index")
# The same for video frames (Qwen2-VL and its successors, LLaVA-OneVision): a row with a video takes the image path.
VIDEO_TOKEN_ATTRIBUTES = ("video_token_id", "video_token_index")


class RouteOnFirstToken:
    """
    Each adapter routes on its own input at position 0, the reference's rule. Used for the routing pass (the
    modality tokens alone) and for direct calls of an adapted module; records what each adapter computed.

    Args:
        adapter_name: The adapter every layer runs in this pass (to merge an adapter that is not the active one);
            `None` for the active adapter.
    """

    def __init__(self, adapter_name: str | None = None):
        self.adapter_name = adapter_name
        self.table: dict[str, torch.Tensor] = {}

    def up_projections(self, layer, adapter_name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = layer.route(adapter_name, x[:, 0])
        self.table[layer.routing_key] = weights
        return layer.mixed_up_projection(adapter_name, weights)


class RowRouting(dict):
    """
    Every row takes the weights of its modality from the routing table: adapter key -> (batch, 2).

    Each adapter asks for its rows' mixed up-projection `s (w0 U0 + w1 U1)` and bias inside its own call (where
    sharded parameters are gathered; see [`MMALayer.mixed_up_projection`]). With `mixes`, a cache that outlives the
    call (outside training), it is mixed once per modality of the `table` and each row gathers its own; without, it
    is mixed per row at every call, so gradients and checkpointed recomputes see it. The weights are plain dict items
    because FSDP rebuilds keyword arguments from their items alone (to hook the routers' outputs); a rebuilt copy
    mixes per row.
    """

    def __init__(
        self,
        weights=(),
        table: dict[str, torch.Tensor] | None = None,
        mixes: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        modality_ids: torch.LongTensor | None = None,
    ):
        super().__init__(weights)
        self._table, self._mixes, self._modality_ids = table, mixes, modality_ids

    def up_projections(self, layer, adapter_name: str, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = layer.routing_key
        if self._mixes is None:
            return layer.mixed_up_projection(adapter_name, self[key])
        if key not in self._mixes:
            self._mixes[key] = layer.mixed_up_projection(adapter_name, self._table[key])
        up, bias = self._mixes[key]
        rows = self._modality_ids.to(up.device)
        return up.index_select(0, rows), bias.index_select(0, rows)


def rows_from_table(table: dict[str, torch.Tensor], modality_ids: torch.LongTensor) -> dict[str, torch.Tensor]:
    """Per-row routing weights: for each adapter, `table[key][modality_ids]`, shape (batch, 2)."""
    # One gather for all adapters instead of one per adapter: this runs at every decoding step.
    rows = torch.stack(list(table.values()))[:, modality_ids.to(next(iter(table.values())).device)]
    return dict(zip(table.keys(), rows.unbind(0), strict=True))


def run_routing_pass(
    decoder: nn.Module, modality_embeddings: torch.Tensor, adapter_name: str | None = None
) -> dict[str, torch.Tensor]:
    """
    Run the modality embeddings alone through `decoder` and return the routing table.

    Args:
        decoder: The decoder stack (e.g. `LlamaModel`) with MMA adapters on its layers.
        modality_embeddings: (num_modalities, width); row m is the embedding of modality m.
        adapter_name: The adapter to route (the active one by default).

    Returns:
        `dict` mapping each adapter's routing key to its weights, shape (num_modalities, 2).
    """
    routing = RouteOnFirstToken(adapter_name)
    num_modalities = modality_embeddings.shape[0]
    position_ids = torch.zeros(num_modalities, 1, dtype=torch.long, device=modality_embeddings.device)
    decoder(
        inputs_embeds=modality_embeddings.unsqueeze(1),
        position_ids=position_ids,
        use_cache=False,
        **{ROUTING_KWARG: routing},
    )
    return routing.table


# Bumped whenever any module registers a parameter or a submodule: the lists of parameters that key the routing
# cache are rebuilt only then, instead of walking the decoder at every forward. Registrations into a ModuleList are
# left out: transformers' decoders slice `self.layers` into a new ModuleList at every forward.
_structure_generation = 0


def _parameter_registered(module: nn.Module, name: str, parameter: nn.Parameter | None) -> None:
    global _structure_generation
    _structure_generation += 1


def _module_registered(module: nn.Module, name: str, submodule: nn.Module | None) -> None:
    global _structure_generation
    if type(module) is not nn.ModuleList:
        _structure_generation += 1


torch.nn.modules.module.register_module_parameter_registration_hook(_parameter_registered)
torch.nn.modules.module.register_module_module_registration_hook(_module_registered)


class ModalityRouter:
    """
    The forward pre-hook on the decoder that gives every row the routing weights of its modality.

    Args:
        decoder: The decoder stack holding the adapted layers.
        modality_embeddings: Returns the (2, width) modality-token embeddings of an adapter (called with its name, or
            with `None` for the active adapter).
        modality_source: The module that holds them (its parameters key the table's cache).
        llm_layers: The routed LLM adapter layers (to skip routing when none is active or all are merged).
    """

    def __init__(
        self,
        decoder: nn.Module,
        modality_embeddings: Callable[[str | None], torch.Tensor],
        modality_source: nn.Module,
        llm_layers: list[nn.Module],
    ):
        self.decoder = decoder
        self.modality_embeddings = modality_embeddings
        self.modality_source = modality_source
        self.llm_layers = llm_layers
        # (parameter state, routing table, up-projections mixed per modality, filled by each adapter on first use)
        self._cached: tuple[tuple, dict[str, torch.Tensor], dict] | None = None
        self._watched: tuple[tuple, list[nn.Parameter]] | None = None
        self._handle = decoder.register_forward_pre_hook(self, with_kwargs=True)
        object.__setattr__(decoder, _ROUTER_ATTRIBUTE, self)  # a plain attribute: found by compute_routing_table

    def remove(self) -> None:
        self._handle.remove()
        if getattr(self.decoder, _ROUTER_ATTRIBUTE, None) is self:
            object.__delattr__(self.decoder, _ROUTER_ATTRIBUTE)

    def table(self) -> dict[str, torch.Tensor]:
        """
        The routing weights of every LLM adapter for each modality: adapter key -> (2, 2), row 0 for text-only
        inputs and row 1 for inputs with an image; column j weights the adapter's up-projection j.

        Outside training (no gradient, no dropout) the table is reused until a parameter of the decoder or of the
        modality embedding changes (an optimizer step, loading weights, `set_adapter`, a dtype or device move).
        """
        return self._routing()[0]

    def table_of(self, adapter_name: str) -> dict[str, torch.Tensor]:
        """
        The routing table of `adapter_name`, active or not, computed afresh with every module in eval mode (no
        dropout) and without gradients: the weights a merge folds.
        """
        with torch.no_grad(), _eval_mode(self.decoder):
            return run_routing_pass(self.decoder, self.modality_embeddings(adapter_name), adapter_name)

    def rows(self, modality_ids: torch.LongTensor) -> RowRouting:
        """The routing of a batch whose row r has modality `modality_ids[r]` (0 text-only, 1 with an image)."""
        table, mixes = self._routing()
        return RowRouting(rows_from_table(table, modality_ids), table, mixes, modality_ids)

    def _routing(self) -> tuple[dict[str, torch.Tensor], dict | None]:
        """
        The routing table, and the cache of its mixed up-projections (`None` when it must not outlive the call),
        computed once per parameter state outside training.

        A layer in training mode applies dropout, also in the routing pass, so the table is not reused while any
        adapter layer is in training mode (PEFT leaves new adapter layers so, even under an eval-mode model): two
        forwards from the same seed then draw the same dropout masks.
        """
        training = self.decoder.training or any(layer.training for layer in self.llm_layers)
        if torch.is_grad_enabled() or training:
            self._cached = None
            table = run_routing_pass(self.decoder, self.modality_embeddings(None))
            if torch.is_grad_enabled():
                self._check_gradients(table)
            return table, None
        state = self._parameter_state()
        if self._cached is None or self._cached[0] != state:
            self._cached = (state, run_routing_pass(self.decoder, self.modality_embeddings(None)), {})
        return self._cached[1:]

    def _parameter_state(self) -> tuple:
        """
        Identifies the values of every parameter the table depends on: in-place updates bump `_version`, a move or
        cast gives new storage. The parameter list itself is rebuilt only when a module's structure changed.
        """
        structure = (_structure_generation, id(self.modality_source), len(self.llm_layers))
        if self._watched is None or self._watched[0] != structure:
            modules = [self.decoder, self.modality_source]
            self._watched = (structure, [p for module in modules for p in module.parameters()])
        parameters = self._watched[1]
        first = parameters[0]
        return (
            _active_adapters(self.llm_layers),
            # Tensors made under inference mode cannot be used later where autograd records.
            torch.is_inference_mode_enabled(),
            first.dtype,
            first.device,
            tuple(p._version for p in parameters),
            tuple(p.data_ptr() for p in parameters),
        )

    def _check_gradients(self, table: dict[str, torch.Tensor]) -> None:
        trainable = any(p.requires_grad for layer in self.llm_layers for p in layer.parameters())
        if trainable and table and not any(weights.requires_grad for weights in table.values()):
            raise RuntimeError(
                "The MMA routing weights lost their gradient. This happens with reentrant gradient "
                "checkpointing; enable it with activation_checkpointing_kwargs={'use_reentrant': False}."
            )

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        """Forward pre-hook on the decoder: give every row the routing weights of its modality."""
        if ROUTING_KWARG in kwargs:  # the routing pass itself, or routing given by the caller
            return None
        modality_ids = kwargs.pop(MODALITY_IDS_KWARG, None)
        if not any(layer.routes_now() for layer in self.llm_layers):
            _check_merged_modality(self.llm_layers, modality_ids)
            return args, kwargs
        reference = kwargs.get("inputs_embeds")
        if reference is None:
            reference = kwargs.get("input_ids", args[0] if args else None)
        if modality_ids is None:
            modality_ids = torch.zeros(reference.shape[0], dtype=torch.long, device=reference.device)
        kwargs[ROUTING_KWARG] = self.rows(modality_ids)
        return args, kwargs


def _active_adapters(layers: list[nn.Module]) -> tuple:
    return tuple(tuple(layer.active_adapters) for layer in layers[:1])


def _check_merged_modality(layers: list[nn.Module], modality_ids: torch.LongTensor | None) -> None:
    # A disabled layer unmerges itself when called, so only enabled merged layers fix the modality.
    merged = {
        layer.merged_modality for layer in layers if layer.merged_modality is not None and not layer.disable_adapters
    }
    if not merged or modality_ids is None or torch.compiler.is_compiling():
        return
    (modality,) = merged
    if bool((modality_ids != MODALITIES[modality]).any()):
        other = "text-only" if modality == "image" else "image"
        raise ValueError(
            f"The MMA adapters are merged for {modality!r} inputs, but the batch holds {other} rows, which route "
            "differently. Call unmerge_adapter(), or merge_adapter(modality=...) for the modality you serve."
        )


@contextmanager
def _eval_mode(module: nn.Module):
    """Every submodule of `module` in eval mode inside the block; each gets its own mode back after it."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def find_router(model: nn.Module) -> ModalityRouter | None:
    """The `ModalityRouter` installed on a decoder inside `model`, if any."""
    return next((r for m in model.modules() if (r := getattr(m, _ROUTER_ATTRIBUTE, None)) is not None), None)


def _token_id(config, attributes: tuple[str, ...]) -> int | None:
    for name in attributes:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def visual_token_ids(config) -> tuple[int, ...]:
    """The ids of the tokens that mark image and video positions in `config`'s prompts (empty for a model without
    either): a row holding any of them takes the image path."""
    ids = (_token_id(config, IMAGE_TOKEN_ATTRIBUTES), _token_id(config, VIDEO_TOKEN_ATTRIBUTES))
    return tuple(dict.fromkeys(i for i in ids if i is not None))


def modality_ids_from_input_ids(input_ids: torch.LongTensor, token_ids: int | tuple[int, ...]) -> torch.LongTensor:
    """1 for each row of `input_ids` that holds one of the image (or video) tokens `token_ids`, else 0 (text only):
    shape (batch,)."""
    token_ids = torch.tensor(token_ids, device=input_ids.device).reshape(-1)
    return torch.isin(input_ids, token_ids).any(dim=-1).long()


def _add_modality_ids(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: an explicit `modality_ids` wins; otherwise read them from the image (and video) tokens of
    `input_ids`."""
    input_ids = kwargs.get("input_ids", args[0] if args else None)
    token_ids = visual_token_ids(module.config)
    if kwargs.get(MODALITY_IDS_KWARG) is not None or input_ids is None or not token_ids:
        return None
    kwargs[MODALITY_IDS_KWARG] = modality_ids_from_input_ids(input_ids, token_ids)
    return args, kwargs


def _expand_with_prompt_modality(
    self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids: torch.LongTensor | None = None, **kwargs
):
    # Runs once per `generate`, on the prompt, before the rows are repeated: generated tokens never change a row's
    # modality, and every beam or returned sequence inherits its prompt's.
    token_ids = visual_token_ids(self.config)
    if kwargs.get(MODALITY_IDS_KWARG) is None and input_ids is not None and token_ids:
        kwargs[MODALITY_IDS_KWARG] = modality_ids_from_input_ids(input_ids, token_ids)
    return type(self)._expand_inputs_for_generation(self, expand_size, is_encoder_decoder, input_ids, **kwargs)


def _validate_with_modality_ids(self, model_kwargs: dict) -> None:
    # `generate` refuses keyword arguments its model's forward does not name; `modality_ids` reaches the decoder
    # through the forward's `**kwargs`.
    others = {key: value for key, value in model_kwargs.items() if key != MODALITY_IDS_KWARG}
    return type(self)._validate_model_kwargs(self, others)


# The one place this package patches transformers: what `ImageTokenModality` sets on the model instance, in place of
# `GenerationMixin`'s private methods of the same names. No public route fits: `generate` refuses a model keyword
# argument the forward does not name before any public hook runs, and `prepare_inputs_for_generation` may see a
# prefill chunk without the image token, while `_expand_inputs_for_generation` is the one call that sees each whole
# prompt before its rows are repeated (LaVIN's own model overrides it for that reason).
_GENERATION_METHODS = {
    "_expand_inputs_for_generation": _expand_with_prompt_modality,
    "_validate_model_kwargs": _validate_with_modality_ids,
}
# The upstream parameters the replacements above call with, checked against `GenerationMixin` by
# tests/model/test_generation_patch.py: a rename upstream fails that test, naming the method.
UPSTREAM_GENERATION_SIGNATURES = {
    "_expand_inputs_for_generation": ("self", "expand_size", "is_encoder_decoder", "input_ids", "**model_kwargs"),
    "_validate_model_kwargs": ("self", "model_kwargs"),
}


class ImageTokenModality:
    """
    Gives a vision-language model's forward the `modality_ids` of its rows, read from its own image token (and video
    token, where the model has one: a video takes the image path).

    - A forward pre-hook on `model` adds `modality_ids` (1 for a row holding an image or video token, else 0) when
      the call has `input_ids` and no `modality_ids`. Transformers' VLMs hand unknown keyword arguments down to their
      language model, where [`ModalityRouter`] takes them: the decoder itself only sees `inputs_embeds`.
    - `generate` reads each row's modality once, from the prompt, before beam search or `num_return_sequences`
      repeat the rows, and carries it as a model keyword argument to every step (decoding steps only feed new
      tokens, so they could not read it themselves). This is what LaVIN's own `_expand_inputs_for_generation` does;
      here it is set on the instance, and `generate` also accepts an explicit `modality_ids`.

    The token ids are read from `model.config` at every call, and nothing is kept between calls.

    Args:
        model: The top-level model (e.g. `LlavaForConditionalGeneration`), whose config names its image (and video)
            token.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self._handle = model.register_forward_pre_hook(_add_modality_ids, with_kwargs=True)
        for name, method in _GENERATION_METHODS.items():
            object.__setattr__(model, name, types.MethodType(method, model))
        object.__setattr__(model, _MODALITY_SOURCE_ATTRIBUTE, self)

    def remove(self) -> None:
        self._handle.remove()
        for name in (*_GENERATION_METHODS, _MODALITY_SOURCE_ATTRIBUTE):
            self.model.__dict__.pop(name, None)

    @staticmethod
    def installed_on(model: nn.Module) -> ImageTokenModality | None:
        return model.__dict__.get(_MODALITY_SOURCE_ATTRIBUTE)


def compute_routing_table(model: nn.Module) -> torch.Tensor | None:
    """
    The routing weights of the LLM attention adapters, for display and analysis.

    Args:
        model: A PEFT model with MMA adapters (or anything holding one).

    Returns:
        `torch.Tensor` of shape (num_adapted_layers, 2, 2), in layer order: `table[layer, modality, path]`, with
        modality 0 = text-only input and 1 = input with an image, and path j the weight of up-projection j.
        `None` when the model has no MMA adapters (e.g. after `merge_and_unload`).
    """
    router = find_router(model)
    if router is None:
        return None
    with torch.no_grad():
        table = router.table()
    keys = [key for key in table if not key.endswith(".mlp")]
    return torch.stack([table[key].float().cpu() for key in keys]) if keys else None
