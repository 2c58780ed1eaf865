"""Reading and checking adapter checkpoints written by the reference LaVIN code (`luogen1996/LaVIN`).

The reference trains only the parameters whose names contain `adapter` and saves them with `torch.save`, either
as a bare dict of tensors or as its training checkpoint `{"model": {...}, "optimizer": ..., "epoch": ...,
"scaler": ..., "args": argparse.Namespace}` (names prefixed with `module.` when trained with DDP). The keys are:

    layers.{i}.adapter_attn.{conv_A,conv_B,conv_D}.{weight,bias}, layers.{i}.adapter_attn.expert_weights.{weight,bias}
    layers.{i}.adapter_mlp.*                                        (adapter_type "block")
    backbone.visual.transformer.resblocks.{i}.adapter_attn.*        (every CLIP block)
    backbone.visual.transformer.resblocks.{i}.adapter_mlp.*         (visual_adapter_type "router_block")
    adapter_proj.{conv_A,conv_B}.{weight,bias}                      (the projector: two nn.Linear)
    adapter_modality_embedding.weight                               (nn.Embedding(2, LLM width))

The adapters' `conv_*` are kernel-1 `nn.Conv1d` (weights of shape (out, in / groups, 1)); `expert_weights` is the
router, an `nn.Linear(width, 2)`. The `normal` visual adapter (RepAdapter) has only `conv_A` and `conv_B`.
"""

from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..cli_errors import UserInputError


class LavinConversionError(UserInputError):
    """A checkpoint or model that cannot be converted; the message says what is wrong and what to do."""


LLM_PREFIX = "layers"
VISION_PREFIX = "backbone.visual.transformer.resblocks"
PROJECTOR_PREFIX = "adapter_proj"
MODALITY_KEY = "adapter_modality_embedding.weight"

# Parameter names inside one reference adapter, per kind.
ROUTER_PARAMS = tuple(
    f"{layer}.{kind}" for layer in ("conv_A", "conv_B", "conv_D", "expert_weights") for kind in ("weight", "bias")
)
PLAIN_PARAMS = tuple(f"{layer}.{kind}" for layer in ("conv_A", "conv_B") for kind in ("weight", "bias"))
PROJECTOR_PARAMS = PLAIN_PARAMS

_ADAPTER_KEY = re.compile(
    r"^(?P<tower>layers|backbone\.visual\.transformer\.resblocks)\.(?P<index>\d+)\."
    r"(?P<site>adapter_attn|adapter_mlp)\.(?P<param>(conv_A|conv_B|conv_D|expert_weights)\.(weight|bias))$"
)
_PROJECTOR_KEY = re.compile(r"^adapter_proj\.(?P<param>(conv_A|conv_B)\.(weight|bias))$")

# Reference adapters are a few MB (their training checkpoints with optimizer state some tens of MB); a `.pth` is a
# zip archive whose entries may be deflated, so this bounds what loading may expand to. Raise it with
# `max_uncompressed_bytes=` (`--max_checkpoint_bytes`).
MAX_CHECKPOINT_BYTES = 1 << 30

# Training-checkpoint entries that are not weights; only "model" is read.
_TRAINING_CHECKPOINT_KEYS = {"model", "optimizer", "epoch", "scaler", "args"}


@dataclass
class AdapterSite:
    """One reference adapter: tensors keyed by parameter name (`conv_A.weight`, ...)."""

    tensors: dict[str, torch.Tensor]

    @property
    def routed(self) -> bool:
        return "expert_weights.weight" in self.tensors

    @property
    def width(self) -> int:
        return self.tensors["conv_A.weight"].shape[1]

    @property
    def hidden_size(self) -> int:
        return self.tensors["conv_A.weight"].shape[0]

    @property
    def groups(self) -> int:
        return self.hidden_size // self.tensors["conv_B.weight"].shape[1]


