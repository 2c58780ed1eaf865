"""LaVIN processor: image processor + tokenizer, writing LaVIN's image prefix after BOS.

Where it differs from LLaVA's processor on purpose (the `"Image: N/A"` prefix of a text-only prompt, the code files
saved with it): docs/model.md.
"""

from typing import NamedTuple

import numpy as np
from PIL import Image
from transformers import BatchFeature, ProcessorMixin
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, ImageInput
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.processing_utils import MultiModalData, ProcessingKwargs, Unpack
from transformers.tokenization_utils_base import PaddingStrategy, TextInput, TruncationStrategy
from transformers.utils import to_py_obj

from .image_loading import load_image

# LaVIN's instruction dialogue format, as in the reference's instruction data and chatbot demo: an optional system
# text on its own line, then `Instruction: {user}\nResponse:{answer}` per turn, the answer directly after the colon
# (the reference strips the space before concatenating) and closed by EOS, turns joined by a newline. The generation
# prompt ends with the `Response:` cue. Image parts: a conversation with one image renders none, so the processor puts
# that image in LaVIN's slot right after BOS, whichever turn it came with (as the reference's chatbot demo does); a
# conversation with several renders the image placeholder (`image_token`, passed in by the processor) where each image
# part stands, and the processor puts each image there. `{% generation %}` marks the answers, so TRL's
# assistant-only loss trains on them alone.
DEFAULT_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- set state = namespace(answered=false, images=0) -%}"
    "{%- for message in messages if message['content'] is not string -%}"
    "{%- set state.images = state.images + message['content'] | selectattr('type', 'equalto', 'image') | list | length -%}"
    "{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{%- set text = message['content'] -%}"
    "{%- else -%}{%- set text = namespace(value='') -%}"
    "{%- for part in message['content'] -%}{%- if part['type'] == 'text' -%}"
    "{%- set text.value = text.value + part['text'] -%}"
    "{%- elif part['type'] == 'image' and state.images > 1 -%}"
    "{%- set text.value = text.value + (image_token if image_token is defined else '<image>') -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- set text = text.value -%}{%- endif -%}"
    "{%- if message['role'] == 'system' -%}{{- text + '\n' -}}"
    "{%- elif message['role'] == 'user' -%}"
    "{%- if state.answered -%}{{- '\n' -}}{%- endif -%}{{- 'Instruction: ' + text + '\n' -}}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{- 'Response:' -}}{% generation %}{{- text + eos_token -}}{% endgeneration %}"
    "{%- set state.answered = true -%}"
    "{%- else -%}{{- raise_exception('LaVIN chat messages have the roles system, user and assistant; got ' + "
    "message['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Response:' -}}{%- endif -%}"
)


# Marks the next character as literal text. `escape_special_tokens` writes it before every EOS string and image
# placeholder typed by a user (and doubles a typed marker), so the processor can tell those from the EOS that ends an
# assistant turn and the placeholders the chat template writes.
ESCAPE = "\ue000"


# Text options of `ProcessingKwargs` that LaVIN's own tokenization (ids written per sample, then padded) cannot
# honour. Passing one is an error rather than an option silently ignored.
UNSUPPORTED_TEXT_OPTIONS = (
    "text_pair",
    "text_target",
    "text_pair_target",
    "stride",
    "is_split_into_words",
    "return_token_type_ids",
    "return_overflowing_tokens",
    "return_special_tokens_mask",
    "return_length",
    "sanitize_control_tokens",
)


def _refuse_unsupported_text_options(text_kwargs: dict) -> None:
    given = sorted(key for key in UNSUPPORTED_TEXT_OPTIONS if text_kwargs.pop(key, None))
    if given:
        raise ValueError(
            f"LavinProcessor does not support {', '.join(given)}: it writes LaVIN's layout itself (user text is "
            "escaped by apply_chat_template or processor.escape_special_tokens, not by sanitize_control_tokens)."
        )


class _Tokenized(NamedTuple):
    """One prompt's text tokens, their offsets (or None) and a record of each image placeholder it holds."""

    ids: list[int]
    offsets: list[tuple[int, int]] | None
    replacements: list[dict]


