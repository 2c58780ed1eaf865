"""ScienceQA prompt formats used by LaVIN.

A format name is `"{INPUT}-{OUTPUT}"`. The input part says which fields the prompt shows and in what order, the
output part what the answer text contains. Letters: Q question, C context, M multiple-choice options, A answer,
L lecture, E solution (explanation). LaVIN trains and evaluates with `QCM-ALE`.

The strings match the training examples of the reference implementation (`util/base_prompt.py` in
`luogen1996/LaVIN`), quirks included, because released checkpoints were trained on exactly these strings:

- the prompt ends with `"Response:"` and the reference trains on `prompt + answer` with no separator between them;
- output formats `AL` and `AE` put the *solution* and the *lecture* after `BECAUSE:` respectively (the letters look
  swapped, but that is what the reference writes);
- double spaces are replaced in a single pass (`"   "` becomes `"  "`), separately in the prompt and the answer;
- an answer that ends in `"BECAUSE:"` (empty lecture and solution) keeps it: the reference tries to drop it but
  assigns the result to an unused variable.
"""

from collections.abc import Mapping, Sequence
from typing import Any

OPTION_LETTERS = ("A", "B", "C", "D", "E")

# One entry per prompt line, in order; the prompt is these lines followed by a "Response:" line.
INPUT_FORMATS: dict[str, tuple[str, ...]] = {
    "CQM": ("Context: {context}", "Question: {question}", "Options: {options}"),
    "QCM": ("Question: {question}", "Context: {context}", "Options: {options}"),
    # The variants below show the lecture and/or solution in the prompt (upper-bound experiments in ScienceQA).
    "QCML": ("Question: {question}", "Context: {context}", "Options: {options}", "BECAUSE: {lecture}"),
    "QCME": ("Question: {question}", "Context: {context}", "Options: {options}", "BECAUSE: {solution}"),
    "QCMLE": ("Question: {question}", "Context: {context}", "Options: {options}", "BECAUSE: {lecture} {solution}"),
    "QCLM": ("Question: {question}", "Context: {context}", "BECAUSE: {lecture}", "Options: {options}"),
    "QCEM": ("Question: {question}", "Context: {context}", "BECAUSE: {solution}", "Options: {options}"),
    "QCLEM": ("Question: {question}", "Context: {context}", "BECAUSE: {lecture} {solution}", "Options: {options}"),
}

OUTPUT_FORMATS: dict[str, str] = {
    "A": "The answer is {answer}.",
    "AL": "The answer is {answer}. BECAUSE: {solution}",  # sic: the reference's "L" here is the solution
    "AE": "The answer is {answer}. BECAUSE: {lecture}",  # sic: and its "E" is the lecture
    "ALE": "The answer is {answer}. BECAUSE: {lecture} {solution}",
    "AEL": "The answer is {answer}. BECAUSE: {solution} {lecture}",
    "LA": "{lecture} The answer is {answer}.",
    "EA": "{solution} The answer is {answer}.",
    "LEA": "{lecture} {solution} The answer is {answer}.",
    "ELA": "{solution} {lecture} The answer is {answer}.",
}

PROMPT_FORMATS: tuple[str, ...] = tuple(f"{i}-{o}" for i in INPUT_FORMATS for o in OUTPUT_FORMATS)
DEFAULT_PROMPT_FORMAT = "QCM-ALE"


def _collapse_spaces(text: str) -> str:
    # A single replace pass, as in the reference: three spaces become two, not one.
    return text.replace("  ", " ").strip()


def _escape_newlines(text: str) -> str:
    # The reference writes newlines of lectures and solutions as the two characters "\n".
    return text.replace("\n", "\\n")


def split_prompt_format(prompt_format: str) -> tuple[str, str]:
    """
    Checks a prompt format name and splits it into its input and output parts.

    Args:
        prompt_format (`str`):
            A format such as `"QCM-ALE"`.

    Returns:
        `tuple[str, str]`: the input part (`"QCM"`) and the output part (`"ALE"`).

    Raises:
        `ValueError`: if the format is not one of [`PROMPT_FORMATS`].
    """
    input_format, _, output_format = str(prompt_format).partition("-")
    if input_format not in INPUT_FORMATS or output_format not in OUTPUT_FORMATS:
        raise ValueError(
            f"Unknown ScienceQA prompt format {prompt_format!r}. A format is '<input>-<output>' with input one of "
            f"{', '.join(INPUT_FORMATS)} and output one of {', '.join(OUTPUT_FORMATS)}; valid formats: "
            f"{', '.join(PROMPT_FORMATS)}."
        )
    return input_format, output_format