@dataclass
class ReferenceAdapter:
    """
    A reference LaVIN adapter checkpoint, checked for completeness and consistency.

    Attributes:
        llm: adapters of the LLM, keyed by (layer index, "attn" | "mlp").
        vision: adapters of the CLIP blocks, keyed by (block index, "attn" | "mlp").
        projector: `adapter_proj` tensors keyed by `conv_A.weight`, ...
        modality_embedding: `adapter_modality_embedding.weight`, shape (2, LLM width).
        training_args: the training run's arguments when the checkpoint holds them (`args`), else `None`.
    """

    llm: dict[tuple[int, str], AdapterSite]
    vision: dict[tuple[int, str], AdapterSite]
    projector: dict[str, torch.Tensor]
    modality_embedding: torch.Tensor
    training_args: dict | None = field(default=None)

    @property
    def adapter_type(self) -> str:
        """`"block"` when the LLM has MLP adapters, else `"attn"`."""
        return "block" if any(site == "mlp" for _, site in self.llm) else "attn"

    @property
    def vision_adapter_type(self) -> str:
        """`"none"`, `"normal"`, `"router"` or `"router_block"`, read from the CLIP adapters."""
        if not self.vision:
            return "none"
        if not next(iter(self.vision.values())).routed:
            return "normal"
        return "router_block" if any(site == "mlp" for _, site in self.vision) else "router"

    @property
    def num_llm_layers(self) -> int:
        return len({index for index, _ in self.llm})

    @property
    def num_vision_layers(self) -> int:
        return len({index for index, _ in self.vision})

    @property
    def llm_width(self) -> int:
        return self.modality_embedding.shape[1]

    @property
    def vision_width(self) -> int:
        return self.projector["conv_A.weight"].shape[1]

    @property
    def projector_hidden_size(self) -> int:
        return self.projector["conv_A.weight"].shape[0]

    @property
    def hidden_size(self) -> int:
        return next(iter(self.llm.values())).hidden_size

    @property
    def groups(self) -> int:
        return next(iter(self.llm.values())).groups


# ------------------------------------------------------------------------------------------------------- loading
def _check_not_safetensors(path: Path) -> None:
    # safetensors: an 8-byte little-endian header length, then that many bytes of JSON.
    with path.open("rb") as file:
        head = file.read(9)
    if len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size:
        raise LavinConversionError(
            f"{str(path)!r} is a safetensors file, not a reference LaVIN `.pth` (torch.save). `import` reads the "
            "reference's checkpoints; an MMA adapter in safetensors (adapter_model.safetensors) is already in this "
            "package's format: load its directory with PeftModel.from_pretrained, or export it with `lavin-convert "
            "export --adapter_dir`."
        )


def _check_uncompressed_size(path: Path, max_uncompressed_bytes: int) -> None:
    # Zip entry sizes are in the central directory, readable without inflating anything.
    if not zipfile.is_zipfile(path):
        size = path.stat().st_size  # the legacy format is not compressed
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                size = sum(entry.file_size for entry in archive.infolist())
        except (zipfile.BadZipFile, OSError, ValueError):
            return  # torch.load reports a damaged archive with its own message below
    if size > max_uncompressed_bytes:
        raise LavinConversionError(
            f"{str(path)!r} would expand to {size:,} bytes when loaded, over the limit of {max_uncompressed_bytes:,} "
            "(reference LaVIN adapters are a few MB). If you trust the file, raise the limit: "
            "max_uncompressed_bytes= (lavin-convert import --max_checkpoint_bytes N)."
        )


