"""Model cards for LaVIN models and MMA adapters, rendered from the templates shipped in `transformers_lavin/model_cards`."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..evaluation.metrics.scienceqa import SCIENCEQA_COLUMNS

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "model_cards"
CARD_KINDS = ("adapter", "model")
PIPELINE_TAG = "image-text-to-text"
# The ScienceQA copy most Hub users load; pass `scienceqa_dataset_id` to name another.
SCIENCEQA_DATASET_ID = "derek-thomas/ScienceQA"
DEFAULT_PROMPT = (
    "Question: Which color is the largest shape?\nContext: N/A\nOptions: (A) red (B) blue (C) green\nResponse:"
)
LAVIN_CITATION = """@inproceedings{luo2023cheap,
  title     = {Cheap and Quick: Efficient Vision-Language Instruction Tuning for Large Language Models},
  author    = {Luo, Gen and Zhou, Yiyi and Ren, Tianhe and Chen, Shengxin and Sun, Xiaoshuai and Ji, Rongrong},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2023},
  note      = {arXiv:2305.15023}
}"""
_COLUMN_NAMES = {"Avg": "average"}


def check_repo_id(repo_id: str, argument: str = "repo_id", require_namespace: bool = True) -> str:
    """
    Checks that `repo_id` is a Hub model id (`namespace/name`), with an error that says how to fix it.

    Args:
        repo_id (`str`): the id to check.
        argument (`str`): the argument name to show in the error.
        require_namespace (`bool`): whether the `namespace/` part is required.

    Returns:
        `str`: `repo_id`, unchanged.

    Raises:
        `ValueError`: if it is not a valid id (or a local path where a Hub id is needed).
    """
    hint = (
        f"Use a Hub model id like 'my-user/lavin-7b-mma': letters, digits, '-', '_' and '.', "
        f"{'a namespace, one /, and a name' if require_namespace else 'with an optional namespace/ in front'}."
    )
    if not isinstance(repo_id, str) or not repo_id:
        raise ValueError(f"`{argument}` must be a non-empty string, got {repo_id!r}. {hint}")
    if os.path.isabs(repo_id) or repo_id.startswith((".", "~")) or (os.path.exists(repo_id) and "/" in repo_id):
        raise ValueError(f"`{argument}` is a local path ({repo_id!r}), not a Hub id. {hint}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"`{argument}` {repo_id!r} is not a valid Hub repo id: {error} {hint}") from None
    if require_namespace and "/" not in repo_id:
        raise ValueError(f"`{argument}` {repo_id!r} has no namespace. {hint}")
    return repo_id


def scienceqa_eval_results(
    scores: Mapping[str, float | None], dataset_id: str = SCIENCEQA_DATASET_ID, split: str = "test"
) -> list[EvalResult]:
    """
    ScienceQA accuracies as Hub `EvalResult`s, one metric per column of LaVIN's table.

    Args:
        scores (`Mapping[str, float | None]`):
            Accuracy in percent by column (`NAT`, `SOC`, `LAN`, `TXT`, `IMG`, `NO`, `G1-6`, `G7-12`, `Avg`), as
            returned by `transformers_lavin.evaluation.metrics.scienceqa.scienceqa_scores`; `None` (a column with no
            problem) is left out.
        dataset_id (`str`): the Hub id of the dataset, for the `model-index`.
        split (`str`): the split that was scored.

    Raises:
        `ValueError`: for an unknown column or a value outside [0, 100].
    """
    unknown = sorted(set(scores) - set(SCIENCEQA_COLUMNS))
    if unknown:
        raise ValueError(f"Unknown ScienceQA columns {unknown}; use {list(SCIENCEQA_COLUMNS)}.")
    results = []
    for column in SCIENCEQA_COLUMNS:
        value = scores.get(column)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 100:
            raise ValueError(f"ScienceQA accuracy for {column} must be a percentage in [0, 100], got {value!r}.")
        results.append(
            EvalResult(
                task_type=PIPELINE_TAG,
                task_name="Multiple-choice science question answering",
                dataset_type=dataset_id,
                dataset_name="ScienceQA",
                dataset_split=split,
                metric_type="accuracy",
                metric_name=f"Accuracy ({_COLUMN_NAMES.get(column, column)})",
                metric_value=round(float(value), 2),
            )
        )
    return results


def make_model_card(
    kind: Literal["adapter", "model"],
    repo_id: str,
    *,
    base_model: str | None = None,
    processor_id: str | None = None,
    model_description: str | None = None,
    settings: Mapping[str, Any] | None = None,
    scienceqa_scores: Mapping[str, float | None] | None = None,
    scienceqa_dataset_id: str = SCIENCEQA_DATASET_ID,
    scienceqa_split: str = "test",
    eval_results: Sequence[EvalResult] | None = None,
    datasets: Sequence[str] | None = None,
    tags: Sequence[str] | None = None,
    license: str | None = "apache-2.0",
    language: str | list[str] | None = "en",
    example_prompt: str = DEFAULT_PROMPT,
    max_new_tokens: int = 64,
    template_path: str | os.PathLike | None = None,
    local: bool = False,
) -> ModelCard:
    """
    Renders the model card of an MMA adapter (`kind="adapter"`) or of a full LaVIN model (`kind="model"`).

    The YAML metadata follows the Hub's model card spec: `library_name` (`peft` for an adapter, `transformers` for a
    model), `pipeline_tag: image-text-to-text`, `base_model` (with `base_model_relation: adapter` for an adapter),
    tags, datasets, `metrics` and a `model-index` with the evaluation results when they are known. The card's usage
    snippet loads `repo_id` and runs as written.

    Args:
        kind (`str`): `"adapter"` or `"model"`.
        repo_id (`str`): the Hub id the card is for, `namespace/name`.
        base_model (`str`, *optional*): Hub id of the LaVIN base model the adapter was trained on (required for an
            adapter); for a full model, the model it was built from, if any.
        processor_id (`str`, *optional*): where the snippet loads the processor from; defaults to `base_model` for
            an adapter and to `repo_id` for a model.
        model_description (`str`, *optional*): a paragraph under the title.
        settings (`Mapping[str, Any]`, *optional*): rows of the settings table (name -> value).
        scienceqa_scores (`Mapping[str, float | None]`, *optional*): ScienceQA accuracy (percent) by column; adds
            `ScienceQA` to the datasets, `accuracy` to the metrics, a `model-index` and a table.
        scienceqa_dataset_id (`str`): Hub id of the ScienceQA copy to cite in the metadata.
        scienceqa_split (`str`): the split `scienceqa_scores` were measured on.
        eval_results (`Sequence[EvalResult]`, *optional*): further results for the `model-index`.
        datasets (`Sequence[str]`, *optional*): Hub ids of the training datasets.
        tags (`Sequence[str]`, *optional*): tags added to the standard ones.
        license (`str`, *optional*): license id; mind the license of the base model's weights.
        language (`str` or `list[str]`, *optional*): language code(s).
        example_prompt (`str`): the prompt of the usage snippet.
        max_new_tokens (`int`): the generation length of the usage snippet.
        template_path (`str` or `os.PathLike`, *optional*): a Jinja template to use instead of the shipped one.
        local (`bool`, *optional*, defaults to `False`): a card for a local save: `repo_id` and `base_model` may be
            local folders, and the snippet loads from them.

    Returns:
        `huggingface_hub.ModelCard`: the rendered card (`card.data` holds the metadata).

    Raises:
        `ValueError`: for an unknown kind, a malformed id, a missing `base_model` for an adapter or bad scores.
        `FileNotFoundError`: if the template does not exist.
    """
    if kind not in CARD_KINDS:
        raise ValueError(f"Unknown card kind {kind!r}; use one of {CARD_KINDS}.")
    if not local:
        check_repo_id(repo_id)
    if kind == "adapter" and base_model is None:
        raise ValueError(
            "An adapter card needs `base_model`: the Hub id of the LaVIN model the adapter was trained on "
            "(push a local base first with `push_model_to_hub`)."
        )
    if base_model is not None and not local:
        check_repo_id(base_model, "base_model")
    template = Path(template_path) if template_path is not None else TEMPLATES_DIR / f"{kind}.md"
    if not template.is_file():
        shipped = ", ".join(sorted(p.name for p in TEMPLATES_DIR.glob("*.md")))
        raise FileNotFoundError(
            f"Model card template {str(template)!r} does not exist. Pass an existing Jinja file as `template_path`, "
            f"or leave it out to use the shipped templates in {TEMPLATES_DIR} ({shipped or 'none found'})."
        )

    results = list(eval_results or [])
    all_datasets = list(datasets or [])
    if scienceqa_scores:
        results = scienceqa_eval_results(scienceqa_scores, scienceqa_dataset_id, scienceqa_split) + results
        if scienceqa_dataset_id not in all_datasets:
            all_datasets.append(scienceqa_dataset_id)
    metrics = sorted({result.metric_type for result in results})
    standard_tags = ["lavin", "mma", "peft"] if kind == "adapter" else ["lavin"]
    model_name = repo_id.rstrip("/").split("/")[-1]
    # The metadata names only what the Hub knows (as TRL's cards do): a local base or dataset stays in the text.
    metadata_base = base_model if base_model is not None and _is_hub_id(base_model) else None
    all_datasets = [name for name in all_datasets if _is_hub_id(name)]
    extra: dict[str, Any] = {"base_model_relation": "adapter"} if kind == "adapter" and metadata_base else {}
    card_data = ModelCardData(
        base_model=metadata_base,
        library_name="peft" if kind == "adapter" else "transformers",
        pipeline_tag=PIPELINE_TAG,
        tags=[*standard_tags, PIPELINE_TAG, "transformers-lavin", *(tags or [])],
        datasets=all_datasets or None,
        metrics=metrics or None,
        license=license,
        language=language,
        eval_results=results or None,
        model_name=model_name if results else None,
        **extra,
    )
    description = model_description or (
        f"An MMA adapter for LaVIN, trained with transformers-lavin on `{base_model}`."
        if kind == "adapter"
        else "A LaVIN vision-language model for transformers-lavin."
    )
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        model_name=model_name,
        model_description=description,
        repo_id=repo_id,
        base_model=base_model,
        base_model_link=_model_link(base_model),
        processor_id=processor_id or (base_model if kind == "adapter" else repo_id),
        example_prompt=example_prompt,
        max_new_tokens=int(max_new_tokens),
        settings_table=_markdown_table(["Setting", "Value"], list((settings or {}).items())),
        evaluation=_evaluation_section(scienceqa_scores, scienceqa_split),
        citation=LAVIN_CITATION,
    )


def _is_hub_id(name: str) -> bool:
    """Whether `name` is a Hub id rather than a local file or folder."""
    if os.path.exists(name):
        return False
    try:
        check_repo_id(name, require_namespace=False)
    except ValueError:
        return False
    return True


def _model_link(model: str | None) -> str:
    """A Markdown link to a Hub model, or the local folder in code style."""
    if model is None:
        return ""
    try:
        check_repo_id(model, require_namespace=False)
    except ValueError:
        return f"`{model}` (a local folder)"
    return f"[`{model}`](https://huggingface.co/{model})"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if not rows:
        return "Not recorded."
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        value = ", ".join(str(v) for v in value)
    elif isinstance(value, int) and not isinstance(value, bool):
        value = f"{value:,}"
    return str(value).replace("|", "\\|")


def _evaluation_section(scores: Mapping[str, float | None] | None, split: str) -> str:
    if not scores:
        return "No evaluation results were recorded when this card was made."
    columns = [c for c in SCIENCEQA_COLUMNS if scores.get(c) is not None]
    table = _markdown_table(columns, [[f"{scores[c]:.2f}" for c in columns]])
    return (
        f"ScienceQA ({split} split) accuracy in percent, by subject (NAT natural, SOC social, LAN language science), "
        f"context (TXT text, IMG image, NO none), grade (G1-6, G7-12) and average:\n\n{table}"
    )
