"""LaVIN: a frozen CLIP vision tower and a frozen decoder-only LLM joined by a light projector and a modality token.

The layout mirrors transformers' LLaVA (`LavinModel` + `LavinForConditionalGeneration`). What is LaVIN's own:
- one visual token per entry of `config.vision_feature_layers`: the [CLS] token of that CLIP hidden state,
- a 2-layer SiLU projector with a 128-wide bottleneck,
- `modality_embedding`, the embedding of LaVIN's modality token (index 1 for a row with an image, 0 for text only).
  The token is never attended by the sequence; it only drives the routers of the MMA adapters (see
  `transformers_lavin.mma`), which is why it is not placed in the sequence here but passed as `modality_ids`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers.initialization import normal_, xavier_uniform_, zeros_
from transformers.modeling_outputs import ModelOutput
from transformers.modeling_utils import slice_logits_to_keep

from .configuration_lavin import LavinConfig


@dataclass
class LavinModelOutputWithPast(ModelOutput):
    """Output of [`LavinModel`]: the LLM's outputs plus the projected visual tokens of the batch's images."""

    last_hidden_state: torch.FloatTensor | None = None
    past_key_values: object | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None


@dataclass
class LavinCausalLMOutputWithPast(ModelOutput):
    """Output of [`LavinForConditionalGeneration`]."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    past_key_values: object | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    image_hidden_states: torch.FloatTensor | None = None


class LavinMultiModalProjector(nn.Module):
    """LaVIN's visual projector: vision width -> `projector_hidden_size` -> SiLU -> LLM width."""

    def __init__(self, config: LavinConfig):
        super().__init__()
        self.linear_1 = nn.Linear(config.vision_config.hidden_size, config.projector_hidden_size)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(config.projector_hidden_size, config.text_config.hidden_size)

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(image_features)))


