"""The chatbot example end to end: after MMA training, the tiny LaVIN answers image questions above chance."""

import importlib.util
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chat_lavin.py"


# Measured on this 2-core machine, idle: image questions 21.9% -> 64.1% (chance 25%, n=64), about 90 s.
def test_chat_example_answers_image_questions_above_chance_after_training(tmp_path):
    spec = importlib.util.spec_from_file_location("chat_lavin", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.run(str(tmp_path), num_train=2000, pretrain_steps=300, steps=300)
    print(
        f"chat example: image questions {result['image_accuracy_before']:.1%} before -> "
        f"{result['image_accuracy_after']:.1%} after (chance {result['chance']:.0%}, n={result['num_test']}), "
        f"{result['wall_time_s']} s; chat about a {result['picture']}: {result['chat']}"
    )
    assert result["image_accuracy_after"] > result["chance"] + 0.15
    assert result["image_accuracy_after"] > result["image_accuracy_before"]
