import torch
from peft import get_peft_model

from transformers_lavin import MMAConfig
from transformers_lavin.mma import MMALayer
from transformers_lavin.mma.routing import ROUTING_KWARG


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


def logits(model, batch, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch, **kwargs).logits


class DecoderSpy:
    """Records the `modality_ids` each real forward of the decoder receives (before MMA's router takes them)."""

    def __init__(self, model):
        self.calls = []
        decoder = model.get_base_model().get_decoder()
        self.handle = decoder.register_forward_pre_hook(self, with_kwargs=True, prepend=True)

    def __call__(self, module, args, kwargs):
        if ROUTING_KWARG not in kwargs:  # not MMA's own routing pass
            self.calls.append(kwargs.get("modality_ids"))


def train_on_one_batch(model, batch: dict, labels: torch.Tensor, steps: int = 6) -> tuple[list[float], set[str]]:
    """
    `steps` AdamW steps (lr 1e-2) on `batch`; checks that every frozen parameter is unchanged to the bit. Returns the
    losses and the names of the trainable parameters that changed.
    """
    frozen = {name: p.detach().clone() for name, p in model.named_parameters() if not p.requires_grad}
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    after = dict(model.named_parameters())
    assert all(torch.equal(after[name], value) for name, value in frozen.items())
    return losses, {name for name, value in before.items() if not torch.equal(after[name], value)}


def loss_and_gradients(model, batch: dict, labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One training forward and backward: the loss and every trainable parameter's gradient."""
    model.train()
    loss = model(**batch, labels=labels).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


def assert_same_gradients(grads: dict[str, torch.Tensor], checkpointed: dict[str, torch.Tensor]) -> None:
    """Gradients with activation checkpointing equal those without, and the routers get some."""
    assert grads.keys() == checkpointed.keys()
    assert any(".mma_router." in name and grad.abs().sum() > 0 for name, grad in checkpointed.items())
    for name, grad in grads.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-4, atol=1e-6, msg=name)
