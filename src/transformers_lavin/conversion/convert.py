"""Reference LaVIN adapter checkpoint + LLaMA + CLIP (HF format) -> a LaVIN base and an MMA adapter, or a merged model."""

from __future__ import annotations

import dataclasses
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import get_peft_model, set_peft_model_state_dict
from safetensors.torch import save_file
from transformers.utils.hub import convert_file_size_to_int

from ..mma import GroupedLinear, MMAConfig
from ..mma.folding import fold
from .base import (
    build_base_model,
    build_lavin_config,
    lavin_base_state_dict,
    load_hf_state_dict,
    load_text_config,
    load_tokenizer,
    load_vision_config,
    write_base,
)
from .key_mapping import expected_adapter_state, mma_config_for, reference_to_peft
from .reference_format import (
    MAX_CHECKPOINT_BYTES,
    LavinConversionError,
    ReferenceAdapter,
    load_reference_checkpoint,
    parse_reference_adapter,
)
from .staging import staged_outputs

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"


@dataclass
class ConversionResult:
    """What a conversion wrote, and the adapter settings it used."""

    mma_config: MMAConfig
    base_dir: Path | None = None
    adapter_dir: Path | None = None
    merged_dir: Path | None = None
    merged_modality: str | None = None


def read_reference_adapter(
    checkpoint: str | Path,
    adapter_type: str | None = None,
    vision_adapter_type: str | None = None,
    scale: float | None = None,
    temperature: float | None = None,
    max_uncompressed_bytes: int = MAX_CHECKPOINT_BYTES,
) -> tuple[ReferenceAdapter, MMAConfig]:
    """
    Load and check a reference adapter checkpoint and work out its MMA settings.

    The adapter variants and sizes are read from the tensors; `adapter_type` / `vision_adapter_type`, when given,
    must agree with them. The router temperature and the scale are not stored in tensors: they come from the
    arguments, else from the training arguments the checkpoint records (`args.temperature`, `args.adapter_scale`).
    The published scripts use temperature 10 for 7B and 5 for 13B and the chatbot, and scale 1.
    """
    tensors, training_args = load_reference_checkpoint(checkpoint, max_uncompressed_bytes)
    adapter = parse_reference_adapter(tensors, training_args)
    for name, given, found in (
        ("adapter_type", adapter_type, adapter.adapter_type),
        ("vision_adapter_type", vision_adapter_type, adapter.vision_adapter_type),
    ):
        if given is not None and given != found:
            raise LavinConversionError(
                f"{name}={given!r} was asked for, but the checkpoint's tensors are those of {name}={found!r}. Leave "
                "the option out to use what the checkpoint holds."
            )
    recorded = adapter.training_args or {}
    temperature = _setting("temperature", temperature, recorded.get("temperature"))
    if temperature is None:
        raise LavinConversionError(
            "The checkpoint does not record the router temperature (it holds no training args). Pass it: "
            "temperature=10 (--temperature 10) for the published 7B models, 5 for the 13B and chatbot models."
        )
    scale = _setting("adapter_scale", scale, recorded.get("adapter_scale"))
    return adapter, mma_config_for(adapter, scale=1.0 if scale is None else scale, temperature=temperature)


def _setting(name: str, given: float | None, recorded) -> float | None:
    given = _positive_number(name, given, f"the option {name}")
    if given is not None:
        if recorded is not None and _as_number(recorded) != given:
            logger.warning("Using %s=%s, not the %r the checkpoint was trained with.", name, given, recorded)
        return given
    return _positive_number(name, recorded, f"the checkpoint's saved training args ({name}={recorded!r})")


def _as_number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _positive_number(name: str, value, where: str) -> float | None:
    """`value` as a finite positive float (`None` stays `None`), or an error naming where it came from."""
    if value is None:
        return None
    number = _as_number(value)
    if number is None or not math.isfinite(number) or number <= 0:
        flag = "--temperature" if name == "temperature" else "--scale"
        raise LavinConversionError(
            f"{name} must be a finite number above 0, but {where} gives {value!r}. Pass the right value with {flag} "
            "(10 for the published 7B models, 5 for 13B; scale 1)."
        )
    return number


