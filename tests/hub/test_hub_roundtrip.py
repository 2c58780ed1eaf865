"""Push a tiny LaVIN and an MMA adapter through huggingface_hub's real upload code to a fake Hub on 127.0.0.1, then
download them back and check the weights, the logits, the code files, the cards and the cards' usage snippets.

The user side runs in fresh interpreters (`hub_roundtrip_script.py`) configured only through the environment
(`HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME`, `HF_HUB_DISABLE_XET`), the way users point huggingface_hub at an endpoint:
huggingface_hub and transformers read those at import time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from peft import get_peft_model
from safetensors.torch import load, load_file

import transformers_lavin
from transformers_lavin import MMAConfig
from transformers_lavin.hub import SCIENCEQA_DATASET_ID
from transformers_lavin.testing_utils import build_tiny_lavin

sys.path.insert(0, str(Path(__file__).parent))
from fake_hub import FakeHub  # noqa: E402
from hub_roundtrip_script import ADAPTER_REPO, SCIENCEQA_SCORES, logits_of  # noqa: E402

SCRIPT = Path(__file__).parent / "hub_roundtrip_script.py"
BASE_REPO = "tester/tiny-lavin"
PACKAGE_DIR = Path(transformers_lavin.__file__).parent
CODE_FILES = ["configuration_lavin.py", "modeling_lavin.py", "processing_lavin.py", "image_loading.py"]


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub_roundtrip")
    with FakeHub() as hub:
        env = {
            **os.environ,
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": hub.token,
            # Fresh caches for hub downloads and remote code modules, whatever the outer environment says.
            "HF_HOME": str(out / "hf_home"),
            "HF_HUB_CACHE": str(out / "hf_home" / "hub"),
            "HF_MODULES_CACHE": str(out / "hf_home" / "modules"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "TRANSFORMERS_CACHE", "HUGGINGFACE_HUB_CACHE"):
            env.pop(name, None)
        # Both phases start together: "remote-code" imports its libraries while "push" works, then waits for the base.
        runs = {
            phase: subprocess.Popen(
                [sys.executable, str(SCRIPT), phase, str(out)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for phase in ("push", "remote-code")
        }
        results = {}
        try:
            for phase, run in runs.items():
                _, stderr = run.communicate(timeout=300)
                if run.returncode != 0:
                    pytest.fail(
                        f"phase {phase} failed (fake hub did not know: {hub.unhandled}):\n{stderr[-4000:]}",
                        pytrace=False,
                    )
                results[phase] = json.loads((out / f"{phase}.json").read_text())
        finally:
            for run in runs.values():
                if run.poll() is None:
                    run.kill()
                    run.wait()
        yield hub, out, results


@pytest.fixture(scope="module")
def local_model():
    """The same tiny LaVIN built here, independently of the pushed files."""
    return build_tiny_lavin(seed=0)


def test_adapter_logits_survive_the_round_trip_exactly(roundtrip):
    _, out, _ = roundtrip
    logits = load_file(str(out / "push_logits.safetensors"))
    assert torch.equal(logits["adapter_after_download"], logits["adapter_before_push"])
    # The adapter's random weights must matter, or the comparison above would prove nothing.
    assert (logits["adapter_before_push"] - logits["base_before_push"]).abs().max() > 1e-2


def test_base_logits_match_an_independent_build_with_and_without_the_package(roundtrip, local_model):
    _, out, _ = roundtrip
    model, processor = local_model
    expected = logits_of(model, processor)
    assert torch.equal(load_file(str(out / "push_logits.safetensors"))["base_before_push"], expected)
    assert torch.equal(load_file(str(out / "remote_logits.safetensors"))["remote_code_base"], expected)


def test_pushed_weights_are_the_model_and_go_through_lfs(roundtrip, local_model):
    hub, _, _ = roundtrip
    model, _ = local_model
    stored = hub.repos[BASE_REPO].at("main").files["model.safetensors"]
    assert stored.lfs
    weights = load(stored.content)
    state = model.state_dict()
    assert set(weights) == set(state)
    assert all(torch.equal(weights[name], state[name]) for name in state)

    adapter = hub.repos[ADAPTER_REPO].at("main").files["adapter_model.safetensors"]
    assert adapter.lfs
    adapter_keys = set(load(adapter.content))
    assert any(".mma_router." in key for key in adapter_keys) and any(".mma_up_1." in key for key in adapter_keys)
    assert any("multi_modal_projector" in key for key in adapter_keys)
    assert not any(key.endswith("q_proj.weight") for key in adapter_keys), "frozen base weights were pushed"


def test_code_files_and_auto_map_are_pushed(roundtrip):
    hub, _, results = roundtrip
    files = hub.files(BASE_REPO)
    for name in CODE_FILES:
        assert files[name] == (PACKAGE_DIR / name).read_bytes(), name
    assert set(CODE_FILES) <= set(results["push"]["base_files"])  # downloaded back too
    auto_map = json.loads(files["config.json"])["auto_map"]
    assert auto_map["AutoConfig"] == "configuration_lavin.LavinConfig"
    assert auto_map["AutoModelForImageTextToText"] == "modeling_lavin.LavinForConditionalGeneration"
    assert json.loads(files["processor_config.json"])["auto_map"]["AutoProcessor"] == "processing_lavin.LavinProcessor"


def test_remote_code_loads_without_the_package(roundtrip):
    _, _, results = roundtrip
    remote = results["remote-code"]
    assert remote["package_importable"] is False
    assert remote["model_class_module"].startswith("transformers_modules.")
    assert remote["processor_class_module"].startswith("transformers_modules.")


def test_card_snippets_run_against_the_hub(roundtrip):
    # The snippets printed a generation (the tiny model's random text) and raised nothing.
    _, _, results = roundtrip
    assert results["push"]["snippet_output"].strip()
    assert results["remote-code"]["snippet_output"].strip()


def test_adapter_card_metadata(roundtrip):
    hub, _, _ = roundtrip
    content = hub.files(ADAPTER_REPO)["README.md"].decode()
    assert content in hub.validated_cards  # went through the Hub's YAML validation endpoint
    card = ModelCard(content)
    data = card.data
    assert data.library_name == "peft"
    assert data.base_model == BASE_REPO
    assert data.base_model_relation == "adapter"
    assert data.pipeline_tag == "image-text-to-text"
    assert {"lavin", "mma", "peft", "image-text-to-text"} <= set(data.tags)
    assert data.datasets == [SCIENCEQA_DATASET_ID]
    assert data.metrics == ["accuracy"]
    expected = {"Accuracy (average)" if k == "Avg" else f"Accuracy ({k})": v for k, v in SCIENCEQA_SCORES.items()}
    assert {r.metric_name: r.metric_value for r in data.eval_results} == expected
    assert {(r.dataset_type, r.dataset_split, r.metric_type) for r in data.eval_results} == {
        (SCIENCEQA_DATASET_ID, "test", "accuracy")
    }
    assert "automatically generated" not in card.text  # transformers' placeholder card was replaced
    # The processor was pushed with the adapter, so the snippet loads it from there.
    assert f'AutoProcessor.from_pretrained("{ADAPTER_REPO}")' in card.text
    assert {"processor_config.json", "tokenizer.json"} <= set(hub.files(ADAPTER_REPO))
    # The settings table reports the adapter's trainable parameters, counted here on a fresh tiny model.
    trainable, _ = get_peft_model(build_tiny_lavin(seed=0)[0], MMAConfig()).get_nb_trainable_parameters()
    assert f"| trainable parameters | {trainable:,} |" in card.text
    assert HfApi(endpoint=hub.url).model_info(ADAPTER_REPO).card_data.library_name == "peft"


def test_model_card_metadata(roundtrip):
    hub, _, _ = roundtrip
    content = hub.files(BASE_REPO)["README.md"].decode()
    assert content in hub.validated_cards
    data = ModelCard(content).data
    assert data.library_name == "transformers"
    assert data.pipeline_tag == "image-text-to-text"
    assert "lavin" in data.tags and "mma" not in data.tags
    assert data.eval_results is None and data.base_model is None
    assert "trust_remote_code=True" in content


def test_namespace_comes_from_the_token_owner_and_every_endpoint_was_known(roundtrip):
    hub, _, _ = roundtrip
    assert ("GET", "/api/whoami-v2") in hub.requests  # "tiny-lavin" was pushed without a namespace
    assert set(hub.repos) == {BASE_REPO, ADAPTER_REPO}
    assert [c.summary for c in hub.repos[ADAPTER_REPO].commits] == [
        "initial commit",
        "Upload MMA adapter",
        "Upload processor",
        "Add model card",
    ]
    assert not [path for _, path in hub.requests if "kernels-community" in path]  # no Hub kernel was asked for
    assert hub.unhandled == []
