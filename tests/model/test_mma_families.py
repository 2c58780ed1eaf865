"""MMA's contract on the VLM families people fine-tune now: one suite, parametrized over tiny configs built in code.

`FAMILIES` is the one place that says how to build each tiny model and one image's inputs; every test below runs on
every family. LLaVA and Gemma 3 run the same cases in `test_mma_vlm.py`, LaVIN in `test_mma_model.py`.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from helpers import (
    DecoderSpy,
    assert_same_gradients,
    llm_layers,
    logits,
    loss_and_gradients,
    mma_model,
    train_on_one_batch,
)
from peft import PeftModel
from safetensors.torch import load_file
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    GemmaConfig,
    Idefics3Config,
    InternVLConfig,
    LlamaConfig,
    LlavaNextConfig,
    LlavaOnevisionConfig,
    Mistral3Config,
    MistralConfig,
    PaliGemmaConfig,
    PixtralVisionConfig,
    PretrainedConfig,
    Qwen2_5_VLConfig,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen3VLConfig,
    SiglipVisionConfig,
    SmolVLMConfig,
)

from transformers_lavin.mma import MMALayer, compute_routing_table

VOCAB = 100
IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = VOCAB - 1, VOCAB - 2, VOCAB - 3, VOCAB - 4
IMAGE_SIZE, PATCH = 30, 6
PATCHES = (IMAGE_SIZE // PATCH) ** 2
IMAGE_ROW, TEXT_ROW = 0, 1
pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/model/conftest.py

WIDTHS = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}
TEXT = {**WIDTHS, "num_hidden_layers": 2, "num_key_value_heads": 2, "vocab_size": VOCAB}
TEXT.update(pad_token_id=0, bos_token_id=1, eos_token_id=2)
VISION = {**WIDTHS, "num_hidden_layers": 2, "image_size": IMAGE_SIZE, "patch_size": PATCH}
MROPE = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
QWEN_TOKENS = {"image_token_id": IMAGE_TOKEN, "video_token_id": VIDEO_TOKEN}
QWEN_TOKENS.update(vision_start_token_id=VISION_START, vision_end_token_id=VISION_END)
QWEN_VISION = {"depth": 2, "num_heads": 4, "patch_size": PATCH, "spatial_merge_size": 1, "temporal_patch_size": 2}
PIXTRAL = PixtralVisionConfig(**VISION, head_dim=8)


def qwen_visual(config, generator, video: bool = False) -> tuple[dict, list[int]]:
    """One image (or a two-frame video) as Qwen2-VL's processor gives it: flattened patches and their grid."""
    vision = config.vision_config
    grid = [1, IMAGE_SIZE // PATCH, IMAGE_SIZE // PATCH]
    patches = torch.randn(PATCHES, 3 * vision.temporal_patch_size * PATCH**2, generator=generator)
    token = VIDEO_TOKEN if video else IMAGE_TOKEN
    inputs = {"pixel_values_videos": patches, "video_grid_thw": torch.tensor([grid])} if video else {}
    inputs = inputs or {"pixel_values": patches, "image_grid_thw": torch.tensor([grid])}
    return inputs, [VISION_START, *[token] * PATCHES, VISION_END]


def images(shape: tuple[int, ...], tokens: int = PATCHES, **extra) -> Callable:
    """One image as `pixel_values` of `shape` (plus `extra` inputs) that the model turns into `tokens` features."""
    return lambda config, generator: (
        {"pixel_values": torch.randn(*shape, generator=generator), **extra},
        [IMAGE_TOKEN] * tokens,
    )


def onevision_video(config, generator) -> tuple[dict, list[int]]:
    # Two frames of 5x5 patches, pooled 2x2 to 3x3 each, and one newline: 19 video tokens.
    frames = torch.randn(1, 2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return {"pixel_values_videos": frames}, [VIDEO_TOKEN] * 19


@dataclass(frozen=True)
class Family:
    """
    A VLM family on a tiny config. `image` returns one image's model inputs and its placeholder tokens in the prompt;
    `video` the same for a video, where the model has video tokens. `mm_token_type_ids`: the model takes the
    processor's per-token modality types (Qwen's multimodal RoPE). `mask_positions`: a forward without a cache
    numbers positions from the attention mask only when given `position_ids` (false where the model does it itself).
    `merged_saves`: the model's configs can declare the biases a merge gives its linear layers (Mistral's and
    Pixtral's layers have no bias option, so a merged Mistral 3 is exact in memory but refuses to save).
    """

    name: str
    config: Callable[[], PretrainedConfig]
    image: Callable
    video: Callable | None = None
    mm_token_type_ids: bool = False
    mask_positions: bool = True
    merged_saves: bool = True

    def __str__(self) -> str:
        return self.name


FAMILIES = [
    Family(
        "qwen2_vl",
        lambda: Qwen2VLConfig(
            text_config={**TEXT, "rope_parameters": MROPE},
            vision_config={**QWEN_VISION, "embed_dim": 32, "hidden_size": 32, "mlp_ratio": 2},
            **QWEN_TOKENS,
        ),
        qwen_visual,
        video=lambda config, generator: qwen_visual(config, generator, video=True),
        mm_token_type_ids=True,
        mask_positions=False,
    ),
    Family(
        "qwen2_5_vl",
        lambda: Qwen2_5_VLConfig(
            text_config={**TEXT, "rope_parameters": MROPE},
            vision_config={**QWEN_VISION, **WIDTHS, "out_hidden_size": 32, "window_size": 12},
            **QWEN_TOKENS,
        ),
        qwen_visual,
        mm_token_type_ids=True,
        mask_positions=False,
    ),
    Family(
        "qwen3_vl",
        lambda: Qwen3VLConfig(
            text_config={**TEXT, "head_dim": 8, "rope_parameters": {**MROPE, "mrope_interleaved": True}},
            vision_config={**QWEN_VISION, **WIDTHS, "out_hidden_size": 32, "num_position_embeddings": PATCHES}
            | {"deepstack_visual_indexes": [1]},
            **QWEN_TOKENS,
        ),
        qwen_visual,
        mm_token_type_ids=True,
        mask_positions=False,
    ),
    Family(
        "idefics3",
        lambda: Idefics3Config(
            vision_config=VISION, text_config=LlamaConfig(**TEXT), image_token_id=IMAGE_TOKEN, scale_factor=1
        ),
        images((1, 1, 3, IMAGE_SIZE, IMAGE_SIZE)),
    ),
    Family(
        "smolvlm",
        lambda: SmolVLMConfig(
            vision_config=VISION, text_config=LlamaConfig(**TEXT), image_token_id=IMAGE_TOKEN, scale_factor=1
        ),
        images((1, 1, 3, IMAGE_SIZE, IMAGE_SIZE)),
    ),
    Family(
        "paligemma",
        lambda: PaliGemmaConfig(
            vision_config=SiglipVisionConfig(**VISION, vision_use_head=False),
            text_config=GemmaConfig(**TEXT, head_dim=8),
            image_token_index=IMAGE_TOKEN,
            projection_dim=32,
        ),
        images((1, 3, IMAGE_SIZE, IMAGE_SIZE)),
    ),
    Family(
        "llava_next",
        lambda: LlavaNextConfig(
            vision_config=CLIPVisionConfig(**VISION),
            text_config=LlamaConfig(**TEXT),
            image_token_index=IMAGE_TOKEN,
            image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]],
            vision_feature_layer=-1,
        ),
        # The whole image and one tile of it: 25 + 5 rows of (5 patches and a newline).
        images((1, 2, 3, IMAGE_SIZE, IMAGE_SIZE), 55, image_sizes=torch.tensor([[IMAGE_SIZE, IMAGE_SIZE]])),
    ),
    Family(
        "llava_onevision",
        lambda: LlavaOnevisionConfig(
            vision_config=SiglipVisionConfig(**VISION, vision_use_head=False),
            text_config=Qwen2Config(**TEXT),
            image_token_index=IMAGE_TOKEN,
            video_token_index=VIDEO_TOKEN,
            image_grid_pinpoints=[[IMAGE_SIZE, IMAGE_SIZE]],
            vision_feature_layer=-1,
        ),
        images((1, 2, 3, IMAGE_SIZE, IMAGE_SIZE), 55, image_sizes=torch.tensor([[IMAGE_SIZE, IMAGE_SIZE]])),
        video=onevision_video,
    ),
    Family(
        "mistral3",
        lambda: Mistral3Config(
            vision_config=PIXTRAL,
            text_config=MistralConfig(**TEXT, head_dim=8),
            image_token_index=IMAGE_TOKEN,
            spatial_merge_size=1,
            vision_feature_layer=-1,
        ),
        images((1, 3, IMAGE_SIZE, IMAGE_SIZE), image_sizes=torch.tensor([[IMAGE_SIZE, IMAGE_SIZE]])),
        merged_saves=False,
    ),
    Family(
        "internvl",
        lambda: InternVLConfig(
            vision_config={
                **WIDTHS,
                "num_hidden_layers": 2,
                "image_size": [IMAGE_SIZE] * 2,
                "patch_size": [PATCH] * 2,
            },
            text_config=Qwen2Config(**TEXT),
            image_token_id=IMAGE_TOKEN,
            downsample_ratio=1.0,
            vision_feature_layer=-1,
        ),
        images((1, 3, IMAGE_SIZE, IMAGE_SIZE)),
    ),
]
ROW_KEYS = ("input_ids", "attention_mask", "mm_token_type_ids")  # per-token inputs: one row each


