"""Model cards rendered offline, and the errors of the push functions for bad input (nothing here reaches a network).

`ModelCard.validate()` posts the card to the Hub's `/api/validate-yaml`, so it needs the network; these tests check
the metadata offline with huggingface_hub's own parsers instead (`ModelCard`, `ModelCardData`, `metadata_load`), and
the round-trip test sends every card through the (fake) Hub's validation endpoint.
"""

from __future__ import annotations

import huggingface_hub.constants
import pytest
from huggingface_hub import EvalResult, ModelCard, metadata_load
from peft import get_peft_model

from transformers_lavin import MMAConfig
from transformers_lavin.hub import (
    TEMPLATES_DIR,
    make_model_card,
    push_adapter_to_hub,
    push_model_to_hub,
    scienceqa_eval_results,
)
from transformers_lavin.testing_utils import build_tiny_lavin

SCORES = {"NAT": 90.0, "SOC": 95.5, "LAN": None, "IMG": 87.125, "Avg": 89.37}


@pytest.fixture(scope="module")
def tiny():
    model, processor = build_tiny_lavin(seed=0)
    return get_peft_model(model, MMAConfig()), build_tiny_lavin(seed=0)[0], processor


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def test_templates_ship_inside_the_package():
    assert {p.name for p in TEMPLATES_DIR.glob("*.md")} == {"adapter.md", "model.md"}
    for path in TEMPLATES_DIR.glob("*.md"):
        assert path.read_text().startswith("---\n{{ card_data }}\n---")


def test_adapter_card_metadata_survives_saving_and_parsing(tmp_path):
    card = make_model_card(
        "adapter", "me/lavin-7b-mma", base_model="me/lavin-7b", scienceqa_scores=SCORES, datasets=["me/extra"]
    )
    card.save(tmp_path / "README.md")
    metadata = metadata_load(tmp_path / "README.md")
    assert metadata["library_name"] == "peft"
    assert metadata["base_model"] == "me/lavin-7b"
    assert metadata["pipeline_tag"] == "image-text-to-text"
    assert metadata["datasets"] == ["me/extra", "derek-thomas/ScienceQA"]
    assert metadata["metrics"] == ["accuracy"]
    # One model-index entry for ScienceQA, one metric per column with a value (LAN had no problem: left out).
    [entry] = metadata["model-index"]
    assert entry["name"] == "lavin-7b-mma"
    [result] = entry["results"]
    assert result["dataset"] == {"name": "ScienceQA", "type": "derek-thomas/ScienceQA", "split": "test"}
    assert [(m["name"], m["value"]) for m in result["metrics"]] == [
        ("Accuracy (NAT)", 90.0),
        ("Accuracy (SOC)", 95.5),
        ("Accuracy (IMG)", 87.12),  # rounded to 2 decimals, half to even
        ("Accuracy (average)", 89.37),
    ]
    reparsed = ModelCard.load(tmp_path / "README.md")
    assert reparsed.data.to_dict() == card.data.to_dict()
    assert "| NAT | SOC | IMG | Avg |" in reparsed.text and "| 90.00 | 95.50 | 87.12 | 89.37 |" in reparsed.text


def test_snippet_names_the_repos_and_compiles():
    card = make_model_card("adapter", "me/lavin-mma", base_model="me/lavin", example_prompt='Say "hi"\nResponse:')
    [snippet] = card.text.split("```python\n")[1:]
    code = snippet.split("```")[0]
    compile(code, "snippet", "exec")
    assert 'PeftModel.from_pretrained(base, "me/lavin-mma")' in code
    assert 'AutoModelForImageTextToText.from_pretrained("me/lavin")' in code
    assert 'prompt = "Say \\"hi\\"\\nResponse:"' in code


def test_model_card_without_results():
    card = make_model_card("model", "me/lavin-7b", base_model="huggyllama/llama-7b")
    data = card.data
    assert data.library_name == "transformers" and data.base_model == "huggyllama/llama-7b"
    assert data.eval_results is None and data.metrics is None and data.datasets is None
    assert "model-index" not in data.to_dict() and "base_model_relation" not in data.to_dict()
    assert "No evaluation results were recorded" in card.text