def convert_lavin_checkpoint(
    checkpoint: str | Path,
    llama_path: str | Path,
    clip_path: str | Path,
    base_dir: str | Path | None = None,
    adapter_dir: str | Path | None = None,
    merged_dir: str | Path | None = None,
    modality: str | None = None,
    adapter_type: str | None = None,
    vision_adapter_type: str | None = None,
    scale: float | None = None,
    temperature: float | None = None,
    overwrite: bool = False,
    max_shard_size: str = "5GB",
    max_uncompressed_bytes: int = MAX_CHECKPOINT_BYTES,
) -> ConversionResult:
    """
    Convert a reference LaVIN adapter checkpoint (`.pth`) into this package's format.

    Give either `base_dir` and `adapter_dir` (a LaVIN base model directory and an MMA adapter directory, loaded
    with `PeftModel.from_pretrained(LavinForConditionalGeneration.from_pretrained(base_dir), adapter_dir)`), or
    `merged_dir` and `modality` (one plain LaVIN model with the adapters folded in, serving prompts of that modality
    only: "image" or "text"). Everything is checked before anything is written; outputs appear complete or not at all.

    Args:
        checkpoint: The reference adapter checkpoint (a dict of tensors, or the training checkpoint with them under
            "model"). Loaded with `torch.load(weights_only=True)`.
        llama_path: The LLaMA (or Vicuna) the adapter was trained on, as a `LlamaForCausalLM` directory in HF format
            with its tokenizer.
        clip_path: CLIP ViT-L/14 in HF format (a `CLIPModel` or a `CLIPVisionModel` directory).
        adapter_type, vision_adapter_type: Expected variants; read from the tensors when left out.
        scale, temperature: Adapter scale and router temperature; read from the checkpoint's training args when
            left out (the temperature must be given when the checkpoint has none).
        overwrite: Replace existing output directories.
        max_shard_size: Largest safetensors shard of the base or merged model.
        max_uncompressed_bytes: Refuse a checkpoint that expands to more bytes (default 1 GiB).

    Raises:
        LavinConversionError: bad or foreign checkpoints, missing or unknown keys, sizes that do not fit the base,
            and outputs this format cannot represent exactly (see `docs/conversion.md`).
    """
    split = base_dir is not None or adapter_dir is not None
    if split == (merged_dir is not None) or (split and (base_dir is None or adapter_dir is None)):
        raise LavinConversionError(
            "Give base_dir and adapter_dir (--base_dir, --adapter_dir), or merged_dir with modality (--merged_dir, "
            "--modality); not both."
        )
    if merged_dir is not None and modality not in ("image", "text"):
        raise LavinConversionError(
            "A merged model serves one modality, because MMA routes by modality: pass modality='image' or 'text' (--modality)."
        )
    try:
        if convert_file_size_to_int(max_shard_size) <= 0:
            raise ValueError("not positive")
    except (ValueError, TypeError):
        raise LavinConversionError(
            f"max_shard_size={max_shard_size!r} is not a size; give a positive size such as '5GB' or '500MB'."
        ) from None
    outputs = {"base_dir": base_dir, "adapter_dir": adapter_dir, "merged_dir": merged_dir}
    check_no_overlap(
        {name: path for name, path in outputs.items() if path is not None},
        {"checkpoint": checkpoint, "llama": llama_path, "clip": clip_path},
    )
    adapter, mma_config = read_reference_adapter(
        checkpoint, adapter_type, vision_adapter_type, scale, temperature, max_uncompressed_bytes
    )
    _check_representable(adapter, merged=merged_dir is not None)

    text_config = load_text_config(llama_path)
    vision_config = load_vision_config(clip_path)
    _check_sizes(adapter, text_config, vision_config)
    config, processor = build_lavin_config(text_config, vision_config, adapter, load_tokenizer(llama_path))

    peft_config = mma_config if merged_dir is None else _merge_config(mma_config, adapter)
    expected_adapter, vision_prefix = expected_adapter_state(config, peft_config)
    llm_only = dataclasses.replace(adapter, vision={}) if peft_config.vision_adapter_type == "none" else adapter
    adapter_state = reference_to_peft(llm_only, expected_adapter, vision_prefix)

    base_state = lavin_base_state_dict(config, load_hf_state_dict(llama_path), load_hf_state_dict(clip_path), adapter)
    base = build_base_model(config, base_state)

    if merged_dir is None:
        targets = [Path(base_dir), Path(adapter_dir)]
        with staged_outputs(targets, overwrite) as (base_tmp, adapter_tmp):
            write_base(base_tmp, base, processor, max_shard_size)
            write_adapter(adapter_tmp, mma_config, adapter_state, base_dir)
        return ConversionResult(mma_config, base_dir=targets[0], adapter_dir=targets[1])

    with staged_outputs([Path(merged_dir)], overwrite) as (merged_tmp,):
        # The base is only a step on the way: written beside the output, then discarded.
        with tempfile.TemporaryDirectory(prefix=".lavin-base-", dir=merged_tmp.parent) as scratch:
            write_base(Path(scratch), base, processor, max_shard_size)
            merged = _merged_model(Path(scratch), peft_config, adapter_state, adapter, modality)
            merged.save_pretrained(merged_tmp, max_shard_size=max_shard_size)
            processor.save_pretrained(merged_tmp)
    return ConversionResult(mma_config, merged_dir=Path(merged_dir), merged_modality=modality)


