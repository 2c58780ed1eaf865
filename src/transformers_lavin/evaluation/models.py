"""Model adapters: one interface, `generate(images, prompts, max_new_tokens) -> texts`, for every model.

- [`HFModelAdapter`]: any `AutoModelForImageTextToText` model with its processor (LaVIN, LLaVA, BLIP-2,
  InstructBLIP, ...), with the prompt built the way that model expects;
- [`CallableAdapter`]: any Python callable `(images, prompts) -> texts`, for models with no HF class.
"""

import importlib
import importlib.util
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from ..adapter_files import check_adapter_directory, read_adapter_config

ImageBatch = Sequence[Sequence[Image.Image]]

# Processors of these model types put the image tokens in the sequence themselves, so the prompt gets no placeholder
# (LaVIN's only for one image: a sample with several gets one placeholder per image before the prompt).
SELF_PLACING_MODEL_TYPES = frozenset({"lavin", "blip-2", "instructblip", "instructblipvideo"})
# These need exactly one image per sample; a text-only sample gets a black image.
ONE_IMAGE_MODEL_TYPES = frozenset({"blip-2", "instructblip", "instructblipvideo"})


class ModelAdapter(Protocol):
    """What the runner calls: one list of images and one prompt per sample in, one generated text per sample out."""

    def generate(self, images: ImageBatch, prompts: Sequence[str], max_new_tokens: int) -> list[str]: ...


