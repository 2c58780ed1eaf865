"""Fine-tune LaVIN's MMA adapters with TRL. The same as the `lavin-train` console script; see docs/training.md.

    python examples/sft_lavin.py --tiny --synthetic --output_dir /tmp/lavin-tiny --max_steps 20 \
        --bf16 false --gradient_checkpointing false
"""

from transformers_lavin.scripts.sft import main

if __name__ == "__main__":
    main()
