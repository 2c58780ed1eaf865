"""pytest plugin: PEFT's own common tests, from the sdist of the installed PEFT, with MMA in their method
parametrization and LoRA beside it as the control, on a tiny LlamaForCausalLM, a tiny LaVIN and a tiny LLaVA.

`.ci/upstream_peft` fetches the sdist and runs pytest on its `test_config.py`, `test_decoder_models.py` and
`test_custom_models.py` with `-p mma_upstream_peft`. Nothing of PEFT's test code lives in this repository. At
collection, this plugin:

- replaces the values of PEFT's method parametrizations (`ALL_CONFIGS`, `TEST_CASES`, `ALL_CONFIG_CLASSES`,
  `ALL_PEFT_CONFIG_CLASSES`) with MMA and LoRA, and of its model parametrizations with the tiny models, saved to a
  temporary directory; tests without a method parametrization (they test a named method: LoRA variants, prompt
  learning, ...) are deselected and counted;
- points the test classes' `transformers_class` at the tiny models (a VLM loads with `AutoModelForImageTextToText`;
  the custom-model tests get models whose forward returns the logits of the token after the last position, as
  PEFT's toy models return a (batch, classes) tensor), gives every row an image on a VLM (PEFT's inputs are text
  only), and seeds every test;
- marks every test listed under `peft:` in `tests/upstream/not_applicable.yaml` as an expected failure (strict: a
  listed test that passes fails the run), and fails every skip that is not listed: nothing is skipped silently.

The run prints pass / fail / not applicable per method.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
import tempfile
import time
import types
from collections import Counter
from functools import cache
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, LlamaForCausalLM

import transformers_lavin  # noqa: F401  (registers LaVIN with transformers and MMA with PEFT)
from transformers_lavin import MMAConfig
from transformers_lavin.testing_utils import (
    build_byte_tokenizer,
    build_tiny_lavin,
    build_tiny_vlm,
    tiny_lavin_config,
    tiny_vlm_image_tokens,
)

REPOSITORY = Path(__file__).resolve().parents[3]
NOT_APPLICABLE = REPOSITORY / "tests" / "upstream" / "not_applicable.yaml"

if importlib.util.find_spec("diffusers") is None:
    # PEFT's testing_common imports diffusers' StableDiffusionPipeline for an isinstance check in its Stable
    # Diffusion tests, which are not run here; a class nothing is an instance of stands in for it.
    sys.modules["diffusers"] = types.SimpleNamespace(StableDiffusionPipeline=type("StableDiffusionPipeline", (), {}))

MODELS = ("llama", "lavin", "llava")
VLMS = ("lavin", "llava")
# 48 wide, so that even the grouped-query v_proj (24 out) holds the rank-20 adapters of PEFT's SVD re-weighting test.
WIDTH = 48
# Filled at configure: model name -> the directory its tiny model is saved in.
MODEL_PATHS: dict[str, str] = {}
# Node ids (without parameters) of the tests whose method parametrization this plugin replaced.
PARAMETRIZED: set[str] = set()
# (id, config class, kwargs) of each method: MMA with its defaults, LoRA on the attention as PEFT's decoder tests
# use it.
METHODS = (("MMA", MMAConfig, {}), ("LoRA", LoraConfig, {"target_modules": ["q_proj", "v_proj"]}))
# What MMA adds on a VLM: the inputs there hold an image in every row (see `vlm_inputs`), so a merge serves images.
VLM_MMA_KWARGS = {"merge_modality": "image"}


def build_models(directory: Path) -> dict[str, str]:
    """Save the tiny models (with a tokenizer, for the tests that load one) and return their directories."""
    paths = {}
    tokenizer = build_byte_tokenizer()
    for name in MODELS:
        # Not "llama" in the LLaMA's path: PEFT's decoder tests skip merging for every method on a model whose Hub id
        # says llama (its check for BEFT's bias terms), and the merge tests are the point here.
        path = directory / {"llama": "causal-lm"}.get(name, name)
        if name == "llama":
            torch.manual_seed(0)
            LlamaForCausalLM(tiny_lavin_config(text_hidden_size=WIDTH).text_config).save_pretrained(path)
            tokenizer.save_pretrained(path)
        elif name == "lavin":
            model, processor = build_tiny_lavin(seed=0, text_hidden_size=WIDTH)
            model.save_pretrained(path)
            processor.save_pretrained(path)
        else:
            build_tiny_vlm("llava", seed=0, hidden_size=WIDTH).save_pretrained(path)
            tokenizer.save_pretrained(path)
        paths[name] = str(path)
    return paths


class TinyModel:
    """`transformers_class` of PEFT's decoder tests: a model directory with the Auto class its config belongs to."""

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        config = AutoConfig.from_pretrained(path)
        vlm = type(config) in AutoModelForImageTextToText._model_mapping
        return (AutoModelForImageTextToText if vlm else AutoModelForCausalLM).from_pretrained(path, **kwargs)