def check_no_overlap(outputs: dict[str, str | Path], inputs: dict[str, str | Path]) -> None:
    """
    Refuse outputs that are the same directory as, or nested in, another output or an input: writing one would
    replace the other (the base model written, then deleted by moving the adapter onto it).
    """

    def overlap(first: Path, second: Path) -> bool:
        return first == second or first.is_relative_to(second) or second.is_relative_to(first)

    resolved_outputs = {name: Path(path).resolve() for name, path in outputs.items()}
    resolved_inputs = {name: Path(path).resolve() for name, path in inputs.items()}
    names = list(resolved_outputs)
    for index, name in enumerate(names):
        others = {**{other: resolved_outputs[other] for other in names[index + 1 :]}, **resolved_inputs}
        for other, path in others.items():
            if overlap(resolved_outputs[name], path):
                raise LavinConversionError(
                    f"{name}={str(outputs[name])!r} and {other}={str(outputs.get(other, inputs.get(other)))!r} are the "
                    "same directory or one is inside the other, so writing one would destroy the other. Give "
                    "separate directories (e.g. ./lavin-7b-base and ./lavin-7b-sqa)."
                )


def write_adapter(directory: Path, mma_config: MMAConfig, state: dict[str, torch.Tensor], base_dir) -> None:
    """Write an adapter directory in the layout `PeftModel.save_pretrained` uses."""
    config = dataclasses.replace(mma_config)
    config.base_model_name_or_path = str(Path(base_dir).resolve())  # loads from any working directory
    config.save_pretrained(directory)
    save_file(state, str(directory / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})


def _check_representable(adapter: ReferenceAdapter, merged: bool) -> None:
    vision = adapter.vision_adapter_type
    if not merged and vision == "normal":
        raise LavinConversionError(
            "This checkpoint's CLIP adapters are the reference's plain RepAdapter (visual_adapter_type 'normal'), "
            "which feeds each attention B(A(x)) in place of x (no identity path, no scale). MMA's 'normal' adapter "
            "computes x + s*B(A(x)), so an adapter directory would not reproduce the reference. Convert to a merged "
            "model instead (--merged_dir with --modality), where these adapters fold exactly into CLIP's q/k/v."
        )
    if merged and vision in ("router", "router_block"):
        raise LavinConversionError(
            f"Cannot write a merged model: the CLIP adapters of this checkpoint are routed ({vision!r}); each token "
            "picks its own mix, which is not linear and cannot fold into weights, and a plain LaVIN model has no "
            "place to keep them. Convert to a base directory plus an adapter directory (--base_dir "
            "and --adapter_dir), and merge only the LLM adapters after loading if you need to."
        )


