"""Property tests: over random JSONL rows (each format's columns holding strings, messages, numbers, nulls, lists,
mappings; images as present, missing, outside or absolute paths, bare strings, nulls and numbers),
`load_training_datasets` gives rows TRL can read or a `UserInputError` that names the row, never another error."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from trl import SFTConfig

from transformers_lavin.cli_errors import UserInputError
from transformers_lavin.data import load_training_datasets
from transformers_lavin.testing_utils import build_tiny_lavin
from transformers_lavin.training import LavinScriptArguments

PROPERTY_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

words = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False, allow_infinity=False), words
)
parts = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(words, scalars)}),
    st.fixed_dictionaries({"type": st.sampled_from(["image", "video", "text"])}),
    scalars,
)
messages = st.fixed_dictionaries(
    {
        "role": st.one_of(st.sampled_from(["user", "assistant", "system"]), scalars),
        "content": st.one_of(words, st.lists(parts, max_size=3), scalars),
    }
)
conversations = st.lists(st.one_of(messages, scalars), max_size=3)
valid_conversations = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": words}), min_size=1, max_size=2
)
values = st.one_of(words, valid_conversations, conversations, scalars, st.dictionaries(words, scalars, max_size=2))
paths = st.sampled_from(
    ["red.png", "red.png", "missing.png", "../outside.png", "{root}/data/red.png", "", "sub/../red.png"]
)
images = st.one_of(st.none(), paths, st.lists(st.one_of(paths, scalars), max_size=2), scalars)
FORMATS = {"messages": ["messages"], "text": ["text"], "prompt_completion": ["prompt", "completion"]}


@st.composite
def rows(draw):
    columns = FORMATS[draw(st.sampled_from(sorted(FORMATS)))]
    with_images = draw(st.booleans())
    count = draw(st.integers(1, 3))
    return [
        {**{column: draw(values) for column in columns}, **({"images": draw(images)} if with_images else {})}
        for _ in range(count)
    ]


def _well_formed(row: dict) -> bool:
    """What TRL reads, computed apart from the package: strings, or messages with string or part-list content."""

    def conversation(value) -> bool:
        return (
            isinstance(value, list)
            and bool(value)
            and all(
                isinstance(m, dict)
                and isinstance(m.get("role"), str)
                and (
                    m.get("content") is None
                    or isinstance(m["content"], str)
                    or isinstance(m["content"], list)
                    and all(
                        isinstance(p, dict)
                        and (p.get("type") == "image" or p.get("type") == "text" and isinstance(p.get("text"), str))
                        for p in m["content"]
                    )
                )
                for m in value
            )
        )

    if "messages" in row:
        return conversation(row["messages"])
    if "text" in row:
        return isinstance(row["text"], str)
    prompt, completion = row["prompt"], row["completion"]
    return (isinstance(prompt, str) and isinstance(completion, str)) or (
        conversation(prompt) and conversation(completion)
    )


@pytest.fixture(scope="module")
def processor():
    return build_tiny_lavin(seed=0)[1]


@pytest.fixture(scope="module")
def training_args(tmp_path_factory):
    return SFTConfig(output_dir=str(tmp_path_factory.mktemp("out")), use_cpu=True, bf16=False, report_to="none")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rows")
    (root / "data").mkdir()
    Image.new("RGB", (8, 8), "red").save(root / "data" / "red.png")
    Image.new("RGB", (8, 8), "blue").save(root / "outside.png")
    return root


@PROPERTY_SETTINGS
@given(data=rows())
def test_dataset_rows_load_or_name_the_bad_row(data, root, processor, training_args):
    data = json.loads(json.dumps(data).replace("{root}", str(root)))
    path = root / "data" / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in data))
    try:
        train, evaluation = load_training_datasets(
            LavinScriptArguments(dataset_name=str(path)), training_args, processor
        )
    except UserInputError as error:
        assert re.search(r"\brow \d+\b", str(error)), str(error)
        return
    assert evaluation is None and len(train) == len(data)
    assert all(_well_formed(row) for row in data)  # a bad row was let through otherwise
    if "images" in train.column_names:
        assert all(image.size == (8, 8) for row in train["images"] for image in row)
