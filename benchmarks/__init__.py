"""Benchmarks: LaVIN with MMA against LLaVA-1.5 with LoRA, and against the base model, on the same backbones.

Run `python -m benchmarks.run_all --help` from the repository root; see `benchmarks/README.md`.
"""

# First, before a benchmark imports PEFT (which imports bitsandbytes): no Hub kernels or telemetry unasked.
import transformers_lavin  # noqa: E402, F401
