"""transformers' `ProcessorTesterMixin` (tests/test_processing_common.py of the installed release's sdist) on
`LavinProcessor`, and on `LlavaProcessor` as the control, both built from the same local tiny parts: the byte-level
tokenizer of `transformers_lavin.testing_utils` (with `<image>`) and a CLIP image processor."""

import unittest

from transformers import LlavaProcessor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers_upstream_tests.test_processing_common import ProcessorTesterMixin

from transformers_lavin import LavinProcessor, lavin_image_processor
from transformers_lavin.testing_utils import build_byte_tokenizer

IMAGE_SIZE = 30
PATCH_SIZE = 6

# LLaVA-1.5's conversation format, written here: the control's Hub template cannot be downloaded.
LLAVA_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- message['role'] | upper + ': ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<image>\n' -}}{%- elif part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


class LavinProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    upstream_tester, model_name = "ProcessorTesterMixin", "lavin"
    processor_class = LavinProcessor

    @classmethod
    def _setup_tokenizer(cls):
        return build_byte_tokenizer()

    @classmethod
    def _setup_image_processor(cls):
        return lavin_image_processor(IMAGE_SIZE)

    @staticmethod
    def prepare_processor_dict():
        return {"num_image_tokens": 2}


class LlavaProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    upstream_tester, model_name = "ProcessorTesterMixin", "llava"
    processor_class = LlavaProcessor

    @classmethod
    def _setup_tokenizer(cls):
        return build_byte_tokenizer()

    @classmethod
    def _setup_image_processor(cls):
        return CLIPImageProcessorPil(
            size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
        )

    @staticmethod
    def prepare_processor_dict():
        return {
            "patch_size": PATCH_SIZE,
            "vision_feature_select_strategy": "default",
            "num_additional_image_tokens": 1,
            "chat_template": LLAVA_CHAT_TEMPLATE,
        }