@cache
def _as_toy_classifier(model_class: type) -> type:
    """
    `model_class` as PEFT's custom-model tests use their toy models: the forward returns a (batch, classes) tensor of
    scores (here: the logits of the token after the last position), and `dtype` may be assigned the dtype the model
    has.
    """

    def forward(self, *args, **kwargs):
        return model_class.forward(self, *args, **kwargs).logits[:, -1].float()

    def set_dtype(self, dtype):
        if dtype != model_class.dtype.fget(self):
            raise ValueError(f"{model_class.__name__} is in {model_class.dtype.fget(self)}, not {dtype}.")

    namespace = {"forward": forward, "dtype": property(model_class.dtype.fget, set_dtype)}
    return type(model_class.__name__, (model_class,), {**namespace, "__module__": model_class.__module__})


class TinyToyModel(TinyModel):
    """`transformers_class` of PEFT's custom-model tests."""

    @classmethod
    def from_pretrained(cls, path, dtype=None, **kwargs):
        model = super().from_pretrained(path, dtype=dtype or torch.float32, **kwargs)
        model.__class__ = _as_toy_classifier(type(model))
        return model


def vlm_inputs(model: str, texts: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict:
    """Each row of `texts` after BOS and one image (the VLM's image tokens), with the image's pixels."""
    config = AutoConfig.from_pretrained(MODEL_PATHS[model])
    tokens = config.num_image_tokens if model == "lavin" else tiny_vlm_image_tokens(config)
    rows = len(texts)
    image = torch.full((rows, tokens), config.image_token_id)
    inputs = {"input_ids": torch.cat([texts[:, :1], image, texts[:, 1:]], dim=1)}
    if attention_mask is not None:
        inputs["attention_mask"] = torch.cat([attention_mask[:, :1], torch.ones_like(image), attention_mask[:, 1:]], 1)
    size = config.vision_config.image_size
    inputs["pixel_values"] = torch.randn(rows, 3, size, size, generator=torch.Generator().manual_seed(0))
    return inputs


def model_inputs(model: str, custom: bool, peft_inputs: dict) -> dict | None:
    """
    The inputs of a test on `model`: the custom-model tests' 9 x 10 batch as token ids every tiny vocabulary holds;
    on a VLM, PEFT's text rows with an image in each (PEFT's inputs are text only, which would leave the vision
    tower, its adapters and the projector out of every test). `None` keeps PEFT's own.
    """
    if custom:
        texts = torch.arange(90).view(9, 10) % 80 + 3
        return vlm_inputs(model, texts) if model in VLMS else {"input_ids": texts}
    if model in VLMS:
        return vlm_inputs(model, peft_inputs["input_ids"], peft_inputs.get("attention_mask"))
    return None


@pytest.fixture(autouse=True)
def _tiny_model_inputs(request):
    """Give each test instance the inputs of its model (the test classes' `prepare_inputs_for_testing` take none)."""
    instance, model = request.instance, _model(request.node)
    if instance is None or model is None or not hasattr(instance, "prepare_inputs_for_testing"):
        return
    custom = type(instance).transformers_class is TinyToyModel
    inputs = model_inputs(model, custom, {} if custom else instance.prepare_inputs_for_testing())
    if inputs is not None:
        device = instance.torch_device
        instance.prepare_inputs_for_testing = lambda: {key: value.to(device) for key, value in inputs.items()}


# ------------------------------------------------------------------------------------------------ parametrization
def _method_parametrization(module, marker) -> list | None:
    """The replacement values of `marker` if it is one of PEFT's method or model parametrizations, else None."""
    values = marker.args[1] if len(marker.args) > 1 else None
    if values is None:
        return None
    if values is getattr(module, "PEFT_DECODER_MODELS_TO_TEST", None):
        return [pytest.param(MODEL_PATHS[name], id=name) for name in MODELS]
    if values is getattr(module, "ALL_CONFIGS", None):  # decoder tests: the model comes from its own parameter
        return [pytest.param(cls, {"task_type": "CAUSAL_LM", **kwargs}, id=name) for name, cls, kwargs in METHODS]
    if values is getattr(module, "TEST_CASES", None):
        return [
            pytest.param(f"{name}-{model}", MODEL_PATHS[model], cls, kwargs, id=f"{name}-{model}")
            for model in MODELS
            for name, cls, kwargs in METHODS
        ]
    if values is getattr(module, "ALL_CONFIG_CLASSES", None):
        return [pytest.param(cls, {}, id=name) for name, cls, _ in METHODS]
    if values is getattr(module, "ALL_PEFT_CONFIG_CLASSES", None):
        return [pytest.param(cls, id=name) for name, cls, _ in METHODS]
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc):
    markers = metafunc.definition.own_markers
    for index, marker in enumerate(markers):
        if marker.name != "parametrize":
            continue
        values = _method_parametrization(metafunc.module, marker)
        if values is not None:
            markers[index] = pytest.mark.parametrize(marker.args[0], values).mark
            if "config_cls" in marker.args[0] or "config_class" in marker.args[0]:
                PARAMETRIZED.add(metafunc.definition.nodeid)