@pytest.fixture(params=FAMILIES, ids=str)
def family(request) -> Family:
    return request.param


@functools.cache
def _built(family: Family, seed: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """The family's tiny model built from its config at `seed`, and the RNG state the build leaves behind."""
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(family.config()).eval()
    return model, torch.get_rng_state()


def build(family: Family, seed: int = 0):
    """A fresh copy of the family's model at `seed` (built once per session; each caller may change its copy), with
    the global RNG where building it leaves it, so adapters initialise exactly as after a build of their own."""
    model, rng_state = _built(family, seed)
    torch.set_rng_state(rng_state)
    return copy.deepcopy(model)


def token_types(input_ids: torch.Tensor) -> torch.Tensor:
    """Qwen's `mm_token_type_ids`, as its processor makes them: 1 for image tokens, 2 for video tokens, else 0."""
    return (input_ids == IMAGE_TOKEN).long() + 2 * (input_ids == VIDEO_TOKEN).long()


def mixed_batch(family: Family, seed: int = 0, visual: Callable | None = None) -> dict[str, torch.Tensor]:
    """An image row (or video row, with `visual=family.video`) and a longer text-only row, left-padded."""
    generator = torch.Generator().manual_seed(seed)
    words = lambda n: torch.randint(3, VISION_END, (n,), generator=generator).tolist()  # noqa: E731
    visual_inputs, placeholders = (visual or family.image)(family.config(), generator)
    image_row = [1, *words(3), *placeholders, *words(4)]
    text_row = [1, *words(len(image_row) + 2)]
    length = max(len(image_row), len(text_row))
    input_ids = torch.zeros(2, length, dtype=torch.long)
    attention_mask = torch.zeros(2, length, dtype=torch.long)
    for row, ids in enumerate((image_row, text_row)):
        input_ids[row, length - len(ids) :] = torch.tensor(ids)
        attention_mask[row, length - len(ids) :] = 1
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, **visual_inputs}
    if family.mm_token_type_ids:
        batch["mm_token_type_ids"] = token_types(input_ids)
    return batch


