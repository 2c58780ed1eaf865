"""transformers-lavin: LaVIN and Mixture-of-Modality Adaptation (MMA) for transformers, PEFT and TRL."""

__version__ = "0.1.0"
