"""Pushing MMA adapters and full LaVIN models to the Hub with their model cards.

Both functions go through the libraries' own `push_to_hub` (PEFT's for an adapter, transformers' for a model and
its processor, which call huggingface_hub's `create_repo` and `create_commit`), then upload the card with
`ModelCard.push_to_hub`, which has the Hub validate its metadata. The card is rendered before anything is uploaded,
so a bad argument fails before a repo is touched.
"""

from __future__ import annotations

from typing import Any

from huggingface_hub import HfApi, ModelCard, get_token
from peft import PeftModel
from transformers import PreTrainedModel, ProcessorMixin

from .cards import check_repo_id, make_model_card


def resolve_token(token: str | bool | None) -> str:
    """
    The token to push with: `token` itself, or the saved login / `HF_TOKEN` when `token` is `None` or `True`.

    Raises:
        `ValueError`: if no token is available (pushing needs one).
    """
    if isinstance(token, str) and token:
        return token
    found = get_token() if token is not False else None
    if not found:
        raise ValueError(
            "Pushing to the Hub needs a token with write access, and none was found. Pass `token=...`, set the "
            "HF_TOKEN environment variable, or run `hf auth login`. Create a token at "
            "https://huggingface.co/settings/tokens."
        )
    return found


def _full_repo_id(repo_id: str, token: str) -> str:
    """`namespace/name`, with the token owner's namespace when `repo_id` has none (what `create_repo` would use)."""
    check_repo_id(repo_id, require_namespace=False)
    return repo_id if "/" in repo_id else f"{HfApi().whoami(token=token)['name']}/{repo_id}"


def _adapter_settings(peft_model: PeftModel, adapter_name: str) -> dict[str, Any]:
    config = peft_model.peft_config[adapter_name]
    settings: dict[str, Any] = {"PEFT method": str(getattr(config.peft_type, "value", config.peft_type))}
    for field in ("adapter_type", "vision_adapter_type", "adapter_hidden_size", "groups", "scale", "temperature"):
        if hasattr(config, field):
            settings[field] = getattr(config, field)
    for field in ("target_modules", "vision_target_modules", "modules_to_save"):
        if getattr(config, field, None):
            settings[field] = sorted(getattr(config, field))
    trainable, total = peft_model.get_nb_trainable_parameters()
    settings["trainable parameters"] = trainable
    settings["all parameters"] = total
    return settings


def _model_settings(model: PreTrainedModel) -> dict[str, Any]:
    config = model.config
    settings: dict[str, Any] = {"model type": config.model_type}
    text_config, vision_config = getattr(config, "text_config", None), getattr(config, "vision_config", None)
    if text_config is not None:
        settings["language model"] = (
            f"{text_config.model_type}, {text_config.num_hidden_layers} layers, width {text_config.hidden_size}"
        )
    if vision_config is not None:
        settings["vision encoder"] = (
            f"{vision_config.model_type}, {vision_config.num_hidden_layers} layers, width {vision_config.hidden_size},"
            f" {vision_config.image_size}px images"
        )
    for field in ("vision_feature_layers", "projector_hidden_size", "num_image_tokens"):
        if getattr(config, field, None) is not None:
            settings[field] = getattr(config, field)
    settings["parameters"] = model.num_parameters()
    return settings


