"""transformers' `ModelTesterMixin` and `ConfigTester` (tests/test_modeling_common.py, test_configuration_common.py of
the installed release's sdist) on LaVIN, and on LLaVA as the control: the same tiny LLaMA and CLIP configs, the same
inputs (one image per row, its image tokens first, as LLaVA's own tester builds them)."""

import unittest
from unittest.mock import patch

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaModel
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, MODEL_MAPPING_NAMES
from transformers.testing_utils import torch_device
from transformers_upstream_tests.test_configuration_common import ConfigTester
from transformers_upstream_tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor

from transformers_lavin import LavinConfig, LavinForConditionalGeneration, LavinModel

IMAGE_TOKEN_ID = 0
PAD_TOKEN_ID = 1
TEXT_CONFIG = {
    "model_type": "llama",
    "vocab_size": 99,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "initializer_range": 0.02,
    "pad_token_id": PAD_TOKEN_ID,
}
VISION_CONFIG = {
    "model_type": "clip_vision_model",
    "image_size": 8,
    "patch_size": 2,
    "num_channels": 3,
    "hidden_size": 32,
    "projection_dim": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "dropout": 0.1,
    "attention_dropout": 0.1,
    "initializer_range": 0.02,
}


class VisionTextModelTester:
    """What `ModelTesterMixin` reads from its `model_tester`, for a VLM whose images take `num_image_tokens` each."""

    batch_size = 3
    text_length = 7
    is_training = True

    def __init__(self, parent, num_image_tokens: int):
        self.parent = parent
        self.text_config = dict(TEXT_CONFIG)
        self.vision_config = dict(VISION_CONFIG)
        self.num_hidden_layers = TEXT_CONFIG["num_hidden_layers"]
        self.hidden_size = TEXT_CONFIG["hidden_size"]
        self.num_attention_heads = TEXT_CONFIG["num_attention_heads"]
        self.vocab_size = TEXT_CONFIG["vocab_size"]
        self.pad_token_id = PAD_TOKEN_ID
        self.num_channels = VISION_CONFIG["num_channels"]
        self.image_size = VISION_CONFIG["image_size"]
        self.num_image_tokens = num_image_tokens
        self.seq_length = self.encoder_seq_length = self.text_length + num_image_tokens

    def get_config(self):
        raise NotImplementedError

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size - 2) + 2
        input_ids[input_ids == IMAGE_TOKEN_ID] = PAD_TOKEN_ID
        input_ids[:, : self.num_image_tokens] = IMAGE_TOKEN_ID
        attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=torch_device)
        return config, {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


class LavinModelTester(VisionTextModelTester):
    vision_feature_layers = [1, 2]  # one visual token per entry

    def __init__(self, parent):
        super().__init__(parent, num_image_tokens=len(self.vision_feature_layers))

    def get_config(self):
        return LavinConfig(
            text_config=self.text_config,
            vision_config=self.vision_config,
            vision_feature_layers=self.vision_feature_layers,
            projector_hidden_size=16,
            image_token_id=IMAGE_TOKEN_ID,
            pad_token_id=PAD_TOKEN_ID,
        )


class LlavaModelTester(VisionTextModelTester):
    def __init__(self, parent):
        patches = (VISION_CONFIG["image_size"] // VISION_CONFIG["patch_size"]) ** 2
        super().__init__(parent, num_image_tokens=patches)  # the "default" strategy drops CLS

    def get_config(self):
        return LlavaConfig(
            text_config=self.text_config,
            vision_config=self.vision_config,
            image_token_index=IMAGE_TOKEN_ID,
            projector_hidden_act="gelu",
            vision_feature_select_strategy="default",
            vision_feature_layer=-1,
            image_seq_length=self.num_image_tokens,
        )


class LavinModelTest(ModelTesterMixin, unittest.TestCase):
    upstream_tester, model_name = "ModelTesterMixin", "lavin"
    all_model_classes = (LavinModel, LavinForConditionalGeneration)
    _is_composite = True
    # The tester guesses a model's age from a copyright line its config file lacks, and skips the check that every
    # weight missing from a checkpoint is initialised for models it takes as older than 2023.
    test_can_init_all_missing_weights_before_2023 = True

    @classmethod
    def setUpClass(cls):
        # The tester tells base models from heads (which get labels and must return a loss) by transformers' built-in
        # name tables. LaVIN is registered with AutoModel and AutoModelForImageTextToText instead, so it joins the
        # same tables while it is tested, as a built-in model's classes would be listed there.
        for table, name in (
            (MODEL_MAPPING_NAMES, "LavinModel"),
            (MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES, "LavinForConditionalGeneration"),
        ):
            patcher = patch.dict(table, {"lavin": name})
            patcher.start()
            cls.addClassCleanup(patcher.stop)

    def setUp(self):
        self.model_tester = LavinModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=LavinConfig,
            has_text_modality=False,
            common_properties=["image_token_id", "vision_feature_layers"],
        )

    def test_config(self):
        self.config_tester.run_common_tests()


class LlavaModelTest(ModelTesterMixin, unittest.TestCase):
    upstream_tester, model_name = "ModelTesterMixin", "llava"
    all_model_classes = (LlavaModel, LlavaForConditionalGeneration)
    _is_composite = True

    def setUp(self):
        self.model_tester = LlavaModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=LlavaConfig,
            has_text_modality=False,
            common_properties=["image_token_index", "vision_feature_layer", "image_seq_length"],
        )

    def test_config(self):
        self.config_tester.run_common_tests()
