"""Conditioning embeddings: sinusoidal timestep embedding + MLP, and a class embedding with a null id."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ndunet.layers.activation import ActivationSpec, activation
from ndunet.layers.norm import autocast_dtype

__all__ = ["ClassEmbedding", "TimeEmbedding", "sinusoidal_embedding"]


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """(B,) timesteps -> (B, dim) features ``[cos(t w_k), sin(t w_k)]``, ``w_k = max_period^(-k/half)``.

    The transformer position code (https://arxiv.org/abs/1706.03762, sec. 3.5) applied to
    diffusion timesteps as in DDPM (https://arxiv.org/abs/2006.11239, appendix B). An odd ``dim``
    gets one trailing zero column.
    """
    if dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    half = dim // 2
    k = torch.arange(half, device=t.device, dtype=torch.float32)
    freqs = torch.exp(-math.log(max_period) * k / max(half, 1))  # (half,)
    args = t.float()[:, None] * freqs[None, :]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # (B, 2 * half)
    if dim % 2:
        emb = torch.cat([emb, emb.new_zeros(emb.shape[0], 1)], dim=1)  # (B, dim)
    return emb


class TimeEmbedding(nn.Module):
    """Sinusoidal features of t followed by Linear -> act -> Linear: (B,) -> (B, embed_dim)."""

    def __init__(
        self,
        embed_dim: int,
        freq_dim: int | None = None,
        activation_fn: ActivationSpec = "silu",
        max_period: float = 10000.0,
    ) -> None:
        super().__init__()
        self.freq_dim = freq_dim or embed_dim
        self.max_period = max_period
        self.linear1 = nn.Linear(self.freq_dim, embed_dim)
        self.act = activation(activation_fn)
        self.linear2 = nn.Linear(embed_dim, embed_dim)

    def forward(self, t: Tensor) -> Tensor:
        emb = sinusoidal_embedding(t, self.freq_dim, self.max_period)
        # Keep the fp32 features in the weights' dtype so a bf16/fp16 model works without autocast.
        emb = emb.to(self.linear1.weight.dtype)
        return self.linear2(self.act(self.linear1(emb)))


class ClassEmbedding(nn.Module):
    """Learned class embedding with ``num_classes + 1`` rows; id ``num_classes`` is the null class.

    The null row is the "unconditional" input used for classifier-free guidance
    (https://arxiv.org/abs/2207.12598): the model is trained with labels randomly replaced by it.
    """

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
        self.num_classes = num_classes
        self.embedding = nn.Embedding(num_classes + 1, embed_dim)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def forward(self, y: Tensor) -> Tensor:
        e = self.embedding(y)  # (B, E) in the table's dtype: autocast leaves lookups alone
        dtype = autocast_dtype(e.device.type)
        # Under autocast, hand on the autocast dtype as the time MLP's Linear layers do: a float32
        # vector here would promote their sum, and each block's projection would cast it again.
        return e if dtype is None or not e.is_floating_point() else e.to(dtype)
