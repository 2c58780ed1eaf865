"""LaVIN's multimodal chatbot setup on a tiny model, offline: train on LLaVA-Instruct-style conversations mixed with
text-only instructions, then chat through `pipeline("image-text-to-text")`.

    python examples/chat_lavin.py --output_dir /tmp/lavin-chat

1. builds the synthetic conversation set (`transformers_lavin.data.synthetic_chat`) and a tiny LaVIN with a tokenizer
   trained on its words;
2. pretrains the tiny LLM on the conversations as text, each picture described in words where the image goes: the
   stand-in for LaVIN's pretrained LLaMA (docs/training.md says why MMA needs one);
3. asks held-out image questions through the pipeline and counts answers that name the right colour or shape;
4. trains MMA with `SFTTrainer` on the mixed set, with the chat template and assistant-only loss;
5. asks again, and chats once with a system message and two turns.
"""

from __future__ import annotations

import argparse
import time

import torch

import transformers_lavin  # noqa: F401  # isort: skip  (before TRL imports bitsandbytes: no Hub kernel fetched)
from transformers import pipeline
from trl import SFTConfig

from transformers_lavin.data.synthetic_chat import chat_corpus, synthetic_chat_dataset
from transformers_lavin.testing_utils import build_tiny_lavin, build_word_tokenizer, tiny_lavin_config
from transformers_lavin.training import MMAArguments, build_trainer


def build_model(seed: int):
    tokenizer = build_word_tokenizer(chat_corpus(), vocab_size=600)
    config = tiny_lavin_config(text_hidden_size=64, text_layers=2, vision_hidden_size=64, vision_layers=4,
                               image_size=32, patch_size=4, vision_feature_layers=[1, 2, 3, 4],
                               projector_hidden_size=128, tokenizer=tokenizer, initializer_range=0.2)  # fmt: skip
    return build_tiny_lavin(seed=seed, config=config, tokenizer=tokenizer)


def pretrain_language_model(model, processor, rows, steps: int, batch_size: int, seed: int) -> None:
    """Train the LLM alone on the rendered conversations, the picture written as words in the image slot."""
    tokenizer, config = processor.tokenizer, model.config
    parameters = [*model.model.language_model.parameters(), *model.lm_head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    texts = [processor.apply_chat_template(m, tokenize=False) for m in rows["messages"]]
    slots = [f"{c} {s}" if c else config.no_image_text for c, s in zip(rows["color"], rows["shape"], strict=True)]
    sequences = [
        [tokenizer.bos_token_id, *tokenizer.encode(config.image_prefix + slot + text[len(tokenizer.bos_token) :])]
        for slot, text in zip(slots, texts, strict=True)
    ]
    model.train()
    for _ in range(steps):
        batch = [sequences[i] for i in torch.randint(len(sequences), (batch_size,), generator=generator).tolist()]
        length = max(map(len, batch))
        input_ids = torch.full((len(batch), length), tokenizer.pad_token_id)
        labels = torch.full_like(input_ids, -100)
        for i, ids in enumerate(batch):
            input_ids[i, : len(ids)] = labels[i, : len(ids)] = torch.tensor(ids)
        loss = model(input_ids=input_ids, attention_mask=(labels != -100).long(), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def image_question_accuracy(model, processor, rows) -> float:
    """Share of held-out image questions answered (greedy, through the pipeline) with the right colour or shape."""
    chat = pipeline("image-text-to-text", model=model, processor=processor)
    correct = 0
    for row in rows:
        question = row["messages"][0] if row["messages"][0]["role"] == "user" else row["messages"][1]
        messages = [{"role": "user", "content": [{"type": "image", "image": row["images"][0]},
                                                  {"type": "text", "text": question["content"]}]}]  # fmt: skip
        answer = chat(text=messages, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
        correct += row[row["kind"]] in answer.split(" ") or f"{row[row['kind']]}." in answer
    return correct / len(rows)


def run(output_dir: str, num_train: int = 2000, pretrain_steps: int = 300, steps: int = 300, seed: int = 0) -> dict:
    started = time.perf_counter()
    torch.manual_seed(seed)
    train = synthetic_chat_dataset(num_train, seed=seed)
    test = synthetic_chat_dataset(400, image_fraction=1.0, seed=seed + 1).select(range(64))
    model, processor = build_model(seed)
    pretrain_language_model(model, processor, train, pretrain_steps, batch_size=16, seed=seed)
    before = image_question_accuracy(model, processor, test)
    args = SFTConfig(output_dir=output_dir, max_steps=steps, per_device_train_batch_size=16, learning_rate=1e-2,
                     lr_scheduler_type="cosine", warmup_steps=0.05, logging_steps=50, save_strategy="no",
                     report_to=[], seed=seed, bf16=False, activation_checkpointing=False, max_length=None,
                     use_cpu=True, disable_tqdm=True, assistant_only_loss=True)  # fmt: skip
    trainer = build_trainer(model, processor, train.select_columns(["messages", "images"]), args,
                            MMAArguments(mma_dropout=0.0))  # fmt: skip
    trainer.train()
    model = trainer.model.eval()
    after = image_question_accuracy(model, processor, test)
    chat = pipeline("image-text-to-text", model=model, processor=processor)
    conversation = [
        {"role": "system", "content": "You are a helpful assistant. Answer in one short sentence."},
        {"role": "user", "content": [{"type": "image", "image": test[0]["images"][0]},
                                     {"type": "text", "text": "What shape is in the picture?"}]},
    ]  # fmt: skip
    first = chat(text=conversation, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    conversation += [{"role": "assistant", "content": first},
                     {"role": "user", "content": "What color is the shape in the picture?"}]  # fmt: skip
    second = chat(text=conversation, max_new_tokens=6, do_sample=False, return_full_text=False)[0]["generated_text"]
    return {
        "image_accuracy_before": before,
        "image_accuracy_after": after,
        "chance": 0.25,
        "num_test": len(test),
        "chat": [first, second],
        "picture": f"{test[0]['color']} {test[0]['shape']}",
        "wall_time_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", "--output-dir", default="lavin-chat")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--pretrain_steps", "--pretrain-steps", type=int, default=300)
    args = parser.parse_args()
    result = run(args.output_dir, pretrain_steps=args.pretrain_steps, steps=args.steps)
    print(f"Image questions answered right: {result['image_accuracy_before']:.1%} before, "
          f"{result['image_accuracy_after']:.1%} after MMA (chance {result['chance']:.0%}, n={result['num_test']})")  # fmt: skip
    print(f"Chat about a {result['picture']}: {result['chat']}; {result['wall_time_s']} s")


if __name__ == "__main__":
    main()