def _method(item) -> str | None:
    params = getattr(item, "callspec", None)
    params = params.params if params else {}
    config_class = params.get("config_cls", params.get("config_class"))
    return {MMAConfig: "MMA", LoraConfig: "LoRA"}.get(config_class)


def _model(item) -> str | None:
    params = item.callspec.params if hasattr(item, "callspec") else {}
    path = params.get("model_id")
    return next((name for name, value in MODEL_PATHS.items() if value == path), None)


# --------------------------------------------------------------------------------------------------- not applicable
def github_anchors(markdown: Path) -> set[str]:
    """The anchors GitHub gives the headings of `markdown`."""
    anchors, in_code = set(), False
    for line in markdown.read_text().splitlines():
        in_code ^= line.startswith("```")
        if line.startswith("#") and not in_code:
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return anchors


def load_not_applicable() -> list[dict]:
    entries = yaml.safe_load(NOT_APPLICABLE.read_text())["peft"] or []
    for entry in entries:
        if not entry.get("reason") or not entry.get("doc") or not entry.get("tests"):
            raise pytest.UsageError(f"{NOT_APPLICABLE}: every entry needs tests, reason and doc: {entry}")
        document, _, anchor = entry["doc"].partition("#")
        if anchor not in github_anchors(REPOSITORY / document):
            raise pytest.UsageError(f"{NOT_APPLICABLE}: {entry['doc']} names no section of {document}.")
    return entries


