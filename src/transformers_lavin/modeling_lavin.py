"""LaVIN: a frozen CLIP vision tower and a frozen decoder-only LLM joined by a light projector and a modality token.

The classes derive from transformers' LLaVA (`LlavaModel`, `LlavaForConditionalGeneration`), which users already
know; they inherit its outputs, cache handling, embedding accessors and generation support. What is LaVIN's own:
- one visual token per entry of `config.vision_feature_layers`: the [CLS] token of that CLIP hidden state,
- a 2-layer SiLU projector with a 128-wide bottleneck,
- `modality_embedding`, the embedding of LaVIN's modality token (index 1 for a row with any image, 0 for text only).
  The token is never attended by the sequence; it only drives the routers of the MMA adapters (see
  `transformers_lavin.mma`), which is why it is not placed in the sequence here but passed as `modality_ids`,
- an image placeholder id that may lie outside the LLM's vocabulary (no embedding resize is needed).

Where LaVIN behaves differently from LLaVA on purpose (image tokens without `pixel_values` raise): docs/model.md.
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import Cache
from transformers.generation import GenerationMixin
from transformers.initialization import normal_, xavier_uniform_, zeros_
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    MultimodalBaseModelOutputWithPast,
    MultimodalCausalLMOutputWithPast,
)
from transformers.modeling_utils import slice_logits_to_keep
from transformers.models.auto import AutoModel
from transformers.models.llava.modeling_llava import (
    LlavaForConditionalGeneration,
    LlavaModel,
    LlavaPreTrainedModel,
)
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, torch_compilable_check
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import can_return_tuple

from .configuration_lavin import LavinConfig


@dataclass
class LavinModelOutputWithPast(MultimodalBaseModelOutputWithPast):
    """Output of [`LavinModel`]; `image_outputs.pooler_output` holds the projected visual tokens of each image."""


@dataclass
class LavinCausalLMOutputWithPast(MultimodalCausalLMOutputWithPast):
    """Output of [`LavinForConditionalGeneration`]."""


class LavinMultiModalProjector(nn.Module):
    """LaVIN's visual projector: vision width -> `projector_hidden_size` -> SiLU -> LLM width."""

    def __init__(self, config: LavinConfig):
        super().__init__()
        self.linear_1 = nn.Linear(config.vision_config.hidden_size, config.projector_hidden_size)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(config.projector_hidden_size, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))


class LavinPreTrainedModel(LlavaPreTrainedModel):
    config: LavinConfig
    config_class = LavinConfig
    _no_split_modules = ["CLIPEncoderLayer", "LlamaDecoderLayer"]

    @classmethod
    def is_custom_code(cls) -> bool:
        # transformers skips modules without parameters of their own (CLIP's attention and MLP, whose `_init_weights`
        # sets their children's std) when the top model is custom code, in case that code writes weights in place and
        # would overwrite loaded ones. LaVIN's `_init_weights` writes through `transformers.initialization`, which
        # honours the loaded-weight flags, so weights missing from a checkpoint get each sub-model's own
        # initialisation, as in transformers' composite models.
        return False

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # The reference initialises its own parts this way (Xavier projector, zero biases, N(0, 1) modality token).
        if isinstance(module, LavinMultiModalProjector):
            for linear in (module.linear_1, module.linear_2):
                xavier_uniform_(linear.weight)
                zeros_(linear.bias)
        elif isinstance(module, LavinModel):
            normal_(module.modality_embedding.weight, mean=0.0, std=1.0)


