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


def test_4bit_bf16_runs_on_the_bitsandbytes_cpu_kernel(tmp_path):
    """bitsandbytes' CPU path uses its own kernel: the package keeps the Hub one off (`transformers_lavin.offline`)."""
    from bitsandbytes.backends.cpu import ops

    assert getattr(ops, "gemm_4bit_forward_kernel", None) is None  # no Hub kernel, with or without `kernels`
    # bitsandbytes' bf16 CPU kernel packs whole 64-value blocks per input row: widths >= 64.
    base, processor = build_tiny_lavin(seed=0, text_hidden_size=64)
    base.save_pretrained(tmp_path)
    model = AutoModelForImageTextToText.from_pretrained(
        tmp_path, quantization_config=lavin_lite_quantization_config(4), device_map="cpu"
    )
    assert type(model.model.language_model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    inputs = processor(text=["a text-only question"], return_tensors="pt")
    with torch.no_grad():
        quantised = model(**inputs).logits.float()
        reference = base(**inputs).logits
    assert torch.isfinite(quantised).all()
    # NF4 weights in bf16 compute stay near the full-precision model (random weights, 2 layers).
    assert (quantised - reference).abs().max() < 0.25 * reference.abs().max()


def test_lavin_lite_without_bitsandbytes_says_what_to_install(monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real_find_spec(name, *a)
    )
    with pytest.raises(ImportError, match=r"pip install 'transformers-lavin\[quant\]'"):
        lavin_lite_quantization_config(4)