def only_row(batch: dict[str, torch.Tensor], row: int) -> dict[str, torch.Tensor]:
    single = {key: batch[key][row : row + 1] for key in ROW_KEYS if key in batch}
    return {**batch, **single} if row == IMAGE_ROW else single


def labels_for(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    ids = batch["input_ids"]
    return ids.masked_fill((ids >= VISION_END) | (batch["attention_mask"] == 0), -100)


def visual_rows(input_ids: torch.Tensor) -> torch.Tensor:
    """Each row's modality computed here, independently of MMA's routing code: 1 with an image or video token."""
    return ((input_ids == IMAGE_TOKEN) | (input_ids == VIDEO_TOKEN)).any(dim=-1).long()


def vision_blocks(model) -> int:
    vision = model.config.vision_config
    return getattr(vision, "num_hidden_layers", None) or vision.depth


@pytest.mark.parametrize("vision_adapter_type, per_block", [("router", 1), ("router_block", 2)])  # + the MLPs
def test_init_equals_the_base_and_adapts_the_llm_and_every_vision_block(family, vision_adapter_type, per_block):
    base = build(family)
    batch = mixed_batch(family)
    expected = logits(base, batch)
    model = mma_model(base, randomize=False, vision_adapter_type=vision_adapter_type)
    assert torch.equal(logits(model, batch), expected)  # zero-initialised up-projections: exactly the base
    assert len(llm_layers(model)) == base.config.text_config.num_hidden_layers
    vision = [m for m in model.modules() if isinstance(m, MMALayer) and m.routing_key is None]
    assert len(vision) == per_block * vision_blocks(base)
    tower = base.get_encoder(modality="image")
    assert all(any(layer is m for m in tower.modules()) for layer in vision)
    assert len(model.peft_config["default"].modules_to_save) == 1  # the family's projector, under its own name


def test_trains_only_adapters_modality_token_and_projector_and_loss_falls(family):
    model = mma_model(build(family), randomize=False).train()
    batch = mixed_batch(family)
    (projector,) = model.peft_config["default"].modules_to_save
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert all(".mma_" in name or f"{projector}.modules_to_save." in name for name in trainable)
    losses, changed = train_on_one_batch(model, batch, labels_for(batch))
    assert losses[-1] < losses[0]
    for part in (".mma_router.", "mma_modality_embedding", projector):  # routers learn through the routing pass
        assert any(part in name for name in changed), part


def test_checkpointing_on_and_off_give_equal_loss_and_gradients(family):
    results = []
    for checkpointing in (False, True):
        model = mma_model(build(family))
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert any(getattr(m, "gradient_checkpointing", False) for m in model.get_base_model().modules())
        batch = mixed_batch(family)
        results.append(loss_and_gradients(model, batch, labels_for(batch))[1])
    assert_same_gradients(*results)


def test_save_and_reload_on_a_fresh_base_is_exact(family, tmp_path):
    model = mma_model(build(family))
    batch = mixed_batch(family)
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "adapter_model.safetensors")
    (projector,) = model.peft_config["default"].modules_to_save
    assert saved and all(".mma_" in key or projector in key for key in saved)
    reloaded = PeftModel.from_pretrained(build(family), tmp_path).eval()
    # Both after the fresh build: building a Pixtral tower moves even the base model's outputs by float rounding.
    assert torch.equal(logits(reloaded, batch), logits(model, batch))


