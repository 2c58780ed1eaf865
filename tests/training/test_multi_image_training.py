"""SFTTrainer with MMA on conversational rows with several images, one image and none, mixed in each batch."""

import math

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from trl import SFTConfig

import transformers_lavin  # noqa: F401  (registers LaVIN and MMA)
from transformers_lavin.training import LavinModelArguments, MMAArguments, build_trainer, load_model_and_processor


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (30, 30, 3), dtype=np.uint8))


def _rows():
    two_turns = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Noise."}]},
        {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "image"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "More noise."}]},
    ]
    plain = [  # string contents: TRL puts the row's images before the first user message's text
        {"role": "user", "content": "Same pictures?"},
        {"role": "assistant", "content": "No."},
    ]
    one = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Color?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Many."}]},
    ]
    text_only = [
        {"role": "user", "content": [{"type": "text", "text": "Say hi."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
    ]
    return [
        {"messages": two_turns, "images": [_image(0), _image(1)]},
        {"messages": plain, "images": [_image(2), _image(3)]},
        {"messages": one, "images": [_image(4)]},
        {"messages": text_only, "images": []},
    ]


def test_sft_trainer_trains_on_rows_with_two_images(tmp_path):
    model, processor = load_model_and_processor(LavinModelArguments(tiny=True), seed=0)
    rows = _rows()
    # A column holds string contents or part lists, not both: the row with string contents is collated on its own.
    dataset = datasets.Dataset.from_list([rows[i] for i in (0, 2, 3)] * 2)
    config = SFTConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=3, learning_rate=1e-2,
        logging_steps=1, save_strategy="no", report_to=[], bf16=False, activation_checkpointing=False,
        max_length=None, use_cpu=True, disable_tqdm=True, seed=0, assistant_only_loss=True,
    )  # fmt: skip
    trainer = build_trainer(model, processor, dataset, config, MMAArguments(mma_dropout=0.0))
    batch = trainer.data_collator(rows)
    assert batch["pixel_values"].shape[0] == 5
    per_row = (batch["input_ids"] == processor.image_token_id).sum(-1) // processor.num_image_tokens
    assert per_row.tolist() == [2, 2, 1, 0]

    # The collated rows are the processor's tokens of the dialogue written by hand, each image at its place.
    texts = [
        "<s>Instruction: <image>What is this?\nResponse:Noise.</s>\nInstruction: And <image>\nResponse:More noise.</s>",
        "<s>Instruction: <image><image>Same pictures?\nResponse:No.</s>",
        "<s>Instruction: Color?\nResponse:Many.</s>",
        "<s>Instruction: Say hi.\nResponse:Hi.</s>",
    ]
    expected = processor(images=[row["images"] for row in rows], text=texts, add_special_tokens=False)
    for index, ids in enumerate(expected["input_ids"]):
        real = batch["attention_mask"][index].bool()
        assert batch["input_ids"][index][real].tolist() == ids
    assert torch.equal(batch["pixel_values"], torch.as_tensor(expected["pixel_values"]))
    # Only the answers are targets: never an image token, never the prompt.
    targets = batch["labels"][batch["labels"] != -100]
    decoded = processor.tokenizer.decode(targets)
    assert decoded == "Noise.</s>More noise.</s>No.</s>Many.</s>Hi.</s>"

    projector = trainer.model.get_base_model().model.multi_modal_projector.modules_to_save["default"]
    before = projector.linear_1.weight.detach().clone()
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    assert not torch.equal(projector.linear_1.weight, before)


def test_image_limit_is_optional_and_only_a_lone_later_image_is_warned_about(caplog):
    from transformers_lavin.data.sft_datasets import check_images_per_row

    rows = [row for row in _rows() if row["messages"][0]["content"] != "Same pictures?"]
    later_one = [
        {"role": "user", "content": [{"type": "text", "text": "Hi."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "This?"}]},
    ]
    rows.append({"messages": later_one, "images": [_image(5)]})
    dataset = datasets.Dataset.from_list(rows)
    with caplog.at_level("WARNING"):
        assert len(check_images_per_row(dataset)) == 4  # the two-image row is kept: no limit by default
    assert "1 training rows attach their one image to a later turn" in caplog.text
    with pytest.raises(ValueError, match=r"1 of 4 training rows have more than 1 image \(rows 0\)"):
        check_images_per_row(dataset, max_images=1)
    kept = check_images_per_row(dataset, max_images=1, drop=True)
    assert [len(images) for images in kept["images"]] == [1, 0, 1]