class CallableAdapter:
    """
    Wraps a callable `(images, prompts) -> texts` (it may also accept a `max_new_tokens` keyword).

    Args:
        function (`Callable`): Gets a list (one per sample) of lists of `PIL.Image.Image` and a list of prompts;
            returns one string per prompt.
    """

    def __init__(self, function: Callable[..., Sequence[str]]) -> None:
        if not callable(function):
            raise TypeError(f"CallableAdapter needs a callable (images, prompts) -> texts; got {function!r}.")
        self.function = function
        try:
            self._takes_max_new_tokens = "max_new_tokens" in inspect.signature(function).parameters
        except (TypeError, ValueError):
            self._takes_max_new_tokens = False

    def generate(self, images: ImageBatch, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        kwargs = {"max_new_tokens": max_new_tokens} if self._takes_max_new_tokens else {}
        texts = list(self.function([list(i) for i in images], list(prompts), **kwargs))
        if len(texts) != len(prompts) or not all(isinstance(text, str) for text in texts):
            raise ValueError(
                f"The model callable must return one string per prompt: got {len(texts)} item(s) for {len(prompts)} "
                f"prompt(s), of types {sorted({type(t).__name__ for t in texts})}."
            )
        return texts


class HFModelAdapter:
    """
    Batched greedy generation with a transformers image-text-to-text model and its processor.

    The prompt is built, in order of preference, from `prompt_template` when given; as is, when the processor places
    the images itself (LaVIN, BLIP-2, InstructBLIP; for LaVIN with several images, one image token per image before
    it); with the processor's chat template when it has one; else as `"{images}\\n{prompt}"` with the processor's
    image token.

    Args:
        model (`PreTrainedModel`): E.g. from `AutoModelForImageTextToText.from_pretrained`.
        processor (`ProcessorMixin`): Its processor.
        prompt_template (`str`, *optional*): A template with `{prompt}` and optionally `{images}` (replaced by one
            image token per image), e.g. `"USER: {images}\\n{prompt} ASSISTANT:"`.
        generation_kwargs (`dict`, *optional*): Extra arguments for `generate` (greedy decoding by default).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        prompt_template: str | None = None,
        generation_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.prompt_template = prompt_template
        self.generation_kwargs = {"do_sample": False, **(generation_kwargs or {})}
        self.model_type = getattr(model.config, "model_type", "")
        text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.is_encoder_decoder = bool(getattr(text_config, "is_encoder_decoder", False))
        self.tokenizer = getattr(processor, "tokenizer", processor)
        if not self.is_encoder_decoder:
            # Decoder-only models continue the last token of each row, so pad on the left.
            self.tokenizer.padding_side = "left"

    @property
    def image_token(self) -> str:
        token = getattr(self.processor, "image_token", None) or getattr(self.tokenizer, "image_token", None)
        return str(getattr(token, "content", token or "<image>"))

    def build_prompt(self, prompt: str, n_images: int) -> str:
        """
        The text given to the processor for one sample.

        Args:
            prompt (`str`): The task's prompt.
            n_images (`int`): How many images the sample has.
        """
        if self.prompt_template is not None:
            return self.prompt_template.format(prompt=prompt, images=self.image_token * n_images)
        if self.model_type == "lavin":
            # The task's text stays text (a literal `<image>` in it takes no image).
            prompt = self.processor.escape_special_tokens(prompt)
            return self.image_token * n_images + prompt if n_images > 1 else prompt
        if self.model_type in SELF_PLACING_MODEL_TYPES:
            return prompt
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}] * n_images + [{"type": "text", "text": prompt}]
            messages = [{"role": "user", "content": content}]
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return f"{self.image_token * n_images}\n{prompt}" if n_images else prompt

    def _processor_images(self, images: ImageBatch) -> Any:
        if self.model_type == "lavin":
            return [list(sample) for sample in images]
        if self.model_type in ONE_IMAGE_MODEL_TYPES:
            # BLIP-style models read exactly one image per sample and have no text-only path.
            return [sample[0] if sample else Image.new("RGB", (224, 224)) for sample in images]
        flat = [image for sample in images for image in sample]
        return flat or None

    def generate(self, images: ImageBatch, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        import torch

        if len(images) != len(prompts):
            raise ValueError(f"Got {len(images)} image lists for {len(prompts)} prompts; give one list per prompt.")
        n_images = [1 if self.model_type in ONE_IMAGE_MODEL_TYPES else len(sample) for sample in images]
        texts = [self.build_prompt(prompt, n) for prompt, n in zip(prompts, n_images, strict=True)]
        inputs = self.processor(images=self._processor_images(images), text=texts, return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device, dtype=self.model.dtype) if hasattr(inputs, "to") else inputs
        kwargs = dict(self.generation_kwargs)
        if self.tokenizer.pad_token_id is not None:
            kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        with torch.no_grad():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, **kwargs)
        if not self.is_encoder_decoder:
            output = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.tokenizer.batch_decode(output, skip_special_tokens=True)]

    def score_options(
        self,
        images: ImageBatch,
        prompts: Sequence[str],
        options: Sequence[Sequence[str]],
        answer_prefix: str,
        suffix: str,
        batch_size: int = 32,
    ) -> list[list[float]]:
        """
        The summed log-probability of each option after `prompt + answer_prefix`, per sample, through
        [`~evaluation.multiple_choice.option_log_likelihoods`] (the function training scores with). The prompt is
        built as for [`generate`], so the options continue exactly the text the model would generate after.
        """
        from .multiple_choice import option_log_likelihoods, option_token_ids

        if not len(images) == len(prompts) == len(options):
            raise ValueError(
                f"Got {len(images)} image lists, {len(prompts)} prompts and {len(options)} option lists; give one of "
                "each per sample."
            )
        prompt_end = answer_prefix.rstrip()
        encoded = []
        for sample_images, prompt in zip(images, prompts, strict=True):
            n_images = 1 if self.model_type in ONE_IMAGE_MODEL_TYPES else len(sample_images)
            text = self.build_prompt(prompt, n_images) + prompt_end
            inputs = self.processor(images=self._processor_images([sample_images]), text=[text], return_tensors="pt")
            encoded.append(inputs.to(dtype=self.model.dtype) if hasattr(inputs, "to") else inputs)
        option_ids = [
            option_token_ids(self.tokenizer, sample_options, answer_prefix, suffix) for sample_options in options
        ]
        pad_token_id = self.tokenizer.pad_token_id
        if pad_token_id is None:
            pad_token_id = self.tokenizer.eos_token_id or 0  # padded positions are masked and never scored
        return option_log_likelihoods(self.model, encoded, option_ids, pad_token_id, batch_size)


def resolve_device(device: str | None) -> str:
    """
    The device to run on: `device` as given (checked), else CUDA when available, else CPU.

    Raises:
        `ValueError`: when a CUDA device is asked for on a machine without CUDA, or the index does not exist.
    """
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device} was asked for, but this machine has no CUDA GPU; use --device cpu.")
        index = device.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    return device


def adapter_base(adapter: str | Path) -> str | None:
    """The base model an adapter directory was trained on (`base_model_name_or_path` of `adapter_config.json`)."""
    return read_adapter_config(adapter).get("base_model_name_or_path") or None


def load_hf_model(
    name_or_path: str | None,
    dtype: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    adapter: str | Path | None = None,
    merge_adapter: str | None = None,
) -> HFModelAdapter:
    """
    Loads a model with `AutoModelForImageTextToText` and `AutoProcessor` and wraps it in [`HFModelAdapter`],
    optionally with a PEFT adapter (MMA, LoRA, ...) on top.

    Args:
        name_or_path (`str`, *optional*): A local directory or a Hub id; with `adapter`, defaults to the adapter's
            base model.
        dtype (`str`, *optional*, defaults to `"auto"`): E.g. `"bfloat16"`.
        device (`str`, *optional*): E.g. `"cuda"`; defaults to CUDA when available, else CPU.
        trust_remote_code (`bool`, *optional*, defaults to `False`)
        adapter (`str | Path`, *optional*): A directory written by `PeftModel.save_pretrained`.
        merge_adapter (`str`, *optional*): Fold the adapter into the base weights before evaluating: `"yes"` for a
            plain `merge_and_unload()`, or a modality (`"image"`, `"text"`) for MMA, whose merge holds for one
            modality. `None` evaluates the unmerged `PeftModel`.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import transformers_lavin  # noqa: F401  (registers "lavin" with the Auto classes and MMA with PEFT)

    device = resolve_device(device)
    if adapter is not None:
        if Path(adapter).is_dir():  # before the base model loads: PEFT builds layers from the config first
            check_merge_mode(check_adapter_directory(adapter).get("peft_type"), merge_adapter, adapter)
        name_or_path = name_or_path or adapter_base(adapter)
        if not name_or_path:
            raise ValueError(f"The adapter at {adapter} names no base model; give it with --model.")
    elif merge_adapter is not None:
        raise ValueError("merge_adapter needs an adapter.")
    if name_or_path is None:
        raise ValueError("Give a model directory or Hub id.")
    model = AutoModelForImageTextToText.from_pretrained(name_or_path, dtype=dtype, trust_remote_code=trust_remote_code)
    processor_source = name_or_path
    if adapter is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter))
        except RuntimeError as error:
            if "size mismatch" not in str(error):
                raise
            raise ValueError(
                f"The adapter at {adapter} was made for another base model: its weights do not fit {name_or_path} "
                f"({_first_size_mismatch(error)}). Give the base it was trained on with --model."
            ) from error
        check_merge_mode(model.peft_config[model.active_adapter].peft_type, merge_adapter, adapter)
        if merge_adapter is not None:
            kwargs = {} if merge_adapter == "yes" else {"modality": merge_adapter}
            model = model.merge_and_unload(**kwargs)
        # A processor saved with the adapter wins over the base model's.
        if (Path(adapter) / "preprocessor_config.json").is_file() or (
            Path(adapter) / "processor_config.json"
        ).is_file():
            processor_source = str(adapter)
    processor = AutoProcessor.from_pretrained(processor_source, trust_remote_code=trust_remote_code)
    return HFModelAdapter(model.to(device), processor)


