"""An independent, tiny implementation of the reference LaVIN forward pass (`luogen1996/LaVIN`), for parity tests.

Written from the reference's math, in its own layouts, sharing no code with `transformers_lavin`:
- OpenAI-CLIP vision transformer in (L, N, D) layout with `nn.MultiheadAttention` (fused in_proj), QuickGELU MLP,
  `ln_pre`, and the [CLS] token taken after every 4th block (no `ln_post`, no projection);
- the Meta LLaMA block: RMSNorm, RoPE on adjacent pairs as complex numbers, SwiGLU, no biases;
- adapters as kernel-1 `nn.Conv1d` on (B, D, L) tensors; the router reads `x[:, 0]`. In CLIP's (L, N, D) layout that
  is "every token of the first image", which couples the images of a batch, as in the reference;
- the projector `adapter_proj` (Linear, SiLU, Linear), the modality token `adapter_modality_embedding` at position
  0 hidden by `mask[:, :, 1:, 0] = -inf`, the "Image: " / "Image: N/A" prefixes after BOS, and cross-entropy with
  `ignore_index=0` on `output[:, :-1]` vs `labels[:, 1:]`.
Parameter names equal the reference's, so `{n: p for n, p in named_parameters() if "adapter" in n}` is a reference
adapter checkpoint. The reference's fp16 casts (CUDA autocast, `.half()` routing weights) are left out: this computes
the same math in fp32.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ReferenceArgs:
    dim: int = 32
    n_layers: int = 2
    n_heads: int = 4
    ffn_hidden: int = 64
    vocab_size: int = 260
    norm_eps: float = 1e-6
    hidden_proj: int = 16
    adapter_dim: int = 8
    groups: int = 2
    scale: float = 1.0
    temperature: float = 10.0
    adapter_type: str = "attn"  # attn | block
    vision_width: int = 32
    vision_layers: int = 8
    vision_heads: int = 4
    image_size: int = 30
    patch_size: int = 6
    vision_output_dim: int = 16
    visual_adapter_type: str = "router"  # normal | router | router_block


class RouterAdapter(nn.Module):
    """RepAdapter_Router: x + s * (w0 * conv_B(h) + w1 * conv_D(h)), h = conv_A(x), w = softmax(W x[:, 0] / t)."""

    def __init__(self, width: int, hidden: int, groups: int, scale: float, temperature: float):
        super().__init__()
        self.conv_A = nn.Conv1d(width, hidden, 1, groups=1, bias=True)
        self.conv_B = nn.Conv1d(hidden, width, 1, groups=groups, bias=True)
        self.conv_D = nn.Conv1d(hidden, width, 1, groups=groups, bias=True)
        self.expert_weights = nn.Linear(width, 2)
        self.scale, self.temperature = scale, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.expert_weights(x[:, 0]) / self.temperature, dim=-1)
        channels_first = x.transpose(1, 2)
        h = self.conv_A(channels_first)
        mixed = (
            self.conv_B(h) * self.scale * weights[:, 0, None, None]
            + self.conv_D(h) * self.scale * weights[:, 1, None, None]
        )
        return (mixed + channels_first).transpose(1, 2)


class PlainAdapter(nn.Module):
    """The reference's RepAdapter ('normal'): returns conv_B(conv_A(x)), with no identity path and no scale."""

    def __init__(self, width: int, hidden: int, groups: int):
        super().__init__()
        self.conv_A = nn.Conv1d(width, hidden, 1, groups=1, bias=True)
        self.conv_B = nn.Conv1d(hidden, width, 1, groups=groups, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_B(self.conv_A(x.transpose(1, 2))).transpose(1, 2)


# ---------------------------------------------------------------------------------------------------- CLIP (LND)
class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, args: ReferenceArgs):
        super().__init__()
        width = args.vision_width
        self.attn = nn.MultiheadAttention(width, args.vision_heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, width * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(width * 4, width))]
            )
        )
        self.ln_2 = nn.LayerNorm(width)
        kind = args.visual_adapter_type
        if kind == "normal":
            self.adapter_attn = PlainAdapter(width, args.adapter_dim, args.groups)
        else:
            self.adapter_attn = RouterAdapter(width, args.adapter_dim, args.groups, args.scale, args.temperature)
        if kind == "router_block":
            self.adapter_mlp = RouterAdapter(width, args.adapter_dim, args.groups, args.scale, args.temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (L, N, D)
        a = self.adapter_attn(self.ln_1(x))
        x = x + self.attn(a, a, a, need_weights=False)[0]
        m = self.ln_2(x)
        if hasattr(self, "adapter_mlp"):
            m = self.adapter_mlp(m)
        return x + self.mlp(m)


class VisionTransformer(nn.Module):
    def __init__(self, args: ReferenceArgs):
        super().__init__()
        width, grid = args.vision_width, args.image_size // args.patch_size
        self.conv1 = nn.Conv2d(3, width, kernel_size=args.patch_size, stride=args.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(ResidualAttentionBlock(args) for _ in range(args.vision_layers))
        self.ln_post = nn.LayerNorm(width)  # unused by LaVIN, present in CLIP
        self.proj = nn.Parameter(torch.zeros(width, args.vision_output_dim))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.conv1(images).flatten(2).transpose(1, 2)  # (N, grid^2, D)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        x = x.transpose(0, 1)  # (L, N, D): the layout whose x[:, 0] couples a batch's images
        features = []
        for index, block in enumerate(self.transformer.resblocks):
            x = block(x)
            if (index + 1) % 4 == 0:
                features.append(x[0])  # [CLS] of every image: (N, D)
        return torch.stack(features, dim=1)


# --------------------------------------------------------------------------------------------------------- LLaMA
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotary_factors(head_dim: int, length: int, theta: float = 10000.0) -> torch.Tensor:
    """e^(i * position * theta^(-2j / head_dim)) for positions 0..length-1 and pairs j: (length, head_dim / 2)."""
    inverse = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inverse)
    return torch.polar(torch.ones_like(angles), angles).to(torch.complex64)


def rotate_pairs(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """RoPE on adjacent pairs (2j, 2j+1) read as complex numbers; x: (B, L, H, head_dim)."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(pairs * factors[None, :, None, :]).flatten(3).type_as(x)


class Attention(nn.Module):
    def __init__(self, args: ReferenceArgs):
        super().__init__()
        self.n_heads, self.head_dim = args.n_heads, args.dim // args.n_heads
        self.wq = nn.Linear(args.dim, args.dim, bias=False)
        self.wk = nn.Linear(args.dim, args.dim, bias=False)
        self.wv = nn.Linear(args.dim, args.dim, bias=False)
        self.wo = nn.Linear(args.dim, args.dim, bias=False)

    def forward(self, x: torch.Tensor, factors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        shape = (batch, length, self.n_heads, self.head_dim)
        q = rotate_pairs(self.wq(x).view(shape), factors).transpose(1, 2)
        k = rotate_pairs(self.wk(x).view(shape), factors).transpose(1, 2)
        v = self.wv(x).view(shape).transpose(1, 2)
        scores = q @ k.transpose(2, 3) / math.sqrt(self.head_dim) + mask
        out = torch.softmax(scores.float(), dim=-1).type_as(q) @ v
        return self.wo(out.transpose(1, 2).reshape(batch, length, -1))


class FeedForward(nn.Module):
    def __init__(self, args: ReferenceArgs):
        super().__init__()
        self.w1 = nn.Linear(args.dim, args.ffn_hidden, bias=False)
        self.w2 = nn.Linear(args.ffn_hidden, args.dim, bias=False)
        self.w3 = nn.Linear(args.dim, args.ffn_hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, args: ReferenceArgs):
        super().__init__()
        self.attention = Attention(args)
        self.feed_forward = FeedForward(args)
        self.attention_norm = RMSNorm(args.dim, args.norm_eps)
        self.ffn_norm = RMSNorm(args.dim, args.norm_eps)
        adapter = (args.dim, args.adapter_dim, args.groups, args.scale, args.temperature)
        self.adapter_attn = RouterAdapter(*adapter)
        if args.adapter_type == "block":
            self.adapter_mlp = RouterAdapter(*adapter)

    def forward(self, x: torch.Tensor, factors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = x + self.attention(self.adapter_attn(self.attention_norm(x)), factors, mask)
        m = self.ffn_norm(h)
        if hasattr(self, "adapter_mlp"):
            m = self.adapter_mlp(m)
        return h + self.feed_forward(m)


class ProjectorMLP(nn.Module):
    """AdapterMLP: conv_B(silu(conv_A(x))), two nn.Linear despite the names."""

    def __init__(self, in_features: int, hidden: int, out_features: int):
        super().__init__()
        self.conv_A = nn.Linear(in_features, hidden)
        self.conv_B = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_B(F.silu(self.conv_A(x)))


class ReferenceLavin(nn.Module):
    def __init__(self, args: ReferenceArgs):
        super().__init__()
        self.args = args
        self.tok_embeddings = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(TransformerBlock(args) for _ in range(args.n_layers))
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.output = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.backbone = nn.Module()
        self.backbone.visual = VisionTransformer(args)
        self.adapter_proj = ProjectorMLP(args.vision_width, args.hidden_proj, args.dim)
        self.adapter_modality_embedding = nn.Embedding(2, args.dim)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The reference's checkpoint content: every parameter whose name contains 'adapter'."""
        return {name: p.detach().clone() for name, p in self.named_parameters() if "adapter" in name}

    def forward(
        self,
        examples: torch.LongTensor,
        labels: torch.LongTensor,
        images: torch.Tensor,
        prefix_img: torch.LongTensor,
        prefix_nonimg: torch.LongTensor,
        img_indicators: torch.LongTensor,
        per_image_vision: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Loss and logits (including position 0, the modality token), as the reference's training forward.
        `per_image_vision=True` runs CLIP on one image at a time, removing the batch coupling of its routers.
        """
        batch, length = examples.shape
        if per_image_vision:
            image_embeds = torch.cat([self.backbone.visual(image[None]) for image in images])
        else:
            image_embeds = self.backbone.visual(images)
        image_embeds = self.adapter_proj(image_embeds)
        tokens = self.tok_embeddings(examples)
        rows, row_labels = [], []
        for i in range(batch):
            if img_indicators[i] > 0:
                inserted = torch.cat([self.tok_embeddings(prefix_img), image_embeds[i]])
            else:
                inserted = self.tok_embeddings(prefix_nonimg)
            rows.append(torch.cat([tokens[i, :1], inserted, tokens[i, 1:]])[:length])
            blank = torch.zeros(inserted.shape[0], dtype=labels.dtype)
            row_labels.append(torch.cat([labels[i, :1], blank, labels[i, 1:]])[:length])
        modality = self.adapter_modality_embedding(img_indicators)[:, None]
        h = torch.cat([modality, torch.stack(rows)], dim=1)[:, :length]
        targets = torch.cat([torch.zeros(batch, 1, dtype=labels.dtype), torch.stack(row_labels)], dim=1)[:, :length]

        mask = torch.full((length, length), float("-inf")).triu(1)[None, None].clone()
        mask[:, :, 1:, 0] = float("-inf")  # nothing attends to the modality token
        factors = rotary_factors(self.args.dim // self.args.n_heads, length)
        for layer in self.layers:
            h = layer(h, factors, mask)
        logits = self.output(self.norm(h))
        loss = F.cross_entropy(
            logits[:, :-1].reshape(-1, self.args.vocab_size), targets[:, 1:].reshape(-1), ignore_index=0
        )
        return loss, logits


# ---------------------------------------------------------------------------------------------- initialisation
@torch.no_grad()
def randomize(model: ReferenceLavin, seed: int) -> ReferenceLavin:
    """Random non-zero weights everywhere (frozen parts and adapters), at scales that keep activations O(1)."""
    generator = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=generator)
        if name.endswith(("norm.weight", "ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight")):
            param.copy_(1.0 + 0.1 * noise)
        elif "expert_weights" in name:
            param.copy_(1.0 * noise)  # strong routers, so that routing visibly matters
        elif "modality_embedding" in name or "tok_embeddings" in name:
            param.copy_(noise)
        elif "conv_B" in name or "conv_D" in name:
            param.copy_(0.2 * noise)
        else:
            fan_in = param.shape[1] * (param.shape[2] if param.ndim > 2 else 1) if param.ndim > 1 else 10
            param.copy_(noise / math.sqrt(fan_in))
    return model.eval()


# ------------------------------------------------------------------------------------- frozen weights in HF format
def meta_to_hf_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """
    Reorder q/k rows from Meta's RoPE layout (adjacent pairs) to HF Llama's (first half / second half of each head):
    HF row j of a head is Meta row 2j, HF row j + head_dim/2 is Meta row 2j + 1.
    """
    head_dim = weight.shape[0] // n_heads
    order = torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])
    index = torch.cat([head * head_dim + order for head in range(n_heads)])
    return weight[index]


def llama_hf_state_dict(model: ReferenceLavin) -> dict[str, torch.Tensor]:
    """The frozen LLaMA of `model` as a transformers `LlamaForCausalLM` state dict."""
    n_heads = model.args.n_heads
    state = {
        "model.embed_tokens.weight": model.tok_embeddings.weight,
        "model.norm.weight": model.norm.weight,
        "lm_head.weight": model.output.weight,
    }
    for i, layer in enumerate(model.layers):
        prefix = f"model.layers.{i}."
        state |= {
            prefix + "self_attn.q_proj.weight": meta_to_hf_rows(layer.attention.wq.weight, n_heads),
            prefix + "self_attn.k_proj.weight": meta_to_hf_rows(layer.attention.wk.weight, n_heads),
            prefix + "self_attn.v_proj.weight": layer.attention.wv.weight,
            prefix + "self_attn.o_proj.weight": layer.attention.wo.weight,
            prefix + "mlp.gate_proj.weight": layer.feed_forward.w1.weight,
            prefix + "mlp.up_proj.weight": layer.feed_forward.w3.weight,
            prefix + "mlp.down_proj.weight": layer.feed_forward.w2.weight,
            prefix + "input_layernorm.weight": layer.attention_norm.weight,
            prefix + "post_attention_layernorm.weight": layer.ffn_norm.weight,
        }
    return {key: value.detach().clone().contiguous() for key, value in state.items()}


def clip_hf_state_dict(model: ReferenceLavin) -> dict[str, torch.Tensor]:
    """The frozen CLIP vision tower of `model` as a transformers `CLIPVisionModel` state dict (hub key names)."""
    visual = model.backbone.visual
    state = {
        "vision_model.embeddings.class_embedding": visual.class_embedding,
        "vision_model.embeddings.patch_embedding.weight": visual.conv1.weight,
        "vision_model.embeddings.position_embedding.weight": visual.positional_embedding,
        "vision_model.pre_layrnorm.weight": visual.ln_pre.weight,
        "vision_model.pre_layrnorm.bias": visual.ln_pre.bias,
        "vision_model.post_layernorm.weight": visual.ln_post.weight,
        "vision_model.post_layernorm.bias": visual.ln_post.bias,
    }
    for i, block in enumerate(visual.transformer.resblocks):
        prefix = f"vision_model.encoder.layers.{i}."
        q_weight, k_weight, v_weight = block.attn.in_proj_weight.chunk(3)
        q_bias, k_bias, v_bias = block.attn.in_proj_bias.chunk(3)
        state |= {
            prefix + "layer_norm1.weight": block.ln_1.weight,
            prefix + "layer_norm1.bias": block.ln_1.bias,
            prefix + "layer_norm2.weight": block.ln_2.weight,
            prefix + "layer_norm2.bias": block.ln_2.bias,
            prefix + "self_attn.q_proj.weight": q_weight,
            prefix + "self_attn.q_proj.bias": q_bias,
            prefix + "self_attn.k_proj.weight": k_weight,
            prefix + "self_attn.k_proj.bias": k_bias,
            prefix + "self_attn.v_proj.weight": v_weight,
            prefix + "self_attn.v_proj.bias": v_bias,
            prefix + "self_attn.out_proj.weight": block.attn.out_proj.weight,
            prefix + "self_attn.out_proj.bias": block.attn.out_proj.bias,
            prefix + "mlp.fc1.weight": block.mlp.c_fc.weight,
            prefix + "mlp.fc1.bias": block.mlp.c_fc.bias,
            prefix + "mlp.fc2.weight": block.mlp.c_proj.weight,
            prefix + "mlp.fc2.bias": block.mlp.c_proj.bias,
        }
    return {key: value.detach().clone().contiguous() for key, value in state.items()}
