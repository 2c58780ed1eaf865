"""Property tests: an adapter config with random sizes against the weights saved with it. Loading (MMA through
PeftModel.from_pretrained, LoRA through lavin-eval's check and then PEFT) works exactly when
the sizes match the shapes in the safetensors header; otherwise it is a ValueError that names the field, raised
before any layer is built (so a huge size allocates nothing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from peft import LoraConfig, PeftModel, get_peft_model

from transformers_lavin import MMAConfig
from transformers_lavin.adapter_files import check_adapter_directory
from transformers_lavin.testing_utils import build_tiny_lavin

SAVED_MMA = {"adapter_hidden_size": 8, "groups": 2}
SAVED_LORA_RANK = 4
PROPERTY_SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Sizes a config may hold: the saved ones, near misses, huge ones, and values of the wrong type.
sizes = st.one_of(
    st.sampled_from([8, 2, 4, 16]),
    st.integers(-4, 64),
    st.integers(2**20, 2**40),
    st.sampled_from([None, True, 8.0, "8", [8]]),
)


def _save(root: Path, name: str, peft_config) -> Path:
    model, _ = build_tiny_lavin()
    peft_model = get_peft_model(model, peft_config)
    peft_model.save_pretrained(root / name)
    return root / name


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("saved")
    return {
        "mma": _save(root, "mma", MMAConfig(**SAVED_MMA)),
        "lora": _save(root, "lora", LoraConfig(r=SAVED_LORA_RANK, target_modules=["q_proj", "v_proj"])),
    }


def _with_config(saved: Path, target: Path, **changes) -> Path:
    """A copy of the saved adapter with `changes` in its config (None removes the field: the default applies)."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(saved, target)
    config = json.loads((target / "adapter_config.json").read_text())
    config.update(changes)
    config = {key: value for key, value in config.items() if value is not None}
    (target / "adapter_config.json").write_text(json.dumps(config))
    return target


def _load(directory: Path, check_first: bool = False):
    """Load onto a fresh tiny base: as PEFT does for MMA (checked inside), or as lavin-eval does for any adapter."""
    if check_first:
        check_adapter_directory(directory)
    PeftModel.from_pretrained(build_tiny_lavin()[0], str(directory))


@PROPERTY_SETTINGS
@given(hidden=sizes, groups=sizes)
def test_mma_config_loads_only_when_its_sizes_are_the_weights(saved, tmp_path, hidden, groups):
    adapter = _with_config(saved["mma"], tmp_path / "mma", adapter_hidden_size=hidden, groups=groups)
    defaults = MMAConfig()
    matches = (hidden if hidden is not None else defaults.adapter_hidden_size) == 8 and (
        groups if groups is not None else defaults.groups
    ) == 2
    matches = matches and not isinstance(hidden, (bool, float)) and not isinstance(groups, (bool, float))
    if matches:
        _load(adapter)
        return
    with pytest.raises(ValueError) as raised:
        _load(adapter)
    message = str(raised.value)
    assert "adapter_hidden_size" in message or "groups" in message, message
    assert len(message) < 600


@PROPERTY_SETTINGS
@given(r=sizes, pattern=st.one_of(st.none(), st.dictionaries(st.sampled_from(["q_proj", "v_proj", "k_proj"]), sizes,
                                                             max_size=2)))  # fmt: skip
def test_lora_config_loads_only_when_its_ranks_are_the_weights(saved, tmp_path, r, pattern):
    adapter = _with_config(saved["lora"], tmp_path / "lora", r=r, rank_pattern=pattern)
    effective_r = 8 if r is None else r  # LoraConfig's default rank
    # k_proj carries no LoRA weights, so its entry changes nothing; q_proj and v_proj take their pattern's rank.
    ranks = [(pattern or {}).get(module, effective_r) for module in ("q_proj", "v_proj")]
    well_typed = all(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1
        for value in [effective_r, *(pattern or {}).values()]
    )
    if well_typed and ranks == [SAVED_LORA_RANK, SAVED_LORA_RANK]:
        _load(adapter, check_first=True)
        return
    with pytest.raises(ValueError) as raised:
        _load(adapter, check_first=True)
    message = str(raised.value)
    assert "r=" in message or "r must" in message or "rank_pattern[" in message, message
