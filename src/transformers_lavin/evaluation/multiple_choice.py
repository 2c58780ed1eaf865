"""Multiple-choice accuracy by answer likelihood, for ScienceQA-style datasets.

A tiny or briefly trained model rarely writes a well-formed answer, so instead of generating and parsing we read the
model's preference directly, as language-model benchmarks do: after the prompt and `"The answer is "`, the option
whose text the model finds most likely is its answer. Only the problem's own options compete, so chance is
1 / number of options.
"""

from __future__ import annotations

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


@torch.no_grad()
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
    device = next(model.parameters()).device
    # One sequence per (question, choice): the prompt's ids as the processor writes them, then the choice's tokens.
    # Trailing spaces of the prefix belong to the option, as when the whole answer is tokenized at once: subword
    # tokenizers write " circle" as one token, not " " + "circle".
    prompt_end = answer_prefix.rstrip()
    separator = answer_prefix[len(prompt_end) :]
    pairs = []
    for index, row in enumerate(dataset):
        prefix = processor(
            images=[list(row["images"])], text=[tokenizer.bos_token + _prompt_text(row["prompt"]) + prompt_end]
        )
        for choice in row["choices"][: len(OPTION_LETTERS)]:
            continuation = tokenizer.encode(separator + choice + suffix, add_special_tokens=False)
            pairs.append((index, prefix["input_ids"][0], continuation, prefix.get("pixel_values")))
    scores: list[list[float]] = [[] for _ in range(len(dataset))]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            length = max(len(prefix) + len(cont) for _, prefix, cont, _ in chunk)
            input_ids = torch.full((len(chunk), length), tokenizer.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros_like(input_ids)
            targets = torch.full_like(input_ids, -100)
            for row, (_, prefix, cont, _) in enumerate(chunk):
                ids = list(prefix) + cont
                input_ids[row, : len(ids)] = torch.tensor(ids)
                attention_mask[row, : len(ids)] = 1
                targets[row, len(prefix) : len(ids)] = torch.tensor(cont)
            pixel_values = [torch.as_tensor(p) for *_, p in chunk if p is not None]
            inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
            if pixel_values:
                inputs["pixel_values"] = torch.cat(pixel_values).to(device)
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
    result = MultipleChoiceResult()
    for row, row_scores in zip(dataset, scores, strict=True):
        prediction = OPTION_LETTERS[max(range(len(row_scores)), key=row_scores.__getitem__)]
        result.predictions.append(prediction)
        result.correct.append(prediction == row["answer"])
        result.has_image.append(len(row["images"]) > 0)
        result.num_choices.append(len(row_scores))
        result.choice_scores.append(row_scores)
    return result


def _check_columns(dataset: datasets.Dataset) -> None:
    missing = {"prompt", "images", "choices", "answer"} - set(dataset.column_names)
    if missing:
        raise ValueError(
            f"The dataset lacks the column(s) {sorted(missing)}; use transformers_lavin.data.load_scienceqa."
        )


__all__ = ["ANSWER_PREFIX", "MultipleChoiceResult", "score_choice_texts"]