def push_adapter_to_hub(
    peft_model: PeftModel,
    repo_id: str,
    *,
    base_model: str | None = None,
    processor: ProcessorMixin | None = None,
    token: str | bool | None = None,
    private: bool | None = None,
    commit_message: str = "Upload MMA adapter",
    **card_kwargs: Any,
) -> str:
    """
    Pushes an MMA adapter (a few MB, not the base weights) with its model card.

    Args:
        peft_model (`PeftModel`): the adapted LaVIN model, e.g. from `get_peft_model(lavin, MMAConfig())`.
        repo_id (`str`): `namespace/name`, or `name` for the token owner's namespace. Created if missing.
        base_model (`str`, *optional*): Hub id of the base LaVIN model; defaults to the adapter config's
            `base_model_name_or_path` (where the base was loaded from), which must then be a Hub id.
        processor (`ProcessorMixin`, *optional*): also pushed to the adapter repo when given; the card's snippet
            then loads it from there instead of from the base repo.
        token (`str` or `bool`, *optional*): a write token; defaults to `HF_TOKEN` or the saved login.
        private (`bool`, *optional*): visibility of a newly created repo.
        commit_message (`str`): message of the adapter commit.
        card_kwargs: passed to [`make_model_card`] (`scienceqa_scores`, `datasets`, `tags`, `license`, ...).

    Returns:
        `str`: the URL of the commit that uploaded the card.

    Raises:
        `TypeError`: if `peft_model` is not a `PeftModel`.
        `ValueError`: without a token, for a malformed `repo_id` or when no Hub id of the base model is known.
    """
    if not isinstance(peft_model, PeftModel):
        raise TypeError(
            f"push_adapter_to_hub expects a peft.PeftModel (e.g. get_peft_model(model, MMAConfig())), got "
            f"{type(peft_model).__name__}. Push a full model with push_model_to_hub."
        )
    token = resolve_token(token)
    check_repo_id(repo_id, require_namespace=False)
    adapter_name = peft_model.active_adapter
    base_model = base_model or peft_model.peft_config[adapter_name].base_model_name_or_path
    if not base_model:
        raise ValueError("The adapter config names no base model: pass `base_model=` with its Hub id.")
    check_repo_id(base_model, "base_model")
    repo_id = _full_repo_id(repo_id, token)
    card = make_model_card(
        "adapter",
        repo_id,
        base_model=base_model,
        processor_id=repo_id if processor is not None else base_model,
        settings=card_kwargs.pop("settings", None) or _adapter_settings(peft_model, adapter_name),
        **card_kwargs,
    )
    peft_model.push_to_hub(repo_id, token=token, private=private, commit_message=commit_message)
    if processor is not None:
        processor.push_to_hub(repo_id, token=token, commit_message="Upload processor")
    return _push_card(card, repo_id, token)


def push_model_to_hub(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    repo_id: str,
    *,
    token: str | bool | None = None,
    private: bool | None = None,
    commit_message: str = "Upload LaVIN model",
    **card_kwargs: Any,
) -> str:
    """
    Pushes a full LaVIN model, its processor, the code that loads them without this package (`auto_map` and the
    `configuration_lavin.py`, `modeling_lavin.py`, `processing_lavin.py`, ... files written by `save_pretrained`)
    and its model card.

    Args:
        model (`PreTrainedModel`): a `LavinForConditionalGeneration` (merge an adapter first with
            `merge_and_unload`, or push the adapter alone with [`push_adapter_to_hub`]).
        processor (`ProcessorMixin`): its `LavinProcessor`.
        repo_id (`str`): `namespace/name`, or `name` for the token owner's namespace. Created if missing.
        token (`str` or `bool`, *optional*): a write token; defaults to `HF_TOKEN` or the saved login.
        private (`bool`, *optional*): visibility of a newly created repo.
        commit_message (`str`): message of the model commit.
        card_kwargs: passed to [`make_model_card`] (`base_model`, `scienceqa_scores`, `datasets`, `tags`, ...).

    Returns:
        `str`: the URL of the commit that uploaded the card.

    Raises:
        `TypeError`: if `model` is a `PeftModel` or not a transformers model, or `processor` is missing.
        `ValueError`: without a token or for a malformed `repo_id`.
    """
    if isinstance(model, PeftModel):
        raise TypeError(
            "push_model_to_hub got a PeftModel: push the adapter with push_adapter_to_hub, or merge it first "
            "(model.merge_and_unload(modality=...)) to push a full model."
        )
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"push_model_to_hub expects a transformers PreTrainedModel, got {type(model).__name__}.")
    if not isinstance(processor, ProcessorMixin):
        raise TypeError(
            f"push_model_to_hub needs the model's processor (a LavinProcessor), got {type(processor).__name__}: "
            "users need it to prepare images and prompts."
        )
    token = resolve_token(token)
    repo_id = _full_repo_id(repo_id, token)
    card = make_model_card(
        "model", repo_id, settings=card_kwargs.pop("settings", None) or _model_settings(model), **card_kwargs
    )
    model.push_to_hub(repo_id, token=token, private=private, commit_message=commit_message)
    processor.push_to_hub(repo_id, token=token, commit_message="Upload processor")
    return _push_card(card, repo_id, token)


def _push_card(card: ModelCard, repo_id: str, token: str) -> str:
    # Last, so it replaces the generic README that transformers' push_to_hub writes. Uploaded as a file rather than
    # with ModelCard.push_to_hub, whose YAML check some huggingface_hub releases send to huggingface.co whatever
    # HF_ENDPOINT says (failing offline and on private endpoints); the card's metadata is checked when it is made.
    commit = HfApi(token=token).upload_file(
        path_or_fileobj=str(card).encode("utf-8"),
        path_in_repo="README.md",
        repo_id=repo_id,
        commit_message="Add model card",
    )
    return str(commit)
