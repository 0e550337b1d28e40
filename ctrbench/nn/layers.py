"""Dense building blocks shared by the model zoo: activations, dropout, the MLP, interaction layers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from ctrbench.core.errors import unknown_name

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise unknown_name("activation", name, ACTIVATIONS) from None


def xavier_init(module: nn.Module) -> None:
    """FuxiCTR's dense initialisation: Xavier-normal weights and zero biases for every Linear."""
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_normal_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class Dropout(nn.Module):
    """Inverted dropout, y = x * m / P(m = 1) with m ~ Bernoulli(1 - p), drawn faster on CPU.

    On CPU the mask comes from 16-bit lanes of random 64-bit words (m = lane >= p * 2^16, p rounded
    to a multiple of 2^-16, the keep probability's exact inverse as the scale), because torch's CPU
    `bernoulli_` inside `nn.Dropout` cost BARS's Frappe DLRM about as much as the 400x400 matmul before
    it (`python -m benchmarks.run profile`; README "Performance" has the before and after).
    On other devices it is `nn.functional.dropout`. Like `nn.Dropout`, it draws from torch's global
    generator (so `torch.manual_seed` makes it reproducible) and is the identity in eval mode.
    """

    LEVELS = 1 << 16

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * self.LEVELS) - self.LEVELS // 2  # compared with signed int16 lanes
        self.scale = self.LEVELS / (self.LEVELS - round(p * self.LEVELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return nn.functional.dropout(x, self.p, training=True)
        words = torch.randint(-(1 << 63), (1 << 63) - 1, (-(-x.numel() // 4),), dtype=torch.int64)
        keep = words.view(torch.int16)[: x.numel()].view(x.shape) >= self.threshold
        return x * (keep * self.scale).to(x.dtype)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MLP(nn.Sequential):
    """Stack of [Linear -> BatchNorm? -> activation -> Dropout?] blocks, then an optional output Linear.

    Matches FuxiCTR's MLP_Block layer order, so BARS configs (hidden_units, activation, dropout,
    batch_norm) mean the same here. `output_dim=None` returns the last hidden layer's activations;
    `output_activation` applies the activation after the output layer as well (DLRM's bottom MLP).
    Linear weights are Xavier-normal, biases zero (`xavier_init`).

    Args:
        input_dim: D_in, the width of the input's last dimension.
        hidden_units: the hidden layers' widths.
        output_dim: the output layer's width, or None for no output layer.
        activation_name: a key of `ACTIVATIONS`.

    Call args:
        x: [..., D_in]; any leading dimensions (BatchNorm sees them flattened into one).

    Returns:
        [..., output_dim] (or [..., hidden_units[-1]] without an output layer); `output_dim` holds the width.

    Example::

        mlp = MLP(input_dim=40, hidden_units=(400, 400), output_dim=1, dropout=0.2, batch_norm=True)
        logits = mlp(torch.randn(8, 40)).squeeze(-1)  # [8]
    """

    def __init__(
        self,
        input_dim: int,
        hidden_units: Sequence[int],
        output_dim: int | None = None,
        activation_name: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        output_activation: bool = False,
        bias: bool = True,
    ):
        layers: list[nn.Module] = []
        width = input_dim
        for units in hidden_units:
            layers.append(nn.Linear(width, units, bias=bias))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(activation(activation_name))
            if dropout > 0:
                layers.append(Dropout(dropout))
            width = units
        if output_dim is not None:
            layers.append(nn.Linear(width, output_dim, bias=bias))
            if output_activation:
                layers.append(activation(activation_name))
            width = output_dim
        super().__init__(*layers)
        self.output_dim = width
        xavier_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Sequential over [B, ..., D] inputs; BatchNorm1d needs the features last in a 2-D view.
        if x.dim() > 2:
            return super().forward(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], self.output_dim)
        return super().forward(x)


class InnerProductInteraction(nn.Module):
    """Dot products of every pair of the n embeddings of an example: the Gram matrix X X^T.

    DLRM's dot interaction (`output="pairs"`: the n(n-1)/2 products <x_i, x_j> with i < j, row by row
    of the upper triangle, no self-terms, as FuxiCTR's `InnerProductInteraction(output="inner_product")`)
    and Wukong's full factorization machine (`output="matrix"`: all n*n entries of X X^T, row-major).
    Both compute the full Gram matrix with one batched matmul (2 n^2 d FLOPs per example).

    Args:
        num_inputs: n, the number of embeddings per example.
        output: "pairs" or "matrix".

    Call args:
        x: [B, n, d] embeddings.

    Returns:
        [B, n(n-1)/2] for "pairs", [B, n*n] for "matrix"; `output_dim` holds the width.

    Example::

        interaction = InnerProductInteraction(num_inputs=3, output="pairs")
        x = torch.randn(8, 3, 16)
        z = interaction(x)  # [8, 3]: <x_0, x_1>, <x_0, x_2>, <x_1, x_2> of each example
    """

    def __init__(self, num_inputs: int, output: Literal["pairs", "matrix"] = "pairs"):
        super().__init__()
        if output not in ("pairs", "matrix"):
            raise unknown_name("inner product output", output, ("pairs", "matrix"))
        self.output = output
        self.output_dim = num_inputs * (num_inputs - 1) // 2 if output == "pairs" else num_inputs * num_inputs
        if output == "pairs":
            self.register_buffer("pairs", torch.triu_indices(num_inputs, num_inputs, offset=1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(x, x.transpose(1, 2))
        if self.output == "matrix":
            return gram.flatten(1)
        return gram[:, self.pairs[0], self.pairs[1]]

    def extra_repr(self) -> str:
        return f"output={self.output!r}, output_dim={self.output_dim}"