def test_extra_eval_results_are_kept():
    extra = EvalResult(
        task_type="image-text-to-text",
        dataset_type="lmms-lab/POPE",
        dataset_name="POPE",
        metric_type="f1",
        metric_value=0.85,
    )
    data = make_model_card("model", "me/lavin", scienceqa_scores={"Avg": 80.0}, eval_results=[extra]).data
    assert [r.dataset_type for r in data.eval_results] == ["derek-thomas/ScienceQA", "lmms-lab/POPE"]
    assert data.metrics == ["accuracy", "f1"]


def test_custom_template(tmp_path):
    template = tmp_path / "mine.md"
    template.write_text("---\n{{ card_data }}\n---\n# {{ model_name }} on {{ base_model }}\n")
    card = make_model_card("adapter", "me/x", base_model="me/base", template_path=template)
    assert card.text.strip() == "# x on me/base"
    assert card.data.library_name == "peft"


@pytest.mark.parametrize(
    ("scores", "message"),
    [({"ALL": 90.0}, "Unknown ScienceQA columns"), ({"Avg": 0.9e3}, "percentage"), ({"NAT": "high"}, "percentage")],
)
def test_bad_scores(scores, message):
    with pytest.raises(ValueError, match=message):
        scienceqa_eval_results(scores)


def test_missing_template_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.md"
    with pytest.raises(FileNotFoundError, match="does not exist.*adapter.md, model.md"):
        make_model_card("adapter", "me/x", base_model="me/base", template_path=missing)


@pytest.mark.parametrize("repo_id", ["", "bad id", "a/b/c", "a//b", "/abs/path", "./relative", "me/-x-", "me/x..y"])
def test_malformed_repo_ids(repo_id):
    with pytest.raises(ValueError, match="repo_id"):
        make_model_card("model", repo_id)


def test_card_errors_for_wrong_kind_and_missing_base():
    with pytest.raises(ValueError, match="Unknown card kind"):
        make_model_card("dataset", "me/x")
    with pytest.raises(ValueError, match="needs `base_model`"):
        make_model_card("adapter", "me/x")
    with pytest.raises(ValueError, match="no namespace"):
        make_model_card("model", "x")


def test_push_without_a_token(no_token, tiny):
    peft_model, model, processor = tiny
    with pytest.raises(ValueError, match="needs a token.*HF_TOKEN.*hf auth login"):
        push_adapter_to_hub(peft_model, "me/x", base_model="me/base")
    with pytest.raises(ValueError, match="needs a token"):
        push_model_to_hub(model, processor, "me/x")
    with pytest.raises(ValueError, match="needs a token"):
        push_model_to_hub(model, processor, "me/x", token=False)


@pytest.mark.parametrize("repo_id", ["bad id", "a/b/c", "/abs/path"])
def test_push_rejects_malformed_repo_ids_before_any_request(repo_id, tiny):
    # With a token given, the id is checked first: a request would fail differently (no network here).
    peft_model, model, processor = tiny
    with pytest.raises(ValueError, match="repo_id"):
        push_adapter_to_hub(peft_model, repo_id, base_model="me/base", token="hf_x")
    with pytest.raises(ValueError, match="repo_id"):
        push_model_to_hub(model, processor, repo_id, token="hf_x")


def test_push_adapter_needs_a_hub_base_model(tiny, tmp_path):
    peft_model, _, _ = tiny  # built in memory: its config names no base model
    with pytest.raises(ValueError, match="names no base model"):
        push_adapter_to_hub(peft_model, "me/x", token="hf_x")
    with pytest.raises(ValueError, match="local path"):
        push_adapter_to_hub(peft_model, "me/x", base_model=str(tmp_path), token="hf_x")


def test_push_wrong_objects(tiny):
    peft_model, model, processor = tiny
    with pytest.raises(TypeError, match="push_adapter_to_hub"):
        push_model_to_hub(peft_model, processor, "me/x", token="hf_x")
    with pytest.raises(TypeError, match="expects a peft.PeftModel"):
        push_adapter_to_hub(model, "me/x", token="hf_x")
    with pytest.raises(TypeError, match="processor"):
        push_model_to_hub(model, None, "me/x", token="hf_x")
