"""Runs the FSDP2 launcher (transformers_lavin.scripts.train_fsdp) with test hooks, for the subprocess tests.

- `LAVIN_TEST_KILL_AT_STEP=k`: every rank SIGKILLs itself at the end of optimizer step k (after its checkpoint).
- `LAVIN_TEST_WEIGHTS_DIR=dir`: after the last step each rank gathers the full trainable tensors and writes them to
  `dir/rank{i}.safetensors` (metadata: world size, whether the model is sharded, the local and full sizes of the
  frozen weights); rank 0 also writes the logits of the first training rows, in eval mode, to `dir/logits.safetensors`.
"""

import os
import signal
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import transformers_lavin  # noqa: F401  # isort: skip  (first: no Hub kernel or telemetry requests)
from safetensors.torch import save_file
from torch.distributed.fsdp import FSDPModule
from transformers import AutoProcessor
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from transformers_lavin.data import load_scienceqa
from transformers_lavin.distributed import gather_adapter_state_dict
from transformers_lavin.scripts.train_fsdp import parse_args, run

LOGIT_ROWS = 4


def probe_batch(output_dir: Path, prompt_format: str) -> dict:
    """The first training rows (image and text-only), as the reload test builds them too."""
    processor = AutoProcessor.from_pretrained(output_dir / "base_model")
    rows = load_scienceqa(output_dir / "synthetic_scienceqa", "train", prompt_format=prompt_format)
    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    batch = collator([rows[i] for i in range(LOGIT_ROWS)])
    batch.pop("labels")
    return batch


def write_weights(directory: Path, output_dir: Path, prompt_format: str, model) -> None:
    rank = int(os.environ.get("RANK", "0"))
    tensors = {k: v.contiguous() for k, v in gather_adapter_state_dict(model, to_all_ranks=True).items()}
    frozen = [p for p in model.parameters() if not p.requires_grad]
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in frozen)
    metadata = {
        "world_size": os.environ.get("WORLD_SIZE", "1"),
        "sharded": str(isinstance(model, FSDPModule)),
        "frozen_local_numel": str(local),
        "frozen_numel": str(sum(p.numel() for p in frozen)),
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / f"rank{rank}.safetensors", metadata=metadata)
    model.eval()
    with torch.no_grad():  # every rank runs the forward: FSDP gathers each layer from all of them
        logits = model(**probe_batch(output_dir, prompt_format)).logits
    if rank == 0:
        save_file({"logits": logits.contiguous()}, directory / "logits.safetensors")


if __name__ == "__main__":
    script_args, args, model_args, mma_args = parse_args(sys.argv[1:])
    kill_at = int(os.environ.get("LAVIN_TEST_KILL_AT_STEP", "0"))
    weights_dir = os.environ.get("LAVIN_TEST_WEIGHTS_DIR")

    def on_step_end(step, model):
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if weights_dir and step == args.max_steps:
            write_weights(Path(weights_dir), Path(args.output_dir), script_args.prompt_format, model)

    try:
        run(script_args, args, model_args, mma_args, on_step_end=on_step_end)
    finally:  # as train_fsdp's main does: exiting with gloo's threads alive can abort a rank ("terminate called ...")
        if dist.is_initialized():
            dist.destroy_process_group()
