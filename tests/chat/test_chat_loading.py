"""Loading the served model: the offline demo model, saved bases and adapters, and readable failures."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel, get_peft_model

from transformers_lavin import MMAConfig, compute_routing_table
from transformers_lavin.chat import DEMO_MODEL_NAME, ModelLoadError, load_chat_model
from transformers_lavin.testing_utils import build_tiny_lavin


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny base (with processor) and an MMA adapter for it, saved as users save them."""
    root = tmp_path_factory.mktemp("saved")
    base, processor = build_tiny_lavin(seed=0)  # the demo model's base, so the adapter also fits that
    base.save_pretrained(root / "base")
    processor.save_pretrained(root / "base")
    torch.manual_seed(7)
    adapted = get_peft_model(base, MMAConfig())
    adapted.save_pretrained(root / "adapter")
    return root, compute_routing_table(adapted)


def test_demo_model_loads_offline_with_adapters(demo_model):
    model, processor = demo_model
    assert isinstance(model, PeftModel) and not model.training
    assert compute_routing_table(model) is not None
    assert processor.tokenizer is not None


def test_saved_base_and_adapter_load(saved):
    root, routing = saved
    model, processor = load_chat_model(str(root / "base"), str(root / "adapter"))
    assert isinstance(model, PeftModel)
    torch.testing.assert_close(compute_routing_table(model), routing)
    base_only, _ = load_chat_model(str(root / "base"))
    assert compute_routing_table(base_only) is None


def test_adapter_on_the_demo_model(saved):
    root, routing = saved
    model, _ = load_chat_model(DEMO_MODEL_NAME, str(root / "adapter"))
    torch.testing.assert_close(compute_routing_table(model), routing)


def test_missing_model_directory(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match=f"Could not load the model from '{missing}': no such directory"):
        load_chat_model(str(missing))


def test_directory_without_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="Could not load a LaVIN model from .*empty"):
        load_chat_model(str(tmp_path / "empty"))


def test_bad_adapter(saved, tmp_path):
    root, _ = saved
    with pytest.raises(ModelLoadError, match="MMA adapter .*: no such directory"):
        load_chat_model(DEMO_MODEL_NAME, str(tmp_path / "missing"))
    # A model directory is not an adapter directory.
    with pytest.raises(ModelLoadError, match="Could not load the MMA adapter .*adapter_config.json"):
        load_chat_model(str(root / "base"), str(root / "base"))