class LavinModel(LavinPreTrainedModel, LlavaModel):
    """LaVIN without a language-modelling head: vision tower, projector, modality embedding and language model."""

    def __init__(self, config: LavinConfig):
        # LLaVA's __init__ would build its own projector; LaVIN's parts are built here instead.
        LavinPreTrainedModel.__init__(self, config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LavinMultiModalProjector(config)
        self.modality_embedding = nn.Embedding(2, config.text_config.hidden_size)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    @can_return_tuple
    def get_image_features(
        self, pixel_values: torch.FloatTensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple | BaseModelOutputWithPooling:
        """
        Visual tokens of a batch of images.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_images, 3, height, width)`):
                The images, as the processor makes them.

        Returns:
            [`BaseModelOutputWithPooling`]: the vision tower's outputs, with `pooler_output` of shape
            `(num_images, num_image_tokens, text_hidden_size)`: the [CLS] token of each hidden state in
            `config.vision_feature_layers`, projected to the LLM width. `hidden_states` (all of the vision tower's) are
            returned when `output_hidden_states=True` is passed or set in `config.output_hidden_states`.
        """
        self._check_weights_loaded()
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values must have shape (num_images, 3, height, width); got {tuple(pixel_values.shape)}. "
                "Prepare images with LavinProcessor."
            )
        if not pixel_values.is_floating_point():
            raise ValueError(
                f"pixel_values must be normalised floating-point images; got dtype {pixel_values.dtype} (raw pixels "
                "would be read as values up to 255). Use LavinProcessor (or its image processor) to make pixel_values."
            )
        # NaN or inf in one image would spread silently into every token of its row. One reduction and one host sync
        # per call: a forward with images (in `generate`, the prompt step only), small beside the vision tower's cost;
        # skipped under torch.compile, where the graph must not branch on data.
        if not torch.compiler.is_compiling() and not bool(torch.isfinite(pixel_values).all()):
            raise ValueError(
                "pixel_values hold NaN or inf. Use LavinProcessor (or its image processor) to make pixel_values from "
                "the images."
            )
        output_hidden_states = kwargs.pop("output_hidden_states", None)
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        vision_dtype = self.vision_tower.get_input_embeddings().weight.dtype
        # Unless all hidden states are asked for, the vision tower keeps only those the visual tokens use, as LLaVA does.
        image_outputs = self.vision_tower(
            pixel_values.to(vision_dtype),
            output_hidden_states=True if output_hidden_states else list(self.config.vision_feature_layers),
            return_dict=True,
            **kwargs,
        )
        cls_tokens = torch.stack([image_outputs.hidden_states[i][:, 0] for i in self.config.vision_feature_layers], 1)
        projector_dtype = self.multi_modal_projector.linear_1.weight.dtype
        image_outputs.pooler_output = self.multi_modal_projector(cls_tokens.to(projector_dtype))
        if not output_hidden_states:
            image_outputs.hidden_states = None
        return image_outputs

    def get_placeholder_mask(
        self,
        input_ids: torch.LongTensor | None,
        inputs_embeds: torch.Tensor,
        image_features: torch.Tensor | None = None,
    ) -> torch.BoolTensor:
        """
        Positions of the image placeholder tokens, shape `(batch, seq_len)`.

        From `input_ids` when given. From `inputs_embeds` (positions equal to the placeholder's embedding, as LLaVA
        does) only when the placeholder id lies inside the LLM vocabulary; otherwise it has no embedding and the
        positions cannot be told apart, which raises an error naming the alternatives.
        """
        if input_ids is not None:
            return input_ids == self.config.image_token_id
        if not self._image_token_in_vocabulary():
            raise ValueError(
                f"Image positions cannot be read from inputs_embeds: the image token (id {self.config.image_token_id}) "
                f"lies outside the LLM vocabulary ({self.config.text_config.vocab_size}) and has no embedding. Pass "
                "input_ids with pixel_values, or place the visual tokens yourself "
                "(model.get_image_features(pixel_values).pooler_output) and pass inputs_embeds with modality_ids."
            )
        image_embedding = self.get_input_embeddings()(
            torch.full((), self.config.image_token_id, dtype=torch.long, device=inputs_embeds.device)
        )
        return (inputs_embeds == image_embedding).all(-1)

    def get_modality_ids(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """1 for each row that holds image tokens (one image or several), else 0: the index into `modality_embedding`."""
        return (input_ids == self.config.image_token_id).any(dim=-1).long()

    def _image_token_in_vocabulary(self) -> bool:
        return self.config.image_token_id < self.config.text_config.vocab_size

    def _embed_tokens(self, input_ids: torch.LongTensor, image_mask: torch.BoolTensor) -> torch.Tensor:
        if self._image_token_in_vocabulary():
            return self.get_input_embeddings()(input_ids)
        # The placeholder has no row in the embedding: embed a harmless id there; the visual tokens overwrite it.
        return self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))

    def _check_weights_loaded(self) -> None:
        """
        Refuses a model whose weights are on the meta device (built empty, never loaded), unless accelerate's hooks
        bring them in at each call (offloading). Costs an attribute read unless the weights are on the meta device.
        """
        if not self.get_input_embeddings().weight.is_meta:
            return
        if not any(hasattr(module, "_hf_hook") for module in self.modules()):
            raise ValueError(
                "The model's weights are on the meta device (built without weights, e.g. under "
                "`torch.device('meta')`), so it cannot run. Load it with from_pretrained(...), or call "
                "model.to_empty(device=...) and load a state dict."
            )

    def check_input_ids(self, input_ids: torch.LongTensor) -> None:
        """
        Refuses ids the LLM has no embedding for (negative, or at least its vocabulary size), other than the image
        placeholder. The lookup would otherwise fail deep inside torch: an IndexError on CPU, a device-side assert
        that ends the process's use of the GPU on CUDA. Costs one reduction and one host sync.
        """
        vocab_size = self.config.text_config.vocab_size
        outside = (input_ids < 0) | (input_ids >= vocab_size)
        if not self._image_token_in_vocabulary():
            outside &= input_ids != self.config.image_token_id
        if bool(outside.any()):
            examples = input_ids[outside].unique()[:5].tolist()
            raise ValueError(
                f"input_ids hold ids outside the model's vocabulary (0 to {vocab_size - 1}, and the image token "
                f"{self.config.image_token_id}), e.g. {examples}. Tokenize with this model's processor or tokenizer; "
                "after adding tokens to a tokenizer, call model.resize_token_embeddings(len(tokenizer))."
            )

    @staticmethod
    def check_attention_mask(attention_mask: torch.Tensor | None, input_shape: torch.Size) -> None:
        """Refuses a 2D `attention_mask` whose shape is not `(batch_size, sequence_length)` of the inputs."""
        if attention_mask is not None and attention_mask.ndim == 2 and attention_mask.shape != input_shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the inputs have (batch_size, "
                f"sequence_length) {tuple(input_shape)}; they must match. Make both with LavinProcessor (one call, "
                "with padding=True for a batch)."
            )

    def _check_image_tokens(self, image_mask: torch.BoolTensor, num_images: int) -> None:
        per_row = image_mask.sum(dim=-1)
        expected = self.config.num_image_tokens
        torch_compilable_check(
            (per_row % expected == 0).all(),
            lambda: (
                f"Rows hold {per_row.tolist()} image tokens; each image in a row takes exactly {expected} (one per "
                "vision feature layer). LavinProcessor builds matching inputs."
            ),
        )
        torch_compilable_check(
            per_row.sum() == num_images * expected,
            lambda: (
                f"Got {num_images} image(s) in pixel_values but {int((per_row > 0).sum())} row(s) with image tokens "
                f"(id {self.config.image_token_id}), holding {(per_row // expected).tolist()} image(s) per row. Give "
                f"one image per block of {expected} image tokens, in row order (within a row, in order); "
                "LavinProcessor builds matching inputs."
            ),
        )

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        modality_ids: torch.LongTensor | None = None,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | LavinModelOutputWithPast:
        r"""
        modality_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            1 for rows with any image, 0 for text-only rows. Derived from the image tokens when not given; give it
            with `inputs_embeds` whose visual tokens are already in place.
        mm_encoder_outputs (`dict[str, BaseModelOutputWithPooling]`, *optional*):
            Pre-computed `{"image": model.get_image_features(pixel_values)}`, as `generate` passes them.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Give exactly one of input_ids or inputs_embeds.")
        if pixel_values is not None and mm_encoder_outputs is not None:
            raise ValueError("Give pixel_values or mm_encoder_outputs, not both.")
        self._check_weights_loaded()
        if cache is None:
            # A call without a cache holds whole sequences: check them. `generate` checks its prompt once instead
            # (`_expand_inputs_for_generation`), and its later steps feed back ids the model itself produced.
            self.check_attention_mask(
                attention_mask, (input_ids if input_ids is not None else inputs_embeds).shape[:2]
            )
            if input_ids is not None and not torch.compiler.is_compiling():
                self.check_input_ids(input_ids)
        image_mask = None
        if input_ids is not None:
            image_mask = self.get_placeholder_mask(input_ids, None)
            inputs_embeds = self._embed_tokens(input_ids, image_mask)

        mm_encoder_outputs = dict(mm_encoder_outputs or {})
        if mm_encoder_outputs.get("image") is None and pixel_values is not None:
            mm_encoder_outputs["image"] = self.get_image_features(pixel_values, return_dict=True)
        image_outputs = mm_encoder_outputs.get("image")
        if image_outputs is not None:
            image_features = image_outputs.pooler_output
            if isinstance(image_features, (list, tuple)):
                image_features = torch.stack(list(image_features))
            if image_mask is None:
                image_mask = self.get_placeholder_mask(None, inputs_embeds)
            self._check_image_tokens(image_mask, image_features.shape[0])
            inputs_embeds = inputs_embeds.masked_scatter(
                image_mask.unsqueeze(-1), image_features.to(inputs_embeds.device, inputs_embeds.dtype)
            )
        elif image_mask is not None and cache is None and not torch.compiler.is_compiling():
            # A direct call with placeholders but no images is a mistake. Generation (which passes its cache) runs
            # later steps, and an assistant model's whole run, without the images, as LLaVA does.
            if bool(image_mask.any()):
                raise ValueError(
                    "input_ids hold image tokens but no pixel_values were given. Pass the images the processor made."
                )
        if modality_ids is None:
            if image_mask is not None:
                modality_ids = image_mask.any(dim=-1).long()
            else:
                modality_ids = torch.zeros(inputs_embeds.shape[0], dtype=torch.long, device=inputs_embeds.device)

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            modality_ids=modality_ids,
            **kwargs,
        )
        return LavinModelOutputWithPast(**outputs, image_outputs=image_outputs)


class LavinForConditionalGeneration(LavinPreTrainedModel, LlavaForConditionalGeneration, GenerationMixin):
    """
    LaVIN with a language-modelling head, for training and generation.

    Example:

    ```python
    >>> import transformers_lavin
    >>> from transformers import AutoModelForImageTextToText, AutoProcessor
    >>> model = AutoModelForImageTextToText.from_pretrained("path/to/lavin")
    >>> processor = AutoProcessor.from_pretrained("path/to/lavin")
    >>> inputs = processor(images=image, text="\\nQuestion: What is shown?\\nResponse:", return_tensors="pt")
    >>> processor.batch_decode(model.generate(**inputs, max_new_tokens=20), skip_special_tokens=True)
    ```
    """

    def __init__(self, config: LavinConfig):
        LavinPreTrainedModel.__init__(self, config)
        self.model = LavinModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_image_features(
        self, pixel_values: torch.FloatTensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple | BaseModelOutputWithPooling:
        """See [`LavinModel.get_image_features`]."""
        return self.model.get_image_features(pixel_values, **kwargs)

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        modality_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        mm_encoder_outputs: dict[str, BaseModelOutputWithPooling] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | LavinCausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets aligned with `input_ids` (shifted inside); -100 is ignored, and so are the image
            placeholder positions.
        modality_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            See [`LavinModel.forward`].
        mm_encoder_outputs (`dict[str, BaseModelOutputWithPooling]`, *optional*):
            See [`LavinModel.forward`].
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            modality_ids=modality_ids,
            mm_encoder_outputs=mm_encoder_outputs,
            return_dict=True,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            if not torch.compiler.is_compiling():
                self._check_labels(labels)
            if input_ids is not None:  # visual tokens are inputs, never targets
                labels = labels.masked_fill(self.model.get_placeholder_mask(input_ids, None), -100)
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return LavinCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=outputs.image_outputs,
        )

    def _check_labels(self, labels: torch.LongTensor) -> None:
        # As for input_ids: the loss would index the logits with them (a device-side assert on CUDA).
        vocab_size = self.config.text_config.vocab_size
        outside = ((labels < 0) & (labels != -100)) | (labels >= vocab_size)
        if not self.model._image_token_in_vocabulary():
            outside &= labels != self.config.image_token_id  # masked to -100 below
        if bool(outside.any()):
            examples = labels[outside].unique()[:5].tolist()
            raise ValueError(
                f"labels hold ids outside the model's vocabulary (0 to {vocab_size - 1}, or -100 to ignore a "
                f"position), e.g. {examples}. Make labels from input_ids made by this model's processor."
            )

    def resize_token_embeddings(
        self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None, mean_resizing: bool = True
    ) -> nn.Embedding:
        # LaVIN's tokenizer holds the image token, whose id is the first past the LLM's vocabulary and which has no
        # embedding by design, so it is one longer than the vocabulary: resizing to it (as PEFT's AutoPeftModel* do,
        # with len(tokenizer)) keeps the embeddings and the logits' shape.
        vocab_size = self.config.text_config.vocab_size
        if new_num_tokens == vocab_size + 1 == self.config.image_token_id + 1 and pad_to_multiple_of is None:
            return self.get_input_embeddings()
        return super().resize_token_embeddings(new_num_tokens, pad_to_multiple_of, mean_resizing)

    def _expand_inputs_for_generation(
        self,
        expand_size: int = 1,
        is_encoder_decoder: bool = False,
        input_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> tuple[torch.LongTensor, dict]:
        # Called once per `generate`, on the prompt: each row's modality is read here, so tokens generated later
        # (even an image token the model emits) never change it, and beams inherit their row's.
        if input_ids is not None:
            if kwargs.get("inputs_embeds") is None:  # with inputs_embeds, input_ids hold no prompt
                self.model.check_attention_mask(kwargs.get("attention_mask"), input_ids.shape)
            self.model.check_input_ids(input_ids)
        if kwargs.get("modality_ids") is None and input_ids is not None:
            kwargs["modality_ids"] = self.model.get_modality_ids(input_ids)
        return super()._expand_inputs_for_generation(expand_size, is_encoder_decoder, input_ids, **kwargs)


__all__ = ["LavinPreTrainedModel", "LavinModel", "LavinForConditionalGeneration"]
