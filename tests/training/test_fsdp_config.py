"""examples/accelerate/fsdp.yaml names layer classes that accelerate finds in an MMA-wrapped LaVIN.

accelerate's transformer-based wrapping looks up every class name it is given and stops on one the model lacks; the
model's own `_no_split_modules` lists CLIPTextEmbeddings (gathered from CLIP's class attribute), which is how
`accelerate launch --config_file fsdp.yaml -m transformers_lavin.scripts.sft` failed on a GPU before the config named
its classes. FSDP itself needs GPUs (accelerate runs no FSDP on CPU), so this checks the wrapping policy it builds.
"""

from pathlib import Path

import yaml
from accelerate import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
from peft import get_peft_model

from transformers_lavin import MMAConfig
from transformers_lavin.testing_utils import build_tiny_lavin

CONFIG = Path(__file__).resolve().parents[2] / "examples" / "accelerate" / "fsdp.yaml"


def test_fsdp_config_wraps_each_decoder_and_clip_layer():
    fsdp_config = yaml.safe_load(CONFIG.read_text())["fsdp_config"]
    names = fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(",")
    model = get_peft_model(build_tiny_lavin()[0], MMAConfig())
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=fsdp_config["fsdp_version"],
        auto_wrap_policy=fsdp_config["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=names,
    )
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    wrapped = [type(module).__name__ for module in model.modules() if policy(module)]
    config = model.base_model.model.config
    expected = ["CLIPEncoderLayer"] * config.vision_config.num_hidden_layers
    expected += ["LlamaDecoderLayer"] * config.text_config.num_hidden_layers
    assert sorted(wrapped) == sorted(expected)
