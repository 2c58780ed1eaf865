"""`lavin-convert`: reference LaVIN adapter checkpoints to this package's format, and back.

    lavin-convert import --checkpoint sqa-llama-7b.pth --llama ./llama-7b-hf --clip ./clip-vit-large-patch14 \\
        --base_dir ./lavin-7b-base --adapter_dir ./lavin-7b-sqa [--temperature 10]
    lavin-convert import ... --merged_dir ./lavin-7b-merged-text --modality text
    lavin-convert export --adapter_dir ./my-mma-adapter --output ./my-adapter.pth
"""

from __future__ import annotations

import argparse
import sys

from ..cli_errors import add_debug_argument, user_errors
from ..cli_flags import UnderscoreArgumentParser
from .convert import convert_lavin_checkpoint
from .export import export_to_reference
from .reference_format import MAX_CHECKPOINT_BYTES


def build_parser() -> argparse.ArgumentParser:
    parser = UnderscoreArgumentParser(
        prog="lavin-convert",
        description="Convert LaVIN adapter checkpoints between the reference code and this format.",
    )
    add_debug_argument(parser)
    commands = parser.add_subparsers(dest="command", required=True)

    to_hf = commands.add_parser(
        "import", help="Reference .pth + LLaMA + CLIP (HF format) -> LaVIN base + MMA adapter."
    )
    to_hf.add_argument("--checkpoint", required=True, help="The reference adapter checkpoint (.pth).")
    to_hf.add_argument("--llama", required=True, help="LLaMA/Vicuna in HF format (LlamaForCausalLM dir + tokenizer).")
    to_hf.add_argument("--clip", required=True, help="CLIP ViT-L/14 in HF format (CLIPModel or CLIPVisionModel dir).")
    to_hf.add_argument("--base_dir", help="Where to write the LaVIN base model.")
    to_hf.add_argument("--adapter_dir", help="Where to write the MMA adapter.")
    to_hf.add_argument("--merged_dir", help="Write one merged model here instead (needs --modality).")
    to_hf.add_argument("--modality", choices=["image", "text"], help="The prompts a merged model serves.")
    to_hf.add_argument(
        "--adapter_type", choices=["attn", "block"], help="Expected LLM adapter variant (read if omitted)."
    )
    to_hf.add_argument(
        "--vision_adapter_type",
        choices=["normal", "router", "router_block", "none"],
        help="Expected CLIP adapter variant (read from the tensors if omitted).",
    )
    to_hf.add_argument("--temperature", type=float, help="Router temperature (10 for the 7B releases, 5 for 13B).")
    to_hf.add_argument("--scale", type=float, help="Adapter scale (default: the checkpoint's, else 1).")
    to_hf.add_argument("--max_shard_size", default="5GB", help="Largest safetensors shard (default 5GB).")
    to_hf.add_argument(
        "--max_checkpoint_bytes",
        type=int,
        default=MAX_CHECKPOINT_BYTES,
        help=f"Refuse a .pth that expands to more bytes when loaded (default {MAX_CHECKPOINT_BYTES:,}).",
    )
    to_hf.add_argument("--overwrite", action="store_true", help="Replace existing outputs.")

    to_reference = commands.add_parser("export", help="MMA adapter directory -> reference .pth.")
    to_reference.add_argument("--adapter_dir", required=True, help="An MMA adapter directory (save_pretrained).")
    to_reference.add_argument("--output", required=True, help="The .pth to write.")
    to_reference.add_argument("--overwrite", action="store_true", help="Replace an existing file.")
    return parser


@user_errors("lavin-convert")
def main(argv: list[str]) -> int:
    """Entry point of `lavin-convert`; bad input ends in one `lavin-convert: error: ...` line and exit status 1."""
    args = build_parser().parse_args(argv)
    if args.command == "import":
        result = convert_lavin_checkpoint(
            args.checkpoint,
            args.llama,
            args.clip,
            base_dir=args.base_dir,
            adapter_dir=args.adapter_dir,
            merged_dir=args.merged_dir,
            modality=args.modality,
            adapter_type=args.adapter_type,
            vision_adapter_type=args.vision_adapter_type,
            scale=args.scale,
            temperature=args.temperature,
            overwrite=args.overwrite,
            max_shard_size=args.max_shard_size,
            max_uncompressed_bytes=args.max_checkpoint_bytes,
        )
        config = result.mma_config
        print(
            f"Converted: adapter_type={config.adapter_type}, vision_adapter_type={config.vision_adapter_type}, "
            f"hidden={config.adapter_hidden_size}, temperature={config.temperature:g}, scale={config.scale:g}"
        )
        if result.merged_dir is not None:
            print(f"Merged model for {result.merged_modality} prompts: {result.merged_dir}")
        else:
            print(f"Base model: {result.base_dir}\nMMA adapter: {result.adapter_dir}")
    else:
        flags = export_to_reference(args.adapter_dir, args.output, overwrite=args.overwrite)
        print(f"Wrote {args.output}. Evaluate it with the reference's eval.py using: {flags}")
    return 0


__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
