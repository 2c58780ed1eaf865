"""LaVIN model configuration."""

from __future__ import annotations

from transformers import AutoConfig, CLIPVisionConfig, PreTrainedConfig

# LaVIN's image encoder: CLIP ViT-L/14 at 224 pixels.
_CLIP_VIT_L14 = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}

# LLaMA-7B shapes.
_LLAMA_7B = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-6,
}


def _as_config(value: PreTrainedConfig | dict | None, default_type: str, defaults: dict) -> PreTrainedConfig:
    if isinstance(value, PreTrainedConfig):
        return value
    if value is None:
        value = {"model_type": default_type, **defaults}
    if not isinstance(value, dict):
        raise TypeError(f"Expected a config object or a dict, got {type(value).__name__}.")
    value = dict(value)
    model_type = value.pop("model_type", default_type)
    if model_type == "clip":  # a full CLIP config: keep its vision part
        return CLIPVisionConfig(**value.get("vision_config", {}))
    return AutoConfig.for_model(model_type, **value)


class LavinConfig(PreTrainedConfig):
    r"""
    Configuration of a [`LavinForConditionalGeneration`]: a frozen CLIP vision tower and a frozen decoder-only LLM
    joined by LaVIN's light projector and modality token. The adapters themselves (MMA) are a PEFT method and live in
    [`MMAConfig`].

    Args:
        vision_config (`CLIPVisionConfig` or `dict`, *optional*):
            The vision tower's config. Defaults to CLIP ViT-L/14 at 224 pixels.
        text_config (`PreTrainedConfig` or `dict`, *optional*):
            The language model's config (any decoder-only model known to `AutoModel`). Defaults to LLaMA-7B shapes.
        vision_feature_layers (`list[int]`, *optional*):
            Indices into the vision tower's hidden states (0 is the embedding output, `i` the output of block `i`)
            whose [CLS] token becomes one visual token each. Defaults to every 4th block: 4, 8, ..., 24.
        projector_hidden_size (`int`, *optional*, defaults to 128):
            Hidden width of the 2-layer SiLU projector from the vision width to the LLM width.
        image_token_id (`int`, *optional*, defaults to 32000):
            Id of the placeholder token the processor writes where the visual tokens go.
        image_prefix (`str`, *optional*, defaults to `"Image: "`):
            Text the processor writes after BOS before the visual tokens.
        no_image_text (`str`, *optional*, defaults to `"N/A"`):
            Text written after `image_prefix` for a sample without an image.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            Whether the LM head shares the input embedding matrix.

    Example:

    ```python
    >>> from transformers_lavin import LavinConfig, LavinForConditionalGeneration
    >>> config = LavinConfig()  # LLaMA-7B + CLIP ViT-L/14 shapes
    >>> config.num_image_tokens
    6
    ```
    """

    model_type = "lavin"
    sub_configs = {"text_config": AutoConfig, "vision_config": AutoConfig}

    def __init__(
        self,
        vision_config: PreTrainedConfig | dict | None = None,
        text_config: PreTrainedConfig | dict | None = None,
        vision_feature_layers: list[int] | None = None,
        projector_hidden_size: int = 128,
        image_token_id: int = 32000,
        image_prefix: str = "Image: ",
        no_image_text: str = "N/A",
        tie_word_embeddings: bool = False,
        **kwargs,
    ):
        self.vision_config = _as_config(vision_config, "clip_vision_model", _CLIP_VIT_L14)
        self.text_config = _as_config(text_config, "llama", _LLAMA_7B)
        num_vision_layers = self.vision_config.num_hidden_layers
        if vision_feature_layers is None:
            vision_feature_layers = list(range(4, num_vision_layers + 1, 4))
        vision_feature_layers = [int(layer) for layer in vision_feature_layers]
        bad = [layer for layer in vision_feature_layers if not 0 <= layer <= num_vision_layers]
        if bad or not vision_feature_layers:
            raise ValueError(
                f"vision_feature_layers must be a non-empty list of hidden-state indices in [0, {num_vision_layers}] "
                f"(the vision tower has {num_vision_layers} blocks); got {vision_feature_layers}."
            )
        self.vision_feature_layers = vision_feature_layers
        self.projector_hidden_size = projector_hidden_size
        self.image_token_id = image_token_id
        self.image_prefix = image_prefix
        self.no_image_text = no_image_text
        self.tie_word_embeddings = tie_word_embeddings
        super().__init__(**kwargs)

    @property
    def num_image_tokens(self) -> int:
        """Number of visual tokens per image: one per entry of `vision_feature_layers`."""
        return len(self.vision_feature_layers)


__all__ = ["LavinConfig"]