class LavinPreTrainedModel(PreTrainedModel):
    config: LavinConfig
    config_class = LavinConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values"]
    _no_split_modules = ["CLIPEncoderLayer", "LlamaDecoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        # The reference initialises its own parts this way (Xavier projector, zero biases, N(0, 1) modality token).
        if isinstance(module, LavinMultiModalProjector):
            for linear in (module.linear_1, module.linear_2):
                xavier_uniform_(linear.weight)
                zeros_(linear.bias)
        elif isinstance(module, LavinModel):
            normal_(module.modality_embedding.weight, mean=0.0, std=1.0)


class LavinModel(LavinPreTrainedModel):
    """LaVIN without a language-modelling head: vision tower, projector, modality embedding and language model."""

    def __init__(self, config: LavinConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.multi_modal_projector = LavinMultiModalProjector(config)
        self.modality_embedding = nn.Embedding(2, config.text_config.hidden_size)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_decoder(self) -> nn.Module:
        return self.language_model

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """
        Visual tokens of a batch of images.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_images, 3, height, width)`):
                The images, as the processor makes them.

        Returns:
            `torch.FloatTensor` of shape `(num_images, num_image_tokens, text_hidden_size)`: the [CLS] token of each
            hidden state in `config.vision_feature_layers`, projected to the LLM width.
        """
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"pixel_values must have shape (num_images, 3, height, width); got {tuple(pixel_values.shape)}. "
                "Prepare images with LavinProcessor."
            )
        vision_dtype = self.vision_tower.get_input_embeddings().weight.dtype
        outputs = self.vision_tower(pixel_values.to(vision_dtype), output_hidden_states=True, return_dict=True)
        cls_tokens = torch.stack([outputs.hidden_states[i][:, 0] for i in self.config.vision_feature_layers], dim=1)
        projector_dtype = self.multi_modal_projector.linear_1.weight.dtype
        return self.multi_modal_projector(cls_tokens.to(projector_dtype))

    def get_placeholder_mask(self, input_ids: torch.LongTensor) -> torch.BoolTensor:
        """Positions of the image placeholder tokens, shape `(batch, seq_len)`."""
        return input_ids == self.config.image_token_id

    def get_modality_ids(self, input_ids: torch.LongTensor) -> torch.LongTensor:
        """1 for each row that holds image tokens, else 0: the index into `modality_embedding`."""
        return self.get_placeholder_mask(input_ids).any(dim=-1).long()

    def _check_image_tokens(self, image_mask: torch.BoolTensor, num_images: int) -> None:
        per_row = image_mask.sum(dim=-1)
        rows_with_images = int((per_row > 0).sum())
        expected = self.config.num_image_tokens
        if rows_with_images != num_images:
            raise ValueError(
                f"Got {num_images} image(s) in pixel_values but {rows_with_images} row(s) with image tokens "
                f"(id {self.config.image_token_id}). Give exactly one image per row that has image tokens, in row "
                "order; LavinProcessor builds matching inputs."
            )
        wrong = [i for i, n in enumerate(per_row.tolist()) if n not in (0, expected)]
        if wrong:
            raise ValueError(
                f"Rows {wrong} hold {[int(per_row[i]) for i in wrong]} image tokens; a row with an image must hold "
                f"exactly {expected} (one per vision feature layer). LaVIN takes at most one image per sample."
            )

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: object | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        modality_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> LavinModelOutputWithPast:
        r"""
        modality_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            1 for rows with an image, 0 for text-only rows. Derived from the image tokens in `input_ids` when not
            given; generation passes it on to the decoding steps, whose `input_ids` no longer hold the image tokens.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Give exactly one of input_ids or inputs_embeds.")
        image_features = None
        if input_ids is not None:
            image_mask = self.get_placeholder_mask(input_ids)
            if modality_ids is None:
                modality_ids = image_mask.any(dim=-1).long()
            # The placeholder id may lie outside the LLM's vocabulary: embed a harmless id, then overwrite.
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
            if pixel_values is not None:
                self._check_image_tokens(image_mask, pixel_values.shape[0])
                image_features = self.get_image_features(pixel_values)
                inputs_embeds = inputs_embeds.masked_scatter(
                    image_mask.unsqueeze(-1), image_features.to(inputs_embeds.dtype)
                )
            elif bool(image_mask.any()):
                raise ValueError(
                    "input_ids hold image tokens but no pixel_values were given. Pass the images the processor made."
                )
        elif pixel_values is not None:
            raise ValueError("pixel_values need input_ids to find the image tokens; inputs_embeds cannot hold them.")
        if modality_ids is None:
            modality_ids = torch.zeros(inputs_embeds.shape[0], dtype=torch.long, device=inputs_embeds.device)

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            modality_ids=modality_ids,
            **kwargs,
        )
        return LavinModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=image_features,
        )


class LavinForConditionalGeneration(LavinPreTrainedModel, GenerationMixin):
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

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: LavinConfig):
        super().__init__(config)
        self.model = LavinModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_decoder(self) -> nn.Module:
        return self.model.get_decoder()

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        return self.model.get_image_features(pixel_values)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: object | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        modality_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> LavinCausalLMOutputWithPast:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            Next-token targets aligned with `input_ids` (shifted inside); -100 is ignored, and so are the image
            placeholder positions.
        modality_ids (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            See [`LavinModel.forward`].
        """
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            modality_ids=modality_ids,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            if input_ids is not None:  # visual tokens are inputs, never targets (and lie outside the vocabulary)
                labels = labels.masked_fill(self.model.get_placeholder_mask(input_ids), -100)
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return LavinCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs) -> dict:
        # Decoding steps see only the newest token, so the modality of each row is read once from the full sequence.
        model_inputs = super().prepare_inputs_for_generation(input_ids, **kwargs)
        if model_inputs.get("modality_ids") is None and input_ids is not None and input_ids.shape[-1] > 0:
            model_inputs["modality_ids"] = self.model.get_modality_ids(input_ids)
        return model_inputs


__all__ = ["LavinPreTrainedModel", "LavinModel", "LavinForConditionalGeneration"]
