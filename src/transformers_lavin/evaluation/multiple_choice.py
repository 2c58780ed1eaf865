"""Multiple-choice accuracy by answer likelihood, for ScienceQA-style datasets.

A tiny or briefly trained model rarely writes a well-formed answer, so instead of generating and parsing we read the
model's preference directly, as language-model benchmarks do: after the prompt and `"The answer is "`, the option
whose text the model finds most likely is its answer. Only the problem's own options compete, so chance is
1 / number of options.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch

from ..data import OPTION_LETTERS

ANSWER_PREFIX = "The answer is "


@dataclass
class MultipleChoiceResult:
    """Predictions and accuracies of [`score_choice_texts`]; image and text-only questions are kept apart."""

    predictions: list[str] = field(default_factory=list)
    correct: list[bool] = field(default_factory=list)
    has_image: list[bool] = field(default_factory=list)
    num_choices: list[int] = field(default_factory=list)
    choice_scores: list[list[float]] = field(default_factory=list)  # per row, one score per choice

    def _subset(self, with_image: bool) -> list[int]:
        return [i for i, flag in enumerate(self.has_image) if flag == with_image]

    def accuracy(self, with_image: bool | None = None) -> float:
        """Fraction answered correctly, over image questions (`True`), text-only ones (`False`) or all (`None`)."""
        rows = range(len(self.correct)) if with_image is None else self._subset(with_image)
        return sum(self.correct[i] for i in rows) / len(rows) if rows else float("nan")

    def chance(self, with_image: bool | None = None) -> float:
        """Expected accuracy of a uniform random guess: the mean of `1 / num_choices`."""
        rows = range(len(self.correct)) if with_image is None else self._subset(with_image)
        return sum(1 / self.num_choices[i] for i in rows) / len(rows) if rows else float("nan")

    def summary(self) -> dict[str, float | int]:
        """Accuracy and chance for image questions, text-only questions and all, plus counts."""
        return {
            "image_accuracy": self.accuracy(True),
            "image_chance": self.chance(True),
            "num_image": len(self._subset(True)),
            "text_accuracy": self.accuracy(False),
            "text_chance": self.chance(False),
            "num_text": len(self._subset(False)),
            "accuracy": self.accuracy(),
            "chance": self.chance(),
        }


def _prompt_text(prompt: Any) -> str:
    """The text of a prompt column entry: a plain string or a conversational list of messages."""
    if isinstance(prompt, str):
        return prompt
    texts = []
    for message in prompt:
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(part["text"] for part in content if part.get("type") == "text")
    return "".join(texts)


def option_token_ids(tokenizer: Any, options: Sequence[str], answer_prefix: str, suffix: str) -> list[list[int]]:
    """
    The token ids scored for each option: `separator + option + suffix`, where the separator is the trailing
    whitespace of `answer_prefix`. Subword tokenizers write " circle" as one token, not " " + "circle", so the space
    belongs to the option, as when the whole answer is tokenized at once in training.
    """
    separator = answer_prefix[len(answer_prefix.rstrip()) :]
    return [tokenizer.encode(separator + option + suffix, add_special_tokens=False) for option in options]


def _token_aligned(value: Any, input_ids: torch.Tensor) -> bool:
    """Whether a processor output holds one value per token (e.g. `token_type_ids`), like `input_ids`."""
    return isinstance(value, torch.Tensor) and value.shape == input_ids.shape


@torch.no_grad()
def option_log_likelihoods(
    model: torch.nn.Module,
    prompts: Sequence[Mapping[str, Any]],
    options: Sequence[Sequence[Sequence[int]]],
    pad_token_id: int,
    batch_size: int = 32,
) -> list[list[float]]:
    """
    The summed log-probability of each option's tokens after its prompt: the one scoring function of multiple-choice
    questions, used by training ([`score_choice_texts`]) and by evaluation (`lavin-eval`'s
    `scienceqa.scoring=likelihood`, through [`~evaluation.models.HFModelAdapter.score_options`]).

    Args:
        model: Any model whose forward takes the processor's outputs and returns `logits`; put in eval mode for the
            call and restored afterwards.
        prompts: One processor output per question (`input_ids` of shape (1, length), plus whatever else the model
            takes: `pixel_values`, `image_sizes`, `token_type_ids`, ...). Tensors with one value per token are
            extended over the option with zeros; the others (image tensors) are concatenated over the batch.
        options: Per question, the token ids of each option (see [`option_token_ids`]).
        pad_token_id: Fills the batch after the shorter sequences (the padding is masked out).
        batch_size: Sequences (question-option pairs) per forward pass.

    Returns:
        `list[list[float]]`: per question, one score per option.
    """
    device = next(model.parameters()).device
    pairs = [(index, prompt, option) for index, prompt in enumerate(prompts) for option in options[index]]
    scores: list[list[float]] = [[] for _ in prompts]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            lengths = [prompt["input_ids"].shape[-1] + len(option) for _, prompt, option in chunk]
            length = max(lengths)
            input_ids = torch.full((len(chunk), length), pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            targets = torch.full_like(input_ids, -100)
            per_token: dict[str, torch.Tensor] = {}
            per_image: dict[str, list[torch.Tensor]] = {}
            for row, (_, prompt, option) in enumerate(chunk):
                prompt_ids = prompt["input_ids"][0]
                ids = torch.cat([prompt_ids.long().cpu(), torch.tensor(option, dtype=torch.long)])
                input_ids[row, : len(ids)] = ids
                attention_mask[row, : len(ids)] = 1
                targets[row, len(prompt_ids) : len(ids)] = ids[len(prompt_ids) :]
                for key, value in prompt.items():
                    if key in ("input_ids", "attention_mask") or value is None:
                        continue
                    if _token_aligned(value, prompt["input_ids"]):
                        column = per_token.setdefault(key, torch.zeros(len(chunk), length, dtype=value.dtype))
                        column[row, : value.shape[-1]] = value[0]
                    elif isinstance(value, torch.Tensor):
                        per_image.setdefault(key, []).append(value)
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask, **per_token}
            inputs.update({key: torch.cat(values) for key, values in per_image.items()})
            inputs = {key: value.to(device) for key, value in inputs.items()}
            logits = model(**inputs).logits.float()
            # Position t predicts token t + 1.
            log_probs = torch.log_softmax(logits[:, :-1], dim=-1).cpu()
            shifted = targets[:, 1:]
            token_scores = log_probs.gather(-1, shifted.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            totals = (token_scores * (shifted != -100)).sum(dim=1)
            for (index, *_), total in zip(chunk, totals.tolist(), strict=True):
                scores[index].append(total)
    finally:
        model.train(was_training)
    return scores


def score_choice_texts(
    model: torch.nn.Module,
    processor: Any,
    dataset: datasets.Dataset,
    batch_size: int = 32,
    answer_prefix: str = ANSWER_PREFIX,
    suffix: str = ".",
) -> MultipleChoiceResult:
    """
    Answers every question of `dataset` by the option whose text is most likely after `prompt + answer_prefix`: the
    summed log-probability of the tokens of `choice + suffix`, as language-model benchmarks score options. For models
    trained to write the answer's text (`The answer is circle.`) rather than its letter.

    Args:
        model: A LaVIN (or a `PeftModel` around one); put in eval mode for the call and restored afterwards.
        processor: Its [`LavinProcessor`].
        dataset: Rows with `prompt` (text or conversational), `images` (list, empty for text-only), `choices` and
            `answer` (the correct letter), as [`transformers_lavin.data.load_scienceqa`] returns them.
        batch_size: Sequences (question-option pairs) per forward pass.
        answer_prefix: Text between the prompt and the option.
        suffix: Text scored after each option's text.

    Returns:
        [`MultipleChoiceResult`], with `choice_scores` holding each choice's summed log-probability.
    """
    _check_columns(dataset)
    tokenizer = processor.tokenizer
    prompt_end = answer_prefix.rstrip()
    # The prompt's ids as the processor writes them (LaVIN's prefix, the image tokens), then each choice's tokens.
    prompts = [
        processor(
            images=[list(row["images"])],
            text=[tokenizer.bos_token + _prompt_text(row["prompt"]) + prompt_end],
            return_tensors="pt",
        )
        for row in dataset
    ]
    options = [
        option_token_ids(tokenizer, row["choices"][: len(OPTION_LETTERS)], answer_prefix, suffix) for row in dataset
    ]
    scores = option_log_likelihoods(model, prompts, options, tokenizer.pad_token_id, batch_size)
    result = MultipleChoiceResult()
    for row, row_scores in zip(dataset, scores, strict=True):
        prediction = OPTION_LETTERS[best_option(row_scores)]
        result.predictions.append(prediction)
        result.correct.append(prediction == row["answer"])
        result.has_image.append(len(row["images"]) > 0)
        result.num_choices.append(len(row_scores))
        result.choice_scores.append(row_scores)
    return result


def best_option(scores: Sequence[float]) -> int:
    """The index of the highest score (the first one on a tie)."""
    return max(range(len(scores)), key=scores.__getitem__)


def _check_columns(dataset: datasets.Dataset) -> None:
    missing = {"prompt", "images", "choices", "answer"} - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"The dataset lacks the column(s) {sorted(missing)}; use transformers_lavin.data.load_scienceqa."
        )


__all__ = [
    "ANSWER_PREFIX",
    "MultipleChoiceResult",
    "best_option",
    "option_log_likelihoods",
    "option_token_ids",
    "score_choice_texts",
]