def _matches(pattern: str, name: str) -> bool:
    """`*` matches anything; every other character stands for itself (`[` and `]` too, unlike fnmatch)."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), name) is not None


def _listed(entries: list[dict], nodeid: str) -> dict | None:
    name = nodeid.split("/")[-1]
    return next((e for e in entries if any(_matches(pattern, name) for pattern in e["tests"])), None)


# ------------------------------------------------------------------------------------------------------- the hooks
def pytest_configure(config):
    directory = Path(tempfile.mkdtemp(prefix="mma-upstream-peft-"))
    config._upstream_peft = {"directory": directory, "start": time.perf_counter(), "outcomes": Counter()}
    MODEL_PATHS.update(build_models(directory))
    config._upstream_peft["entries"] = load_not_applicable()


def pytest_unconfigure(config):
    state = getattr(config, "_upstream_peft", None)
    if state:
        shutil.rmtree(state["directory"], ignore_errors=True)


def _prepare(item) -> None:
    """Point the test's class at the tiny models, and give MMA on a VLM its kwargs."""
    if item.cls is not None and hasattr(item.cls, "transformers_class"):
        # The custom-model tests' toy models take `X` and return a tensor; the decoder tests' are transformers'.
        toys = (getattr(item.module, "MockTransformerWrapper", None), TinyToyModel)
        item.cls.transformers_class = TinyToyModel if item.cls.transformers_class in toys else TinyModel
    if _method(item) == "MMA" and _model(item) in VLMS:
        # The decoder tests take the model and the method from two parameters; MMA's kwargs depend on both.
        params = item.callspec.params
        params["config_kwargs"] = {**params["config_kwargs"], **VLM_MMA_KWARGS}


def pytest_collection_modifyitems(session, config, items):
    state = config._upstream_peft
    selected, unparametrized, used = [], [], set()
    for item in items:
        if item.nodeid.split("[")[0] not in PARAMETRIZED:
            unparametrized.append(item)
            continue
        _prepare(item)
        entry = _listed(state["entries"], item.nodeid)
        if entry is not None:
            used.add(id(entry))
            item.add_marker(pytest.mark.xfail(reason=entry["reason"], strict=True))
            item.user_properties.append(("not_applicable", entry["doc"]))
        selected.append(item)
    stale = [entry["tests"] for entry in state["entries"] if id(entry) not in used]
    if stale:
        raise pytest.UsageError(f"{NOT_APPLICABLE}: these entries match no collected test: {stale}")
    if unparametrized:
        config.hook.pytest_deselected(items=unparametrized)
    items[:] = selected
    state["unparametrized"] = len(unparametrized)


@pytest.fixture(autouse=True)
def _seeded():
    # PEFT's tests seed where they compare; seeding every test makes the whole run repeat exactly (dropout included).
    torch.manual_seed(0)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    listed = any(name == "not_applicable" for name, _ in item.user_properties)
    if report.skipped and not listed and not hasattr(report, "wasxfail"):
        report.outcome = "failed"  # a skip no entry of not_applicable.yaml explains
        report.longrepr = f"Skipped without an entry in {NOT_APPLICABLE.name}: {report.longrepr}"
    if report.when == "call" or (report.when == "setup" and not report.passed):
        outcome = "not applicable" if (report.skipped and listed) or hasattr(report, "wasxfail") else report.outcome
        item.config._upstream_peft["outcomes"][(_method(item), _model(item) or "-", outcome)] += 1
    return report


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = config._upstream_peft
    outcomes = state["outcomes"]
    write = terminalreporter.write_line
    write("")
    write(f"PEFT's common tests, {time.perf_counter() - state['start']:.0f} s; not collected: "
          f"{state.get('unparametrized', 0)} tests of named methods (no method parametrization).")  # fmt: skip
    for model in (*MODELS, "-"):
        cells = []
        for method in ("MMA", "LoRA"):
            counts = {o: outcomes[(method, model, o)] for o in ("passed", "failed", "not applicable")}
            cells.append(f"{method} " + " / ".join(f"{n} {o}" for o, n in counts.items()))
        if any(outcomes[(m, model, o)] for m in ("MMA", "LoRA") for o in ("passed", "failed", "not applicable")):
            write(f"  {model if model != '-' else 'no model (config, toy MLP)':<28} " + "   |   ".join(cells))