def lavin_image_processor(image_size: int = 224) -> CLIPImageProcessorPil:
    """The reference's image preprocessing: resize to a square (bicubic, no crop), ImageNet mean and std."""
    return CLIPImageProcessorPil(
        size={"height": image_size, "width": image_size},
        do_center_crop=False,
        resample=Image.Resampling.BICUBIC,
        image_mean=list(IMAGENET_DEFAULT_MEAN),
        image_std=list(IMAGENET_DEFAULT_STD),
    )


class LavinProcessor(ProcessorMixin):
    r"""
    Builds LaVIN inputs. Each image becomes `"Image: "` followed by `num_image_tokens` image tokens (the model puts
    that image's visual tokens there). Where the images go, per sample:
    - no image: BOS, `"Image: N/A"`, then the text, as in the reference;
    - images and as many `image_token` placeholders (`"<image>"`) in the text: BOS, then the text with each
      placeholder replaced by the next image's `"Image: "` + image tokens, as LLaVA's processor does;
    - one image and no placeholder: BOS, `"Image: "`, the image tokens, then the text: LaVIN's one image slot, as in
      the reference (the same tokens as a placeholder at the very start of the text).
    Any other count (placeholders without images, several images without placeholders, ...) is a clear error. The
    prefix is written when the text starts with the BOS token (as chat-template output does) or when
    `add_special_tokens=True` (the default); other text, such as a completion that TRL tokenizes on its own, is
    tokenized as it is (its `<image>` placeholders still take their images). Where this differs from LLaVA's
    processor on purpose: docs/model.md.

    Special tokens in text (the rule, see docs/security.md): text never turns into padding, unknown or any added
    special token other than the image placeholder; those strings are tokenized as the characters they are
    (`split_special_tokens=True`), since the processor writes BOS and the image tokens itself. The structural tokens
    read from text are the EOS string, which the chat template writes after each assistant turn, and the image
    placeholder, which it writes for conversations with several images. Text typed by users reaches the processor
    through [`~LavinProcessor.apply_chat_template`], which escapes both in their text
    ([`~LavinProcessor.escape_special_tokens`]), so a typed `</s>` or `<image>` stays text; call that method yourself
    on user text you put into a prompt by hand.

    Args:
        image_processor ([`BaseImageProcessor`]):
            Resizes and normalises images. LaVIN's default: 224x224 bicubic, no crop, ImageNet mean and std.
        tokenizer ([`PreTrainedTokenizerBase`]):
            The LLM's tokenizer, with `image_token` added as a special token.
        chat_template (`str`, *optional*):
            A Jinja chat template. Defaults to LaVIN's instruction dialogue format ([`DEFAULT_CHAT_TEMPLATE`]):
            `Instruction: {user}\nResponse:{answer}</s>` per turn, a system message on the first line, and the
            `Response:` cue as the generation prompt. A conversation's one image goes into LaVIN's image slot after
            BOS, whichever turn it is attached to; with several images, each goes where its image part stands.
        image_token (`str`, *optional*, defaults to `"<image>"`):
            The placeholder token for visual tokens, and the string that marks where an image goes in the text.
        num_image_tokens (`int`, *optional*, defaults to 6):
            Visual tokens per image; must equal the model's `len(vision_feature_layers)`.
        image_prefix (`str`, *optional*, defaults to `"Image: "`):
            Text written after BOS before the visual tokens.
        no_image_text (`str`, *optional*, defaults to `"N/A"`):
            Text written after `image_prefix` for a sample without an image.
    """

    attributes = ["image_processor", "tokenizer"]
    model_input_names = ["input_ids", "attention_mask", "pixel_values"]

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        image_token: str = "<image>",
        num_image_tokens: int = 6,
        image_prefix: str = "Image: ",
        no_image_text: str = "N/A",
        **kwargs,
    ):
        if tokenizer is None or image_processor is None:
            raise ValueError("LavinProcessor needs both an image_processor and a tokenizer.")
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if self.image_token_id is None or self.image_token_id == tokenizer.unk_token_id:
            raise ValueError(
                f"The tokenizer has no {image_token!r} token. Add it first: "
                f"tokenizer.add_special_tokens({{'additional_special_tokens': [{image_token!r}]}})."
            )
        if tokenizer.bos_token_id is None:
            raise ValueError("LaVIN places the image after BOS, so the tokenizer needs a bos_token.")
        self.num_image_tokens = num_image_tokens
        self.image_prefix = image_prefix
        self.no_image_text = no_image_text
        if chat_template is None:
            chat_template = DEFAULT_CHAT_TEMPLATE
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    # ----------------------------------------------------------------------------------------------------- images
    def _images_per_sample(self, images, placeholders: list[int]) -> list[list]:
        """
        Normalise `images` to one list per sample (empty for text-only samples). A flat list fills the placeholders
        of all prompts in order when the prompts have any (as LLaVA's processor does), else gives one image per prompt.
        """
        batch_size = len(placeholders)
        if images is None:
            return [[] for _ in range(batch_size)]
        if not isinstance(images, (list, tuple)):
            images = [images]
        if len(images) > 0 and all(isinstance(item, (list, tuple)) for item in images):
            per_sample = [list(item) for item in images]
            if len(per_sample) != batch_size:
                raise ValueError(
                    f"Got image lists for {len(per_sample)} samples but {batch_size} prompts. Give one list per "
                    "prompt (an empty list for a text-only prompt)."
                )
        else:
            if any(isinstance(item, (list, tuple)) for item in images):
                raise ValueError("Mixed nested and flat image lists; give one list per prompt, e.g. [[img], []].")
            if sum(placeholders):
                images = [image for image in images if image is not None]  # `None` marks a text-only prompt
                if len(images) != sum(placeholders):
                    raise ValueError(
                        f"Got {len(images)} images for {sum(placeholders)} {self.image_token} placeholders in the "
                        f"prompts. A flat list fills the placeholders in order; give one image per placeholder, or "
                        "one list per prompt, e.g. [[img1, img2], []]."
                    )
                starts = [sum(placeholders[:index]) for index in range(batch_size)]
                per_sample = [
                    list(images[start : start + count]) for start, count in zip(starts, placeholders, strict=True)
                ]
            else:
                if len(images) != batch_size:
                    raise ValueError(
                        f"Got {len(images)} images for {batch_size} prompts. A flat list needs one image per prompt "
                        f"(or one per {self.image_token} placeholder in the prompts); to give a prompt several "
                        "images or none, give one list per prompt, e.g. [[img1, img2], []]."
                    )
                per_sample = [[image] for image in images]
        for sample_images in per_sample:
            sample_images[:] = [image for image in sample_images if image is not None]
        return per_sample

    # ------------------------------------------------------------------------------------------------------- text
    def escape_special_tokens(self, text: str) -> str:
        """
        Escape user text so that no part of it is read as a special token: each EOS string, image placeholder (and
        each escape marker, U+E000) gets a U+E000 marker in front, which the processor removes when it tokenizes. All
        other special tokens are never read from text, so they need no escape.
        """
        text = text.replace(ESCAPE, ESCAPE + ESCAPE)
        for token in (self.tokenizer.eos_token, self.image_token):
            if token:
                text = text.replace(token, ESCAPE + token)
        return text

    def apply_chat_template(self, conversation, chat_template: str | None = None, **kwargs):
        """
        Render (and optionally tokenize) messages as transformers does, with the text of every message escaped. The
        template gets the image placeholder as `image_token`.
        """
        if isinstance(conversation, (list, tuple)) and not conversation:
            raise ValueError("The conversation is empty: give at least one message.")
        # transformers' own normalisation first (message objects become dicts, OpenAI image blocks image parts), so
        # every message is checked and escaped as the template will see it.
        conversations, is_batched = self._normalize_conversations(conversation)
        _check_conversations(conversations)
        conversations = [_map_texts(messages, self.escape_special_tokens) for messages in conversations]
        if "image_token" in str(chat_template or self.chat_template):
            kwargs.setdefault("image_token", self.image_token)
        return super().apply_chat_template(conversations if is_batched else conversations[0], chat_template, **kwargs)

    def _image_ids(self) -> list[int]:
        """The tokens of one image: `image_prefix`, then `num_image_tokens` image tokens."""
        prefix_ids = self.tokenizer.encode(self.image_prefix, add_special_tokens=False)
        return prefix_ids + [self.image_token_id] * self.num_image_tokens

    def replace_image_token(self, image_inputs: dict | None = None, image_idx: int = 0, **kwargs) -> str:
        """
        The text an `<image>` placeholder stands for once expanded: `image_prefix`, then `num_image_tokens` image
        tokens, the same for every image (LaVIN's visual tokens do not depend on the image size). The processor writes
        these ids itself; the string is what `text_replacement_offsets` reports.
        """
        return self.image_prefix + self.image_token * self.num_image_tokens

    def _tokenize_text(self, text: str, with_offsets: bool, shift: int = 0) -> _Tokenized:
        """
        Tokenize without reading special tokens, except unescaped EOS strings and image placeholders (each becomes
        [`_image_ids`]). Offsets index the expanded text: `text` (plus `shift` characters before it) with each
        placeholder replaced by [`replace_image_token`]; the image's own tokens get `(0, 0)`, as added tokens do.
        """
        tokenizer, eos, image = self.tokenizer, self.tokenizer.eos_token, self.image_token
        replacement = self.replace_image_token()
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        replacements: list[dict] = []
        gained = 0  # characters the placeholders so far added to the expanded text
        run, positions = [], []  # a stretch of literal text, and where each of its characters is expanded

        def flush() -> None:
            if not run:
                return
            encoding = tokenizer(
                "".join(run), add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=with_offsets
            )
            ids.extend(encoding["input_ids"])
            if with_offsets:
                offsets.extend(
                    (positions[start], positions[end - 1] + 1) if end > start else (positions[start], positions[start])
                    for start, end in encoding["offset_mapping"]
                )
            run.clear()
            positions.clear()

        index = 0
        while index < len(text):
            position = shift + index + gained
            if text[index] == ESCAPE and index + 1 < len(text):
                run.append(text[index + 1])
                positions.append(position + 1)
                index += 2
            elif eos and text.startswith(eos, index):
                flush()
                ids.append(tokenizer.eos_token_id)
                offsets.append((position, position + len(eos)))
                index += len(eos)
            elif text.startswith(image, index):
                flush()
                image_ids = self._image_ids()
                ids.extend(image_ids)
                offsets.extend([(0, 0)] * len(image_ids))  # inputs, never part of an answer
                replacements.append(
                    {
                        "type": "image",
                        "span": (shift + index, shift + index + len(image)),
                        "new_span": (position, position + len(replacement)),
                        "text": image,
                        "replacement": replacement,
                    }
                )
                gained += len(replacement) - len(image)
                index += len(image)
            else:
                run.append(text[index])
                positions.append(position)
                index += 1
        flush()
        return _Tokenized(ids, offsets if with_offsets else None, replacements)

    def _strip_bos(self, text: str, add_prefix: bool) -> tuple[str, int, bool]:
        """`text` without a leading BOS, the characters removed, and whether the sample gets LaVIN's prefix."""
        bos = self.tokenizer.bos_token
        if text.startswith(bos):
            return text[len(bos) :], len(bos), True
        return text, 0, add_prefix

    def _encode_sample(self, index: int, text: str, tokenized: _Tokenized, num_images: int, add_prefix: bool):
        tokenizer = self.tokenizer
        placeholders = len(tokenized.replacements)
        if placeholders != num_images and not (placeholders == 0 and num_images == 1):
            raise ValueError(
                f"Prompt {index} has {placeholders} {self.image_token} placeholder(s) but {num_images} image(s). Write "
                f"one {self.image_token} where each of its images goes (one image may also go without it, into "
                "LaVIN's image slot after BOS); for text that should stay literal, escape it with "
                "processor.escape_special_tokens."
            )
        if not add_prefix:
            if num_images and not placeholders:
                raise ValueError(
                    "An image without an <image> placeholder goes into LaVIN's slot after BOS, but this text gets no "
                    "prefix (no BOS and add_special_tokens=False). Start the text with the BOS token, pass "
                    "add_special_tokens=True, or write the placeholder where the image goes."
                )
            prefix_ids: list[int] = []
        else:
            if not text.strip() and not num_images:
                raise ValueError("Empty prompt: give some text (or an image) to condition on.")
            if placeholders:  # the images are in the text
                prefix_ids = [tokenizer.bos_token_id]
            elif num_images:  # LaVIN's image slot right after BOS
                prefix_ids = [tokenizer.bos_token_id, *self._image_ids()]
            else:
                prefix_text = self.image_prefix + self.no_image_text
                prefix_ids = [tokenizer.bos_token_id, *tokenizer.encode(prefix_text, add_special_tokens=False)]
        ids = prefix_ids + tokenized.ids
        offsets = None if tokenized.offsets is None else [(0, 0)] * len(prefix_ids) + tokenized.offsets
        return ids, offsets

    def __call__(
        self,
        images: ImageInput | None = None,
        text: TextInput | list[TextInput] | None = None,
        **kwargs: Unpack[ProcessingKwargs],
    ) -> BatchFeature:
        """
        Tokenize `text` and process `images` into `input_ids`, `attention_mask` and, when any image is given,
        `pixel_values` (one entry per image, in row order, and within a row in placeholder order).

        Args:
            images: `None`, one image, one list per prompt (possibly empty, e.g. `[[img1, img2], []]`, as TRL's
                collator sends them), or a flat list: it fills the `<image>` placeholders of all prompts in order
                when they have any, else gives one image per prompt. Images may be PIL images, uint8 numpy arrays,
                file paths, `http(s)://` URLs, `data:image/...;base64,` URLs or base64 image bytes (see
                [`~image_loading.load_image`]); every mode is converted to RGB.
            text: one prompt or a list of prompts. Each `<image>` (the processor's `image_token`) marks where the
                prompt's next image goes; a prompt with one image may leave it out (LaVIN's slot after BOS).
            kwargs ([`ProcessingKwargs`]):
                Tokenizer and image-processor options, flat or per modality (`text_kwargs=`, `images_kwargs=`), merged
                with the tokenizer's init options as in every transformers processor. Text: `padding`,
                `padding_side`, `pad_to_multiple_of`, `max_length`, `truncation` (cuts from the right, never inside an
                image), `add_special_tokens`, `return_attention_mask`, `return_offsets_mapping` (offsets index the
                text with each placeholder expanded), `return_tensors`. Images: any option of the image processor
                (`do_rescale`, `size`, ...). Also `return_mm_token_type_ids` and `return_text_replacement_offsets`.
                An unknown name is warned about and ignored, as in transformers' processors; a text option LaVIN
                cannot honour (`stride`, `text_pair`, ...) is an error.
        """
        for modality in ("videos", "audio"):
            if kwargs.pop(modality, None) is not None:
                raise ValueError(f"LavinProcessor takes images and text; got {modality}.")
        if text is None:
            raise ValueError("LavinProcessor needs text (a prompt per sample); images alone are not enough.")
        # Outputs are batched even for one string, as other transformers processors.
        texts = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("text must be a string or a list of strings.")
        if not texts:
            raise ValueError("text is an empty list: give at least one prompt.")
        for index, sample_text in enumerate(texts):
            _check_encodable(sample_text, f"Prompt {index}")
        merged = self._merge_kwargs(tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        text_kwargs, images_kwargs = merged["text_kwargs"], merged["images_kwargs"]
        return_tensors = text_kwargs.pop("return_tensors", None)
        images_kwargs.pop("return_tensors", None)
        _refuse_unsupported_text_options(text_kwargs)
        add_special_tokens = text_kwargs.pop("add_special_tokens", True)
        with_offsets = bool(text_kwargs.pop("return_offsets_mapping", False))
        truncation = text_kwargs.pop("truncation", False)
        truncation = bool(truncation) and truncation not in ("do_not_truncate", TruncationStrategy.DO_NOT_TRUNCATE)
        max_length = text_kwargs.pop("max_length", None)
        padding_side = text_kwargs.pop("padding_side", None)

        stripped = [self._strip_bos(sample_text, add_special_tokens) for sample_text in texts]
        tokenized = [self._tokenize_text(sample_text, with_offsets, shift) for sample_text, shift, _ in stripped]
        per_sample = self._images_per_sample(images, [len(sample.replacements) for sample in tokenized])

        all_ids, all_offsets = [], []
        for index, ((sample_text, _, add_prefix), sample_tokens, sample_images) in enumerate(
            zip(stripped, tokenized, per_sample, strict=True)
        ):
            ids, offsets = self._encode_sample(index, sample_text, sample_tokens, len(sample_images), add_prefix)
            limit = max_length if truncation and max_length is not None else self._model_max_length()
            if limit is not None and len(ids) > limit:
                if not truncation:
                    raise ValueError(
                        f"Prompt {index} is {len(ids)} tokens, over the maximum of {limit}. Shorten it, or pass "
                        "truncation=True with max_length to cut it."
                    )
                image_end = max((i + 1 for i, t in enumerate(ids) if t == self.image_token_id), default=0)
                if limit < image_end:
                    raise ValueError(
                        f"max_length={limit} would cut into the image tokens of prompt {index}, which end at "
                        f"position {image_end}. Use a larger max_length."
                    )
                ids = ids[:limit]
                offsets = offsets[:limit] if offsets is not None else None
            all_ids.append(ids)
            all_offsets.append(offsets)

        padding = text_kwargs.pop("padding", False)
        # The ids are already cut to max_length above: the tokenizer needs it only to pad up to it (and warns when
        # it is given with any other padding).
        pad_to = max_length if padding == PaddingStrategy.MAX_LENGTH else None
        data = dict(
            self.tokenizer.pad(
                {"input_ids": all_ids},
                padding=padding,
                max_length=pad_to,
                pad_to_multiple_of=text_kwargs.pop("pad_to_multiple_of", None),
                padding_side=padding_side,
                return_attention_mask=text_kwargs.pop("return_attention_mask", None) is not False,
            )
        )
        if with_offsets:
            data["offset_mapping"] = self._pad_offsets(all_offsets, data["input_ids"], padding_side)
        if merged.get("return_mm_token_type_ids"):
            data["mm_token_type_ids"] = self.create_mm_token_type_ids(data["input_ids"])
        if merged.get("return_text_replacement_offsets"):
            data["text_replacement_offsets"] = [sample.replacements for sample in tokenized]

        reduce_to = self.input_image_size(images_kwargs)
        flat_images = [
            load_image(image, reduce_to=reduce_to) for sample_images in per_sample for image in sample_images
        ]
        if flat_images:
            data["pixel_values"] = np.asarray(
                self.image_processor(images=flat_images, return_tensors="np", **images_kwargs)["pixel_values"]
            )
        return BatchFeature(data=data, tensor_type=return_tensors, skip_tensor_conversion=self.skip_tensor_conversion)

    def decode(self, token_ids, **kwargs) -> str:
        """The tokenizer's `decode`, after checking that every id is one of its tokens (see [`batch_decode`])."""
        self._check_token_ids(token_ids)
        return super().decode(token_ids, **kwargs)

    def batch_decode(self, sequences, **kwargs) -> list[str]:
        """
        The tokenizer's `batch_decode`, after checking that every id is one of its tokens: an id outside the
        vocabulary (negative, too large, not an integer) is a clear error instead of an overflow deep in the
        tokenizer or a token silently dropped.
        """
        self._check_token_ids(sequences)
        return super().batch_decode(sequences, **kwargs)

    def _check_token_ids(self, token_ids) -> None:
        size = len(self.tokenizer)
        pending = [to_py_obj(token_ids)]
        while pending:
            item = pending.pop()
            if isinstance(item, (list, tuple)):
                pending.extend(item)
            elif isinstance(item, bool) or not isinstance(item, int) or not 0 <= item < size:
                raise ValueError(
                    f"Cannot decode the id {item!r}: token ids are integers from 0 to {size - 1} for this tokenizer. "
                    "Decode ids made by this model and processor."
                )

    def _get_num_multimodal_tokens(self, image_sizes: list[list[int]] | None = None, **kwargs) -> MultiModalData:
        """
        The number of image tokens each image takes, for serving engines (as LLaVA's processor reports it).

        Args:
            image_sizes (`list[list[int]]`, *optional*):
                `(height, width)` of each image. LaVIN gives every image `num_image_tokens` tokens, whatever its size.

        Returns:
            [`MultiModalData`]: `num_image_tokens` and `num_image_patches` (1) per image.
        """
        if image_sizes is None:
            return MultiModalData()
        return MultiModalData(
            num_image_tokens=[self.num_image_tokens] * len(image_sizes), num_image_patches=[1] * len(image_sizes)
        )

    def _pad_offsets(self, offsets: list[list], padded_ids: list[list[int]], padding_side: str | None) -> list:
        side = padding_side or self.tokenizer.padding_side
        result = []
        for sample_offsets, ids in zip(offsets, padded_ids, strict=True):
            pad = [(0, 0)] * (len(ids) - len(sample_offsets))
            result.append(pad + sample_offsets if side == "left" else sample_offsets + pad)
        return result

    def input_image_size(self, images_kwargs: dict | None = None) -> tuple[int, int] | None:
        """
        `(height, width)` the image processor resizes to (with `images_kwargs` given at call time), so big images can
        be shrunk before that; `None` when it does not resize.
        """
        images_kwargs = images_kwargs or {}
        if not images_kwargs.get("do_resize", getattr(self.image_processor, "do_resize", True)):
            return None
        size = images_kwargs.get("size") or getattr(self.image_processor, "size", None) or {}
        if isinstance(size, int):
            return size, size
        if "height" in size and "width" in size:
            return int(size["height"]), int(size["width"])
        if "shortest_edge" in size:
            return (int(size["shortest_edge"]),) * 2
        return None

    def _model_max_length(self) -> int | None:
        limit = getattr(self.tokenizer, "model_max_length", None)
        # Tokenizers without a known limit report a huge sentinel value.
        return limit if isinstance(limit, int) and limit < 1_000_000 else None


def _check_encodable(text: str, where: str) -> None:
    """Refuses text the tokenizer cannot take: a lone surrogate (e.g. from a bad decode) is not valid Unicode."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(
            f"{where} holds {text[e.start : e.end]!r} at character {e.start}, a lone surrogate that is not valid "
            "text. Decode the input correctly (e.g. bytes.decode('utf-8', errors='replace')) or remove it."
        ) from None


def _check_conversations(conversations: list[list[dict]]) -> None:
    """
    Refuses messages LaVIN's template cannot render, naming the message: each (a dict, after transformers'
    normalisation) has a string `role` and a `content` that is a string, a list of parts (dicts with a string `type`;
    a text part with a string `text`) or absent.
    """
    fix = "Give messages as {'role': 'user', 'content': 'text'} or content [{'type': 'text', 'text': '...'}]."
    for number, messages in enumerate(conversations):
        prefix = f"Conversation {number}, message" if len(conversations) > 1 else "Message"
        for index, message in enumerate(messages):
            where = f"{prefix} {index}"
            if not isinstance(message.get("role"), str):
                raise ValueError(f"{where} needs a string 'role'; got {message.get('role')!r:.40}. {fix}")
            content = message.get("content")
            if content is None:
                continue
            if isinstance(content, str):
                _check_encodable(content, where)
                continue
            if not isinstance(content, (list, tuple)):
                raise ValueError(
                    f"{where} has content of type {type(content).__name__} ({content!r:.40}); content must be a "
                    f"string or a list of parts. {fix}"
                )
            for part_index, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise ValueError(f"{where}, part {part_index} must be a dict with a string 'type'. {fix}")
                if part["type"] == "text":
                    if not isinstance(part.get("text"), str):
                        raise ValueError(
                            f"{where}, part {part_index} is a text part whose 'text' is "
                            f"{type(part.get('text')).__name__}, not a string. {fix}"
                        )
                    _check_encodable(part["text"], f"{where}, part {part_index}")


def _map_texts(conversation, function):
    """A copy of a conversation (or a batch of them) with `function` applied to every message's text."""
    if isinstance(conversation, (list, tuple)):
        return [_map_texts(item, function) for item in conversation]
    if not isinstance(conversation, dict):
        return conversation
    message = dict(conversation)
    content = message.get("content")
    if isinstance(content, str):
        message["content"] = function(content)
    elif isinstance(content, (list, tuple)):
        message["content"] = [
            {**part, "text": function(part["text"])}
            if isinstance(part, dict) and isinstance(part.get("text"), str)
            else part
            for part in content
        ]
    return message


__all__ = ["LavinProcessor", "DEFAULT_CHAT_TEMPLATE", "lavin_image_processor"]
