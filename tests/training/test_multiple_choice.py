"""Option-text likelihood scoring against an independent, one-sequence-at-a-time computation."""

import torch

from transformers_lavin.data import load_scienceqa, write_synthetic_scienceqa
from transformers_lavin.evaluation.multiple_choice import score_choice_texts
from transformers_lavin.testing_utils import build_tiny_lavin


def test_choice_scores_match_unbatched_log_likelihoods(tmp_path):
    root = write_synthetic_scienceqa(tmp_path, num_train=0, num_val=0, num_test=6, seed=2)
    dataset = load_scienceqa(root, "test", prompt_format="QCM-A")
    assert {len(images) for images in dataset["images"]} == {0, 1}  # image and text-only rows, batched together
    model, processor = build_tiny_lavin(seed=0)
    result = score_choice_texts(model, processor, dataset, batch_size=5)  # batches cut across questions

    tokenizer = processor.tokenizer
    for row, scores in zip(dataset, result.choice_scores, strict=True):
        # The option is scored with its leading space, tokenized as in training ("The answer is" + " circle.").
        prompt = tokenizer.bos_token + row["prompt"][0]["content"][-1]["text"] + "The answer is"
        expected = []
        for choice in row["choices"]:
            inputs = processor(images=[list(row["images"])], text=[prompt], return_tensors="pt")
            continuation = tokenizer.encode(" " + choice + ".", add_special_tokens=False)
            ids = torch.cat([inputs["input_ids"], torch.tensor([continuation])], dim=1)
            with torch.no_grad():
                logits = model(input_ids=ids, pixel_values=inputs.get("pixel_values")).logits[0]
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            start = inputs["input_ids"].shape[1]
            expected.append(sum(float(log_probs[start - 1 + i, token]) for i, token in enumerate(continuation)))
        torch.testing.assert_close(torch.tensor(scores), torch.tensor(expected), rtol=1e-4, atol=1e-4)

    best = [max(range(len(s)), key=s.__getitem__) for s in result.choice_scores]
    assert result.predictions == ["ABCDE"[i] for i in best]
    assert result.correct == [p == a for p, a in zip(result.predictions, dataset["answer"], strict=True)]
    image_choices = [len(c) for c, images in zip(dataset["choices"], dataset["images"], strict=True) if images]
    assert result.chance(True) == sum(1 / k for k in image_choices) / len(image_choices)


def test_subword_options_are_tokenized_as_in_training():
    from transformers_lavin.testing_utils import build_word_tokenizer

    tokenizer = build_word_tokenizer(["The answer is circle.", "The answer is square."] * 50, vocab_size=300)
    joint = tokenizer.encode("The answer is circle.", add_special_tokens=False)
    split = tokenizer.encode("The answer is", add_special_tokens=False) + tokenizer.encode(
        " circle.", add_special_tokens=False
    )
    assert joint == split and tokenizer.convert_ids_to_tokens(joint)[3] == "Ġcircle"