def _merge_config(mma_config: MMAConfig, adapter: ReferenceAdapter) -> MMAConfig:
    # The reference's plain CLIP adapters are folded here by hand (their math differs from MMA's 'normal').
    if adapter.vision_adapter_type == "normal":
        return dataclasses.replace(mma_config, vision_adapter_type="none")
    return mma_config


def _check_sizes(adapter: ReferenceAdapter, text_config, vision_config) -> None:
    """The adapter must fit the given LLM and CLIP: same depth and width (e.g. no 13B adapter on a 7B LLaMA)."""
    problems = []
    if (adapter.num_llm_layers, adapter.llm_width) != (text_config.num_hidden_layers, text_config.hidden_size):
        problems.append(
            f"its LLM adapters are for {adapter.num_llm_layers} layers of width {adapter.llm_width}, the given LLM "
            f"has {text_config.num_hidden_layers} layers of width {text_config.hidden_size}"
        )
    vision_size = (vision_config.num_hidden_layers, vision_config.hidden_size)
    if adapter.vision and (adapter.num_vision_layers, adapter.vision_width) != vision_size:
        problems.append(
            f"its CLIP adapters are for {adapter.num_vision_layers} blocks of width {adapter.vision_width}, the given "
            f"CLIP has {vision_size[0]} blocks of width {vision_size[1]}"
        )
    elif adapter.vision_width != vision_config.hidden_size:
        problems.append(
            f"its projector reads width {adapter.vision_width}, CLIP's width is {vision_config.hidden_size}"
        )
    if problems:
        raise LavinConversionError(
            "The adapter checkpoint does not fit the given base models: " + "; ".join(problems) + ". Use the LLaMA "
            "and CLIP the adapter was trained on (a 13B adapter needs LLaMA-13B, and so on)."
        )


def _merged_model(base_dir: Path, peft_config: MMAConfig, adapter_state, adapter: ReferenceAdapter, modality: str):
    from ..modeling_lavin import LavinForConditionalGeneration

    model = LavinForConditionalGeneration.from_pretrained(base_dir)
    peft_model = get_peft_model(model, dataclasses.replace(peft_config))
    result = set_peft_model_state_dict(peft_model, adapter_state)
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise LavinConversionError(f"Adapter tensors were not used by the model: {unexpected[:4]}")
    merged = peft_model.merge_and_unload(modality=modality)
    if adapter.vision_adapter_type == "normal":
        _fold_plain_vision_adapters(merged, adapter)
    return merged


@torch.no_grad()
def _fold_plain_vision_adapters(model, adapter: ReferenceAdapter) -> None:
    """Fold the reference's plain RepAdapters: each CLIP attention reads P x + c with P = B A, c = B a + b."""
    vision = model.model.vision_tower
    layers = getattr(vision, "vision_model", vision).encoder.layers
    for (index, _site), adapter_site in adapter.vision.items():
        tensors = adapter_site.tensors
        up = GroupedLinear(adapter_site.hidden_size, adapter_site.width, adapter_site.groups)
        up.weight.copy_(tensors["conv_B.weight"].squeeze(-1))
        dense_up = up.dense_weight().float()
        down = tensors["conv_A.weight"].squeeze(-1).float()
        shift = dense_up @ tensors["conv_A.bias"].float() + tensors["conv_B.bias"].float()
        fold(layers[index].self_attn, dense_up, down, shift, keep_input=False)