def format_context(problem: Mapping[str, Any], use_caption: bool = False) -> str:
    """
    The context line of a problem: its hint, followed by its image caption when `use_caption` is set, or `"N/A"`.

    Args:
        problem (`Mapping[str, Any]`):
            A ScienceQA problem with a `"hint"` and, if `use_caption`, an optional `"caption"`.
        use_caption (`bool`, *optional*, defaults to `False`):
            Whether to append the caption to the hint.
    """
    caption = (problem.get("caption") or "") if use_caption else ""
    context = " ".join([problem.get("hint") or "", caption]).strip()
    return context or "N/A"


def format_options(choices: Sequence[str]) -> str:
    """
    The options line: `"(A) first (B) second ..."`.

    Args:
        choices (`Sequence[str]`):
            The answer choices, at most 5 (ScienceQA's maximum, letters A to E).
    """
    if len(choices) > len(OPTION_LETTERS):
        raise ValueError(
            f"A ScienceQA problem has at most {len(OPTION_LETTERS)} choices (A-E); got {len(choices)}: {list(choices)}."
        )
    return " ".join(f"({letter}) {choice}" for letter, choice in zip(OPTION_LETTERS, choices, strict=False))


def answer_letter(problem: Mapping[str, Any]) -> str:
    """
    The letter (`"A"`, `"B"`, ...) of a problem's answer, from its integer `"answer"` index into `"choices"`.
    """
    answer, choices = problem["answer"], problem["choices"]
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < min(len(choices), 5):
        raise ValueError(
            f"A ScienceQA 'answer' must be an integer index into the {len(choices)} choices; got {answer!r}."
        )
    return OPTION_LETTERS[answer]


def build_prompt(
    problem: Mapping[str, Any], prompt_format: str = DEFAULT_PROMPT_FORMAT, use_caption: bool = False
) -> tuple[str, str]:
    """
    Builds the prompt and answer text of one ScienceQA problem, as LaVIN's reference training code does.

    The reference trains on `prompt + answer` (between BOS and EOS, no separator) and computes the loss on the
    answer only; at evaluation it generates from the prompt and reads the letter from `"The answer is X."`.

    Args:
        problem (`Mapping[str, Any]`):
            A problem from ScienceQA's `problems.json`: `question`, `hint`, `choices`, `answer` (an integer index),
            `lecture`, `solution`, and optionally `caption` (used with `use_caption`).
        prompt_format (`str`, *optional*, defaults to `"QCM-ALE"`):
            One of [`PROMPT_FORMATS`].
        use_caption (`bool`, *optional*, defaults to `False`):
            Whether to append the image caption to the context.

    Returns:
        `tuple[str, str]`: the prompt text and the answer text.

    Example:
    ```python
    >>> problem = {"question": "Which is a mammal?", "hint": "", "choices": ["cat", "trout"], "answer": 0,
    ...            "lecture": "Mammals have fur.", "solution": "A cat is a mammal."}
    >>> build_prompt(problem, "QCM-A")
    ('Question: Which is a mammal?\\nContext: N/A\\nOptions: (A) cat (B) trout\\nResponse:', 'The answer is A.')
    ```
    """
    input_format, output_format = split_prompt_format(prompt_format)
    fields = {
        "question": problem["question"],
        "context": format_context(problem, use_caption),
        "options": format_options(problem["choices"]),
        "answer": answer_letter(problem),
        "lecture": _escape_newlines(problem.get("lecture") or ""),
        "solution": _escape_newlines(problem.get("solution") or ""),
    }
    lines = [line.format(**fields) for line in INPUT_FORMATS[input_format]]
    prompt = _collapse_spaces("\n".join([*lines, "Response:"]))
    answer = _collapse_spaces(OUTPUT_FORMATS[output_format].format(**fields))
    return prompt, answer
