"""The documented code that cannot run in the test suite, each with its reason. Everything else in README.md and
docs/*.md runs (tests/docs/test_documented_blocks.py); a test also checks that every entry here still matches the
docs, so this list cannot outlive what it excuses.

Keys: (document, a piece of text of the block) for a whole block, (document, the start of a command) for one
command of a shell block.
"""

BLOCKS = {
    ("README.md", "pip install -e"): "creates a virtual environment and installs from the package registry, then runs "
    "the 2-minute demo and the whole suite: it is what CI runs (.ci/run), and tests/training/test_demo.py runs the demo",
    (
        "docs/dependencies.md",
        ".ci/try_upstream",
    ): "builds a virtual environment from the package registry and runs the "
    "whole suite against another upstream release",
    (
        "docs/hub.md",
        "push_model_to_hub(model",
    ): "uploads to the Hugging Face Hub; tests/hub/test_hub_roundtrip.py runs the same calls against a local fake Hub",
    ("docs/performance.md", "gpu_check.sh"): "needs a CUDA GPU (about 8 minutes on one H200)",
    ("README.md", "v1/chat/completions"): "a client of the server the block above starts (the runner checks that it "
    "serves, then stops it); tests/serving/test_lavin_serve.py sends this request to a served LaVIN, merged LaVIN "
    "and adapter",
    ("docs/training.md", "lavin-demo --output_dir"): "trains for about 2 minutes on 2 CPU cores; "
    "tests/training/test_demo.py runs the same program at the same size",
    (
        "docs/training.md",
        "peft_config=transformers_lavin.MMAConfig()",
    ): "two lines to paste into TRL's own script, not "
    "a program; tests/training/test_trl_native.py applies them to the installed TRL script and trains with it",
    ("docs/training.md", "--num_train_epochs 20"): "LaVIN-7B's 20-epoch recipe in bf16: a GPU run",
    ("docs/training.md", "deepspeed_zero2.yaml"): "needs GPUs and DeepSpeed (not a dependency; see the section)",
}

COMMANDS = {
    ("docs/chat_demo.md", "pip install"): "installs from the package registry; the test environment has the extra",
}
