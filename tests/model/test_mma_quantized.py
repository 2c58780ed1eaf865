import pytest
import torch
from peft import get_peft_model
from transformers import AutoModelForImageTextToText

from transformers_lavin import MMAConfig
from transformers_lavin.quantization import lavin_lite_quantization_config
from transformers_lavin.testing_utils import build_tiny_lavin

bnb = pytest.importorskip("bitsandbytes", reason="the quant extra is not installed")


@pytest.mark.parametrize("bits, layer_class", [(4, "Linear4bit"), (8, "Linear8bitLt")])
def test_lavin_lite_trains_full_precision_adapters_on_a_quantised_llm(bits, layer_class, tmp_path):
    base, processor = build_tiny_lavin(seed=0)
    base.save_pretrained(tmp_path)
    model = AutoModelForImageTextToText.from_pretrained(
        tmp_path,
        quantization_config=lavin_lite_quantization_config(bits, compute_dtype=torch.float32),
        device_map="cpu",
    )
    assert type(model.model.language_model.layers[0].self_attn.q_proj).__name__ == layer_class
    assert type(model.model.multi_modal_projector.linear_1) is torch.nn.Linear  # only the LLM is quantised
    model = get_peft_model(model, MMAConfig(dropout=0.0))
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    inputs = processor(text=["a text-only question"], return_tensors="pt")
    optimizer = torch.optim.AdamW(trainable, lr=5e-2)
    losses = []
    for _ in range(4):
        loss = model(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
