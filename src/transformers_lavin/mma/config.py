"""Configuration of Mixture-of-Modality Adaptation (MMA) as a PEFT method."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from peft import PeftConfig

from ..adapter_files import WEIGHTS_NAME, check_adapter_directory
from .peft_registration import add_mma_peft_type

ADAPTER_TYPES = ("attn", "block")
VISION_ADAPTER_TYPES = ("normal", "router", "router_block", "none")
# What transformers' vision towers call the attention and the MLP of their blocks, in order of preference.
VISION_ATTENTION_NAMES = ("self_attn", "attn", "attention")
VISION_MLP_NAMES = ("mlp", "feed_forward")


@dataclass
class MMAConfig(PeftConfig):
    """
    Configuration of MMA, LaVIN's Mixture-of-Modality Adaptation. The defaults are the published LaVIN-7B recipe:
    3,781,296 trainable parameters on LLaMA-7B + CLIP ViT-L/14.

    Args:
        adapter_hidden_size (`int`, defaults to 8): Bottleneck width of every adapter.
        groups (`int`, defaults to 2): Groups of the up-projections (block-diagonal weights), as the reference.
        scale (`float`, defaults to 1.0): Scale of the adapter's residual branch.
        temperature (`float`, defaults to 10.0): Softmax temperature of the routers.
        dropout (`float`, defaults to 0.1): Dropout on the adapters' bottleneck activations.
        init_weights (`bool`, defaults to `True`): Zero up-projections, so that a new adapter is the identity, as
            in the reference. `False` draws them at random (PyTorch's Linear initialisation), for tests, as PEFT's
            own methods offer.
        adapter_type (`str`, defaults to `"attn"`): `"attn"` adapts the input of each LLM attention; `"block"`
            also the input of each LLM MLP.
        vision_adapter_type (`str`, defaults to `"router"`): Adapters on the vision tower's blocks: `"router"` (on
            each attention input, routed per token), `"router_block"` (also on each MLP input), `"normal"` (a plain
            RepAdapter, no router) or `"none"`.
        target_modules (`list[str]`, defaults to `["self_attn"]`, also for `None`): Names of the LLM attention modules whose input is
            adapted. The MLPs (`"mlp"`) are added for `adapter_type="block"`; vision modules follow
            `vision_adapter_type` and `vision_target_modules`. An empty list adapts the vision tower only (what a
            merged model keeps of routed vision adapters).
        vision_target_modules (`list[str]`, *optional*): The attention modules of the vision tower's blocks. `None`
            (the default) takes the attention of each block under whichever name its tower uses (`self_attn`: CLIP,
            SigLIP; `attn`: Qwen2-VL and its successors; `attention`: Pixtral, InternVL), and for
            `vision_adapter_type="router_block"` its MLP (`mlp`, or Pixtral's `feed_forward`).
        modules_to_save (`list[str]`): Base-model modules trained and saved in full: LaVIN's projector and modality
            embedding, and the projector of other VLMs under the names they use (`multi_modal_projector`, Idefics3's
            and SmolVLM's `connector`, Qwen2-VL's `merger`). Entries the base model does not have are dropped (a plain
            causal LM has none of them).
        merge_modality (`str`, *optional*): `"image"` or `"text"`: the inputs a merged model serves, used by
            `merge_adapter()` and `merge_and_unload()` when they are not given one (a plain LLM defaults to text).
    """

    adapter_hidden_size: int = field(default=8, metadata={"help": "Bottleneck width of every adapter."})
    groups: int = field(default=2, metadata={"help": "Groups of the up-projections."})
    scale: float = field(default=1.0, metadata={"help": "Scale of the adapter branch."})
    temperature: float = field(default=10.0, metadata={"help": "Router softmax temperature."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the bottleneck activations."})
    init_weights: bool = field(
        default=True, metadata={"help": "Zero up-projections (identity adapters); False draws them at random."}
    )
    adapter_type: Literal["attn", "block"] = field(default="attn", metadata={"help": "attn or block."})
    vision_adapter_type: Literal["normal", "router", "router_block", "none"] = field(
        default="router", metadata={"help": "normal, router, router_block or none."}
    )
    target_modules: list[str] | str | None = field(
        default_factory=lambda: ["self_attn"], metadata={"help": "LLM attention modules to adapt."}
    )
    vision_target_modules: list[str] | None = field(
        default=None,
        metadata={
            "help": "Vision attention modules to adapt; None: each vision block's attention, by its tower's name."
        },
    )
    modules_to_save: list[str] | None = field(
        default_factory=lambda: ["multi_modal_projector", "modality_embedding", "connector", "merger"],
        metadata={"help": "Modules trained and saved in full."},
    )
    merge_modality: Literal["image", "text"] | None = field(
        default=None, metadata={"help": "image or text: the inputs a merged model serves."}
    )

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = add_mma_peft_type()
        self._validate()
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        if self.target_modules is None:  # PEFT's convention: None is the method's default
            self.target_modules = ["self_attn"]
        if not self.target_modules and not self.vision_target_names:
            raise ValueError(
                "target_modules is empty and there are no vision adapters: name the LLM attention modules to adapt, "
                "e.g. ['self_attn']."
            )

    def _validate(self) -> None:
        """Every value checked in one place, for type, finiteness and range, with what to do instead."""
        if self.adapter_type not in ADAPTER_TYPES:
            raise ValueError(f"Unknown adapter_type {self.adapter_type!r}; use one of {ADAPTER_TYPES}.")
        if self.vision_adapter_type not in VISION_ADAPTER_TYPES:
            raise ValueError(
                f"Unknown vision_adapter_type {self.vision_adapter_type!r}; use one of {VISION_ADAPTER_TYPES}."
            )
        if not isinstance(self.init_weights, bool):
            raise ValueError(f"init_weights must be True or False, got {self.init_weights!r}.")
        if self.merge_modality not in (None, "image", "text"):
            raise ValueError(f"merge_modality must be 'image', 'text' or None, got {self.merge_modality!r}.")
        for name in ("adapter_hidden_size", "groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.adapter_hidden_size % self.groups:
            raise ValueError(
                f"adapter_hidden_size ({self.adapter_hidden_size}) must be divisible by groups ({self.groups})."
            )
        for name, low, low_open, high in (
            ("scale", None, False, None),
            ("temperature", 0.0, True, None),
            ("dropout", 0.0, False, 1.0),
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}.")
            if low is not None and (value < low or (low_open and value == low)):
                raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value}.")
            if high is not None and value >= high:
                raise ValueError(f"{name} must be < {high}, got {value}.")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, subfolder: str | None = None, **kwargs) -> MMAConfig:
        """
        PEFT's `from_pretrained`; for a local adapter directory, the config's sizes are first checked against the
        weights' shapes in the safetensors header, so that no layer is built that the weights cannot fill.
        """
        directory = Path(pretrained_model_name_or_path, subfolder or "")
        if (directory / WEIGHTS_NAME).is_file():
            check_adapter_directory(directory)
        return super().from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)

    def save_pretrained(self, save_directory: str, **kwargs) -> None:
        """
        PEFT's `save_pretrained`, with one change to `auto_mapping`: a base model class that transformers loads through
        one of its Auto classes (LaVIN registers itself with `AutoModelForImageTextToText`) is named by that Auto
        class. `AutoPeftModel*` import base classes only from the libraries on PEFT's allowlist (`transformers`), so
        they load such an adapter without `import_allowlist`.
        """
        if kwargs.get("auto_mapping_dict") is not None:
            kwargs["auto_mapping_dict"] = _auto_class_mapping(kwargs["auto_mapping_dict"])
        super().save_pretrained(save_directory, **kwargs)

    @property
    def llm_target_names(self) -> list[str]:
        """Module names adapted in the LLM."""
        return list(self.target_modules) + (["mlp"] if self.adapter_type == "block" else [])

    @property
    def vision_target_names(self) -> list[str]:
        """
        Module names that may be adapted in the vision tower's blocks. With `vision_target_modules=None` these are
        the candidates: the tuner adapts the first attention name (and MLP name) that the tower's blocks use.
        """
        if self.vision_adapter_type == "none":
            return []
        attention = list(VISION_ATTENTION_NAMES if self.vision_target_modules is None else self.vision_target_modules)
        return attention + (list(VISION_MLP_NAMES) if self.vision_adapter_type == "router_block" else [])


def _auto_class_mapping(mapping: dict[str, str]) -> dict[str, str]:
    """`{"base_model_class", "parent_library"}` naming transformers' Auto class of a class registered with one."""
    if mapping["parent_library"].split(".")[0] == "transformers":
        return mapping
    base_class = getattr(sys.modules.get(mapping["parent_library"]), mapping["base_model_class"], None)
    auto_class = getattr(base_class, "_auto_class", None)  # set by `register_for_auto_class`
    if auto_class is None:
        return mapping
    return {"base_model_class": auto_class, "parent_library": "transformers"}
