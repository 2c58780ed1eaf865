"""Model shapes the benchmarks run at: the same CLIP tower and the same LLM for LaVIN and for LLaVA."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class BenchShape:
    """
    Backbone sizes and workload of one benchmark setting. Both models are built from these numbers, so they share
    the vision tower and the LLM exactly; only LaVIN's MMA parts and LLaVA's projector/LoRA differ.

    Args:
        name: Short name (`toy`, `cpu`, `7b`).
        llm_hidden, llm_intermediate, llm_layers, llm_heads, vocab_size: LLaMA shape.
        vision_hidden, vision_intermediate, vision_layers, vision_heads, image_size, patch_size: CLIP shape.
        text_len: Text tokens of one training sample, identical for both models (BOS and image tokens come on top).
        answer_len: Trailing text tokens that carry the loss.
        batch_size: Training batch size.
        prompt_len: Text tokens of the generation prompt (after the image).
        new_tokens: Tokens generated per generation call.
    """

    name: str
    llm_hidden: int
    llm_intermediate: int
    llm_layers: int
    llm_heads: int
    vocab_size: int
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    vision_heads: int
    image_size: int
    patch_size: int
    text_len: int
    answer_len: int
    batch_size: int
    prompt_len: int
    new_tokens: int

    @property
    def num_patches(self) -> int:
        """LLaVA's image tokens: every patch of the penultimate CLIP layer, [CLS] dropped."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def vision_feature_layers(self) -> list[int]:
        """LaVIN's 6 taps: every (layers / 6)-th CLIP block, as the reference's every 4th of 24."""
        if self.vision_layers % 6:
            raise ValueError(f"vision_layers ({self.vision_layers}) must be a multiple of 6 for LaVIN's 6 taps.")
        step = self.vision_layers // 6
        return list(range(step, self.vision_layers + 1, step))

    def to_dict(self) -> dict:
        return {**asdict(self), "num_patches": self.num_patches, "vision_feature_layers": self.vision_feature_layers}


SHAPES: dict[str, BenchShape] = {
    # A few seconds in all: for the smoke test.
    "toy": BenchShape(
        name="toy",
        llm_hidden=64,
        llm_intermediate=128,
        llm_layers=2,
        llm_heads=4,
        vocab_size=512,
        vision_hidden=32,
        vision_intermediate=64,
        vision_layers=6,
        vision_heads=2,
        image_size=56,
        patch_size=14,
        text_len=24,
        answer_len=8,
        batch_size=2,
        prompt_len=12,
        new_tokens=4,
    ),
    # A CPU size that runs in minutes on 2 cores, chosen so that the parts weigh in the compute roughly as at 7B:
    # a LLaMA-shaped LLM (width 768, 6 layers), a CLIP tower at 224 px / 14 px patches (LLaVA's 256 patch tokens)
    # but narrow (width 192, 12 blocks), so vision is ~8% of LLaVA's prefill work (3% at 7B, not 50%+ as a wide
    # CLIP beside a small LLM would be), and a 4k vocabulary so the LM head is ~7% of the LLM (2% at 7B, not 37%
    # as a 32k head beside this LLM would be). LoRA keeps r=128, which is relatively 5x larger here than at 7B.
    "cpu": BenchShape(
        name="cpu",
        llm_hidden=768,
        llm_intermediate=2048,
        llm_layers=6,
        llm_heads=12,
        vocab_size=4096,
        vision_hidden=192,
        vision_intermediate=768,
        vision_layers=12,
        vision_heads=3,
        image_size=224,
        patch_size=14,
        text_len=128,
        answer_len=32,
        batch_size=2,
        prompt_len=64,
        new_tokens=32,
    ),
    # LLaMA-7B + CLIP ViT-L/14 at 224 px, random weights: for a GPU. text_len 505 makes LaVIN's sample exactly
    # 512 tokens (BOS + 6 image tokens + 505), the reference's padded length; LLaVA's is 762 (BOS + 256 + 505).
    "7b": BenchShape(
        name="7b",
        llm_hidden=4096,
        llm_intermediate=11008,
        llm_layers=32,
        llm_heads=32,
        vocab_size=32000,
        vision_hidden=1024,
        vision_intermediate=4096,
        vision_layers=24,
        vision_heads=16,
        image_size=224,
        patch_size=14,
        text_len=505,
        answer_len=128,
        batch_size=4,
        prompt_len=128,
        new_tokens=64,
    ),
}


def get_shape(name: str, **overrides) -> BenchShape:
    """A shape from `SHAPES`, with fields replaced by the non-`None` `overrides`."""
    if name not in SHAPES:
        raise ValueError(f"Unknown shape {name!r}; choose one of {sorted(SHAPES)}.")
    fields = SHAPES[name].__dict__ | {key: value for key, value in overrides.items() if value is not None}
    return BenchShape(**fields)