def load_reference_checkpoint(
    path: str | Path, max_uncompressed_bytes: int = MAX_CHECKPOINT_BYTES
) -> tuple[dict[str, torch.Tensor], dict]:
    """
    Load a reference `.pth` safely (`torch.load(weights_only=True)`) and return its flat dict of tensors and the
    training arguments it records (an empty dict when none).

    Args:
        path: the `.pth`.
        max_uncompressed_bytes: refuse a file whose contents expand to more bytes (read from the zip directory
            before anything is inflated). Defaults to `MAX_CHECKPOINT_BYTES` (1 GiB).

    Raises:
        LavinConversionError: the file is missing, truncated, a safetensors file, too big once expanded, not a
            PyTorch checkpoint, or holds Python objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise LavinConversionError(f"Adapter checkpoint {str(path)!r} does not exist or is not a file.")
    _check_not_safetensors(path)
    _check_uncompressed_size(path, max_uncompressed_bytes)
    try:
        # argparse.Namespace holds the training flags of the reference's checkpoints; allow that class only.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        raise LavinConversionError(
            f"{str(path)!r} holds Python objects other than tensors"
            f"{f' ({found[1]})' if found else ''}, so it is not loaded (only plain tensors are unpickled, for "
            "safety). If you trust the file, load it in a separate session and re-save just the adapter tensors: "
            "torch.save(dict_of_tensors, 'adapter.pth')."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        raise LavinConversionError(
            f"Could not read {str(path)!r} as a PyTorch checkpoint: the file is truncated or not a `.pth` written "
            f"by torch.save. Download it again. Details: {error}"
        ) from None
    return _unwrap(obj, path)


def _unwrap(obj, path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    if not isinstance(obj, dict):
        raise LavinConversionError(
            f"{str(path)!r} holds a {type(obj).__name__}, not a dict of tensors; it is not a LaVIN adapter checkpoint."
        )
    training_args: dict = {}
    if "model" in obj and isinstance(obj["model"], dict) and set(obj) <= _TRAINING_CHECKPOINT_KEYS:
        args = obj.get("args")
        if isinstance(args, argparse.Namespace):
            training_args = vars(args)
        elif isinstance(args, dict):
            training_args = dict(args)
        obj = obj["model"]
    not_tensors = [key for key, value in obj.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise LavinConversionError(
            f"{str(path)!r} is not a flat dict of tensors: entries {sorted(map(str, not_tensors))[:5]} are not tensors. "
            "Give the reference adapter checkpoint (a dict of tensors, or the training checkpoint with them under "
            "'model')."
        )
    # DistributedDataParallel prefixes every name with `module.`; the reference's eval.py strips it too.
    tensors = {key.removeprefix("module."): value for key, value in obj.items()}
    return tensors, training_args


# ------------------------------------------------------------------------------------------------------ parsing
def parse_reference_adapter(tensors: dict[str, torch.Tensor], training_args: dict | None = None) -> ReferenceAdapter:
    """
    Sort the tensors of a reference checkpoint into adapters and check that nothing is unknown, missing or
    inconsistent in shape.

    Raises:
        LavinConversionError: listing the unknown keys, the missing keys, or the shape that does not fit.
    """
    llm: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    vision: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    projector: dict[str, torch.Tensor] = {}
    modality = tensors.get(MODALITY_KEY)
    unknown = []
    for key, value in tensors.items():
        if key == MODALITY_KEY:
            continue
        if match := _ADAPTER_KEY.match(key):
            tower = llm if match["tower"] == LLM_PREFIX else vision
            site = "attn" if match["site"] == "adapter_attn" else "mlp"
            tower.setdefault((int(match["index"]), site), {})[match["param"]] = value
        elif match := _PROJECTOR_KEY.match(key):
            projector[match["param"]] = value
        else:
            unknown.append(key)
    if not llm and modality is None and not projector:
        raise LavinConversionError(
            f"This is not a LaVIN adapter checkpoint: none of its {len(tensors)} keys is a LaVIN adapter key "
            f"(such as 'layers.0.adapter_attn.conv_A.weight'); found e.g. {sorted(tensors)[:3]}."
        )
    # Adapter weights are floating point; integer or boolean tensors would be cast silently (or fail deep in a copy).
    not_float = sorted(
        key for key, value in tensors.items() if not (isinstance(value, torch.Tensor) and value.is_floating_point())
    )
    if not_float and not unknown:
        dtypes = sorted(
            {str(getattr(tensors[key], "dtype", "")).removeprefix("torch.") or "non-tensor" for key in not_float}
        )
        raise LavinConversionError(
            f"The LaVIN adapter checkpoint holds {len(not_float)} tensor(s) of type {', '.join(dtypes)} where "
            f"floating-point weights belong, e.g. {_preview(not_float)}: it is damaged or not a LaVIN adapter; "
            "use the checkpoint the training wrote."
        )
    if unknown:
        raise LavinConversionError(
            f"Unknown keys in the LaVIN adapter checkpoint ({len(unknown)}): {_preview(unknown)}. Expected only "
            "LaVIN adapter keys (layers.{i}.adapter_attn/adapter_mlp.*, "
            "backbone.visual.transformer.resblocks.{i}.adapter_attn/adapter_mlp.*, adapter_proj.*, "
            "adapter_modality_embedding.weight). Was it saved from a different model?"
        )
    missing = []
    if modality is None:
        missing.append(MODALITY_KEY)
    missing += [f"{PROJECTOR_PREFIX}.{param}" for param in PROJECTOR_PARAMS if param not in projector]
    if not llm:
        missing.append(f"{LLM_PREFIX}.0.adapter_attn.conv_A.weight")
    missing += _missing_in_tower(llm, LLM_PREFIX, routed=True)
    if vision:
        routed = "expert_weights.weight" in next(iter(vision.values()))
        missing += _missing_in_tower(vision, VISION_PREFIX, routed=routed)
    if missing:
        raise LavinConversionError(
            f"The LaVIN adapter checkpoint is incomplete; missing keys ({len(missing)}): {_preview(missing)}. "
            "Refusing to write a partial model."
        )
    adapter = ReferenceAdapter(
        llm={key: AdapterSite(value) for key, value in sorted(llm.items())},
        vision={key: AdapterSite(value) for key, value in sorted(vision.items())},
        projector=projector,
        modality_embedding=modality,
        training_args=training_args or None,
    )
    _check_shapes(adapter)
    return adapter


def _missing_in_tower(tower: dict[tuple[int, str], dict], prefix: str, routed: bool) -> list[str]:
    """Keys missing from a tower: every layer index up to the largest must have every adapter site and parameter."""
    if not tower:
        return []
    indices = range(max(index for index, _ in tower) + 1)
    sites = sorted({site for _, site in tower})
    params = ROUTER_PARAMS if routed else PLAIN_PARAMS
    missing = []
    for index in indices:
        for site in sites:
            found = tower.get((index, site), {})
            name = f"{prefix}.{index}.adapter_{site}"
            missing += [f"{name}.{param}" for param in params if param not in found]
            extra = sorted(set(found) - set(params))
            if extra:  # e.g. a router parameter on a plain adapter: the variants are mixed
                raise LavinConversionError(
                    f"{name} has {extra}, which the other adapters of this tower lack: the checkpoint mixes adapter "
                    "variants and cannot be converted."
                )
    return missing


def _check_shapes(adapter: ReferenceAdapter) -> None:
    llm_width, vision_width = adapter.llm_width, adapter.vision_width
    hidden, groups = adapter.hidden_size, adapter.groups
    _expect(adapter.modality_embedding, (2, llm_width), MODALITY_KEY)
    projector_hidden = adapter.projector_hidden_size
    for param, shape in {
        "conv_A.weight": (projector_hidden, vision_width),
        "conv_A.bias": (projector_hidden,),
        "conv_B.weight": (llm_width, projector_hidden),
        "conv_B.bias": (llm_width,),
    }.items():
        _expect(adapter.projector[param], shape, f"{PROJECTOR_PREFIX}.{param}")
    for tower, prefix, width in ((adapter.llm, LLM_PREFIX, llm_width), (adapter.vision, VISION_PREFIX, vision_width)):
        for (index, site), adapter_site in tower.items():
            for param, shape in site_shapes(width, hidden, groups, adapter_site.routed).items():
                _expect(adapter_site.tensors[param], shape, f"{prefix}.{index}.adapter_{site}.{param}")


def site_shapes(width: int, hidden: int, groups: int, routed: bool) -> dict[str, tuple[int, ...]]:
    """Shapes of one reference adapter's tensors (Conv1d weights keep their kernel axis of size 1)."""
    shapes = {
        "conv_A.weight": (hidden, width, 1),
        "conv_A.bias": (hidden,),
        "conv_B.weight": (width, hidden // groups, 1),
        "conv_B.bias": (width,),
    }
    if routed:
        shapes |= {
            "conv_D.weight": (width, hidden // groups, 1),
            "conv_D.bias": (width,),
            "expert_weights.weight": (2, width),
            "expert_weights.bias": (2,),
        }
    return shapes


def _expect(tensor: torch.Tensor, shape: tuple[int, ...], key: str) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise LavinConversionError(
            f"{key} has shape {tuple(tensor.shape)}, expected {tuple(shape)} from the rest of the checkpoint. The "
            "checkpoint is inconsistent or not a LaVIN adapter."
        )


def _preview(keys: list[str], limit: int = 8) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")