def test_rows_route_by_the_model_s_own_image_token_and_explicit_modality_ids_win(family):
    model = mma_model(build(family))
    batch = mixed_batch(family)
    table = compute_routing_table(model)
    assert not torch.allclose(table[:, 0], table[:, 1])
    spy = DecoderSpy(model)
    auto = logits(model, batch)
    assert len(spy.calls) == 1 and torch.equal(spy.calls[0], visual_rows(batch["input_ids"]))
    swapped = logits(model, batch, modality_ids=torch.tensor([0, 1]))
    assert torch.equal(spy.calls[-1], torch.tensor([0, 1]))
    for row in (IMAGE_ROW, TEXT_ROW):  # each row's output depends on its modality
        assert not torch.allclose(auto[row], swapped[row])
    # ... and on its own row only, wherever the base model's rows are independent of each other (PaliGemma's text
    # row in a batch with an image is not, already in the base model).
    with model.disable_adapter():
        base = logits(model, batch)
        independent = [
            r for r in (IMAGE_ROW, TEXT_ROW) if torch.allclose(logits(model, only_row(batch, r))[0], base[r])
        ]
    assert IMAGE_ROW in independent
    for row in independent:
        torch.testing.assert_close(logits(model, only_row(batch, row))[0], auto[row], rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.video is not None], ids=str)
def test_a_row_with_a_video_routes_as_a_visual_row(family):
    model = mma_model(build(family))
    batch = mixed_batch(family, visual=family.video)
    spy = DecoderSpy(model)
    logits(model, batch)
    assert torch.equal(spy.calls[0], torch.tensor([1, 0]))


@pytest.mark.parametrize("adapter_type", ["attn", "block"])
def test_merges_per_modality(family, adapter_type):
    batch = mixed_batch(family)
    for modality, row, other in (("image", IMAGE_ROW, TEXT_ROW), ("text", TEXT_ROW, IMAGE_ROW)):
        model = mma_model(build(family), adapter_type=adapter_type)
        rows = only_row(batch, row)
        unmerged = logits(model, rows)
        model.merge_adapter(modality=modality)
        torch.testing.assert_close(logits(model, rows), unmerged, rtol=0, atol=1e-5)
        with pytest.raises(ValueError, match="merged for"):
            logits(model, only_row(batch, other))
        model.unmerge_adapter()
        torch.testing.assert_close(logits(model, rows), unmerged, rtol=0, atol=1e-5)


