"""The models compared, built from one `BenchShape` with random weights (no downloads).

- `lavin`: LaVIN without adapters (the base model of the MMA overhead comparison).
- `mma`: LaVIN with the default `MMAConfig` (PEFT model, adapters unmerged).
- `mma_merged`: the same, merged for image prompts (`merge_and_unload(modality="image")`).
- `llava`: transformers' LLaVA on the same CLIP tower and LLM: 2-layer GELU projector, all 256 patch tokens of the
  penultimate CLIP layer. With LoRA merged, LLaVA-1.5 is exactly this model at inference.
- `llava_lora`: LLaVA with the LLaVA-1.5 LoRA recipe: r=128, alpha=256, dropout 0.05 on every linear layer of the
  LLM, the projector trained in full, the vision tower frozen.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from transformers_lavin import LavinConfig, LavinForConditionalGeneration, MMAConfig

from .shapes import BenchShape

MODEL_KINDS = ("lavin", "mma", "mma_merged", "llava", "llava_lora")
BOS_TOKEN_ID, EOS_TOKEN_ID, PAD_TOKEN_ID = 1, 2, 0
LLM_LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def llama_config(shape: BenchShape) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.llm_hidden,
        intermediate_size=shape.llm_intermediate,
        num_hidden_layers=shape.llm_layers,
        num_attention_heads=shape.llm_heads,
        num_key_value_heads=shape.llm_heads,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=PAD_TOKEN_ID,
        tie_word_embeddings=False,
    )


def clip_config(shape: BenchShape) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=shape.vision_hidden,
        intermediate_size=shape.vision_intermediate,
        num_hidden_layers=shape.vision_layers,
        num_attention_heads=shape.vision_heads,
        image_size=shape.image_size,
        patch_size=shape.patch_size,
        hidden_act="quick_gelu",
    )


def lavin_image_token_id(shape: BenchShape) -> int:
    return shape.vocab_size  # outside the LLM vocabulary, as LaVIN allows


def llava_image_token_id(shape: BenchShape) -> int:
    # LLaVA embeds its image token before overwriting it, so the id must be inside the vocabulary: take the last id
    # (synthetic text never uses it), which keeps both LLMs exactly the same size.
    return shape.vocab_size - 1


def lavin_config(shape: BenchShape) -> LavinConfig:
    return LavinConfig(
        vision_config=clip_config(shape),
        text_config=llama_config(shape),
        vision_feature_layers=shape.vision_feature_layers,
        image_token_id=lavin_image_token_id(shape),
        bos_token_id=BOS_TOKEN_ID,
        eos_token_id=EOS_TOKEN_ID,
        pad_token_id=PAD_TOKEN_ID,
    )


def llava_config(shape: BenchShape) -> LlavaConfig:
    return LlavaConfig(
        vision_config=clip_config(shape),
        text_config=llama_config(shape),
        image_token_index=llava_image_token_id(shape),
        image_seq_length=shape.num_patches,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )


def llava_lora_config() -> LoraConfig:
    """The LLaVA-1.5 LoRA recipe: every linear layer of the LLM (not of CLIP), plus the projector in full."""
    pattern = r".*language_model\..*\.(" + "|".join(LLM_LINEAR_NAMES) + ")"
    return LoraConfig(
        r=128, lora_alpha=256, lora_dropout=0.05, target_modules=pattern, modules_to_save=["multi_modal_projector"]
    )


def quantize_llm_4bit(model: nn.Module, compute_dtype: torch.dtype = torch.bfloat16) -> int:
    """
    Replace every `nn.Linear` of the LLM decoder by a bitsandbytes NF4 `Linear4bit` holding the same weights, in place
    (what `from_pretrained(quantization_config=...)` does for a checkpoint; here the weights are random). The vision
    tower, projector, embeddings and LM head stay as they are, as in LaVIN-lite. Returns the number replaced.
    """
    try:
        import bitsandbytes as bnb
    except ImportError as error:
        raise ImportError("--load_in_4bit needs bitsandbytes: pip install 'transformers-lavin[quant]'.") from error
    replaced = 0
    for module in list(model.get_decoder().modules()):
        for name, child in list(module.named_children()):
            if type(child) is not nn.Linear:
                continue
            device = child.weight.device
            quantized = bnb.nn.Linear4bit(
                child.in_features,
                child.out_features,
                bias=child.bias is not None,
                compute_dtype=compute_dtype,
                quant_type="nf4",
                device="meta",
            )
            quantized.weight = bnb.nn.Params4bit(
                child.weight.data.to(compute_dtype), requires_grad=False, quant_type="nf4", module=quantized
            )
            if child.bias is not None:
                quantized.bias = nn.Parameter(child.bias.data.to(compute_dtype), requires_grad=False)
            setattr(module, name, quantized.to(device))  # moving a Params4bit quantises it
            replaced += 1
    return replaced


def _instantiate(model_class, config, device: str | torch.device, dtype: torch.dtype) -> nn.Module:
    with torch.device(device):
        return model_class._from_config(config, dtype=dtype)


def build_model(
    kind: str,
    shape: BenchShape,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    load_in_4bit: bool = False,
    gradient_checkpointing: bool = False,
) -> nn.Module:
    """
    Build one of `MODEL_KINDS` at `shape` with random weights, directly on `device` (use `"meta"` to count
    parameters without memory).

    Args:
        kind: One of `MODEL_KINDS`.
        shape: The backbone shape.
        device: Where the weights live.
        dtype: Dtype of the backbone weights (adapters stay in fp32 in both PEFT methods).
        seed: Seed for the random weights.
        load_in_4bit: Quantise the LLM's linear layers to NF4 (LaVIN-lite / QLoRA style).
        gradient_checkpointing: Enable non-reentrant gradient checkpointing on the vision tower and the LLM.
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"Unknown model kind {kind!r}; choose one of {MODEL_KINDS}.")
    torch.manual_seed(seed)
    if kind.startswith("llava"):
        model = _instantiate(LlavaForConditionalGeneration, llava_config(shape), device, dtype)
    else:
        model = _instantiate(LavinForConditionalGeneration, lavin_config(shape), device, dtype)
    if load_in_4bit:
        if kind == "mma_merged":
            raise ValueError("Merging folds adapters into full-precision weights; a 4-bit base cannot be merged.")
        quantize_llm_4bit(model, compute_dtype=dtype if dtype != torch.float32 else torch.bfloat16)
    if gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if kind in ("mma", "mma_merged"):
        model = get_peft_model(model, MMAConfig())
        if kind == "mma_merged":
            model = model.merge_and_unload(modality="image")
    elif kind == "llava_lora":
        model = get_peft_model(model, llava_lora_config())
    return model


def parameter_count(parameter: torch.Tensor) -> int:
    """Elements of a parameter; a packed 4-bit weight counts as its unquantised shape."""
    quant_state = getattr(parameter, "quant_state", None)
    if quant_state is not None:
        return int(torch.Size(quant_state.shape).numel())
    return parameter.numel()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameters (4-bit weights counted unpacked)."""
    trainable = total = 0
    for parameter in model.parameters():
        count = parameter_count(parameter)
        total += count
        trainable += count if parameter.requires_grad else 0
    return {"trainable": trainable, "total": total}