def check_merge_mode(peft_type: Any, merge_adapter: str | None, adapter: str | Path) -> None:
    """A modality merge (`image`, `text`) is MMA's; every other adapter merges plainly (`yes`)."""
    peft_type = str(getattr(peft_type, "value", peft_type))
    if merge_adapter in ("image", "text") and peft_type != "MMA":
        raise ValueError(
            f"--merge_adapter {merge_adapter} merges an MMA adapter for one modality; the adapter at {adapter} is "
            f"{peft_type}: use --merge_adapter yes."
        )


def _first_size_mismatch(error: RuntimeError) -> str:
    """The first 'size mismatch for <name>: ...' line of a `load_state_dict` error, shortened."""
    for line in str(error).splitlines():
        if "size mismatch for" in line:
            return " ".join(line.split()).removesuffix(".")
    return "the tensor shapes differ"


def load_callable(spec: str) -> CallableAdapter:
    """
    Imports a callable from `"package.module:function"` or `"path/to/file.py:function"`.

    Args:
        spec (`str`): Where the callable is.
    """
    module_name, sep, attribute = spec.rpartition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"A callable is given as 'module:function' or 'file.py:function'; got {spec!r}.")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise FileNotFoundError(f"No Python file at {path} (from the model spec {spec!r}).")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    if not hasattr(module, attribute):
        raise AttributeError(f"{module_name} has no attribute {attribute!r} (from the model spec {spec!r}).")
    return CallableAdapter(getattr(module, attribute))


def load_model(spec: str | None, adapter: str | Path | None = None, **kwargs: Any) -> ModelAdapter:
    """
    A model from a spec: `module:function` or `file.py:function` gives a [`CallableAdapter`]; anything else is a
    model directory or Hub id for [`load_hf_model`] (which gets `adapter` and `kwargs`). With `adapter`, `spec` may be
    `None` (the adapter's base model).
    """
    if spec is not None and adapter is None:
        head, sep, _ = spec.rpartition(":")
        if sep and (head.endswith(".py") or (not Path(spec).exists() and "/" not in head)):
            return load_callable(spec)
    return load_hf_model(spec, adapter=adapter, **kwargs)