def test_merged_models_save_and_reload_exactly(family, tmp_path):
    rows = only_row(mixed_batch(family), IMAGE_ROW)
    # Plain vision adapters fold too: nothing of MMA is left in the model.
    model = mma_model(build(family), vision_adapter_type="normal")
    unmerged = logits(model, rows)
    merged = model.merge_and_unload(modality="image")
    assert type(merged) is type(build(family)) and not any(isinstance(m, MMALayer) for m in merged.modules())
    torch.testing.assert_close(logits(merged, rows), unmerged, rtol=0, atol=1e-5)
    if not family.merged_saves:
        with pytest.raises(ValueError, match="would lose them"):
            merged.save_pretrained(tmp_path / "normal")
        assert not (tmp_path / "normal").exists()
        return
    merged.save_pretrained(tmp_path / "normal")
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "normal").eval()
    torch.testing.assert_close(logits(reloaded, rows), unmerged, rtol=0, atol=1e-4)
    # The default routed vision adapters cannot fold: they are saved beside the model and reloaded with it.
    model = mma_model(build(family), seed=6)
    unmerged = logits(model, rows)
    model.merge_and_unload(modality="image").save_pretrained(tmp_path / "routed")
    assert not [key for key in load_file(tmp_path / "routed" / "model.safetensors") if "mma_" in key]
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "routed").eval()
    torch.testing.assert_close(logits(reloaded, rows), unmerged, rtol=0, atol=1e-4)


def greedy_without_cache(model, family, batch, steps: int, modality_ids: torch.Tensor):
    """Greedy decoding by full forwards of the growing sequence (no cache); returns tokens and per-step logits."""
    batch = dict(batch)
    scores = []
    for _ in range(steps):
        kwargs = {"use_cache": False, "modality_ids": modality_ids}
        if family.mask_positions:
            kwargs["position_ids"] = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        last = logits(model, batch, **kwargs)[:, -1]
        scores.append(last)
        new = {"input_ids": last.argmax(-1, keepdim=True), "attention_mask": 1, "mm_token_type_ids": 0}
        for key in ROW_KEYS:
            if key in batch:
                column = new[key] if key == "input_ids" else torch.full_like(batch[key][:, :1], new[key])
                batch[key] = torch.cat([batch[key], column], dim=1)
    return batch["input_ids"][:, -steps:], torch.stack(scores, dim=1)


def test_generate_with_cache_equals_a_no_cache_loop_and_rows_keep_their_modality(family):
    model = mma_model(build(family))
    batch = mixed_batch(family)
    steps = 4
    spy = DecoderSpy(model)
    model.generation_config.eos_token_id = None  # a fixed number of steps, as the loop below
    out = model.generate(
        **batch, max_new_tokens=steps, do_sample=False, output_scores=True, return_dict_in_generate=True
    )
    prompt_modality = visual_rows(batch["input_ids"])
    assert len(spy.calls) == steps and all(torch.equal(call, prompt_modality) for call in spy.calls)
    tokens, scores = greedy_without_cache(model, family, batch, steps, prompt_modality)
    assert torch.equal(out.sequences[:, -steps:], tokens)
    torch.testing.assert_close(torch.stack(out.scores, dim=1), scores, rtol=0, atol=1e-4)
    _, image_path = greedy_without_cache(model, family, batch, steps, torch.tensor([1, 1]))
    assert not torch.allclose(scores[TEXT_ROW], image_path[TEXT_ROW], atol=1e-4)  # the text row's path matters


def test_beams_and_returned_sequences_keep_each_row_s_modality(family):
    model = mma_model(build(family), task_type="CAUSAL_LM")
    batch = mixed_batch(family)
    spy = DecoderSpy(model)
    model.generate(**batch, max_new_tokens=3, do_sample=False, num_beams=2, num_return_sequences=2)
    expected = visual_rows(batch["input_ids"]).repeat_interleave(2)
    assert len(spy.calls) == 3 and all(torch.equal(call, expected) for call in spy.calls)
