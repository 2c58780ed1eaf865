import torch
from peft import get_peft_model

from transformers_lavin import MMAConfig
from transformers_lavin.mma import MMALayer


def randomize_adapters(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> None:
    """Give every trainable tensor (adapters, projector, modality embedding) random non-zero values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator) * std)


def mma_model(base, seed: int = 0, randomize: bool = True, **config_kwargs):
    config_kwargs.setdefault("dropout", 0.0)
    model = get_peft_model(base, MMAConfig(**config_kwargs))
    if randomize:
        randomize_adapters(model, seed)
    return model.eval()


def llm_layers(model) -> list[MMALayer]:
    return [m for m in model.modules() if isinstance(m, MMALayer) and m.routing_key is not None]
