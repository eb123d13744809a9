"""The generative model: Bernoulli prior over H binary latents, an MLP decoder, and Gaussian
observation noise with one scalar σ².

    log p(y, s) = Σ_h [s_h log π_h + (1 − s_h) log(1 − π_h)]
                  − (D_n / 2) log(2π σ²) − ‖y − μ(s)‖²_obs / (2σ²)

where ‖·‖_obs and D_n count observed values only. More generally each value may carry a
weight r_d ≥ 0 (``obs``): its noise variance is σ²/r_d², ‖y − μ‖²_obs = Σ_d r_d² (y_d − μ_d)²
and D_n counts the values with r_d > 0. A mask is the case r ∈ {0, 1}; signal-dependent noise
(variance growing with the signal) gets r_d² proportional to each value's precision.
"""

from __future__ import annotations

import math
from typing import NamedTuple, cast

import torch
from torch import nn

PI_MIN = 1e-5


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """Per-point data (B, D) as (B, 1, D), to broadcast against (B, K, D) (a view); data already
    (B, 1, D) as it is (the training loop gathers it so, one call fewer per use)."""
    return t if t.dim() == 3 else t.unsqueeze(1)


_ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh}
# ∂act(z)/∂z times g, from the pre-activation z and the activation x = act(z): the activations'
# own backward kernels (one call each)
_ACT_GRAD = {
    "relu": lambda g, z, x: torch.ops.aten.threshold_backward(g, x, 0),
    "leaky_relu": lambda g, z, x: torch.ops.aten.leaky_relu_backward(g, z, 0.01, False),
    "tanh": lambda g, z, x: torch.ops.aten.tanh_backward(g, x),
}


class Decoder(nn.Module):
    """μ(s): H binary latents -> D values; hidden layers with ``activation``, linear output.

    The first layer is kept apart so that callers can update its pre-activation incrementally:
    for a binary input it is a sum of weight columns, and flipping bit h adds or removes
    column h (see :meth:`first` and :meth:`rest`).
    """

    def __init__(
        self,
        n_latents: int,
        n_out: int,
        hidden: tuple[int, ...],
        activation: str,
        gen: torch.Generator | None = None,
    ):
        super().__init__()
        widths = [n_latents, *hidden, n_out]
        device = torch.device("cpu") if gen is None else gen.device
        # skip_init: no default initialisation, which would draw from torch's global generator.
        self.layers = nn.ModuleList(
            nn.utils.skip_init(nn.Linear, a, b, device=device)
            for a, b in zip(widths[:-1], widths[1:])
        )
        # the same modules as a typed list (the hot paths index it; not a second registration)
        self.linears: list[nn.Linear] = [cast(nn.Linear, layer) for layer in self.layers]
        self.act = _ACTIVATIONS[activation]()
        self.activation = activation
        with torch.no_grad():  # Xavier-uniform weights from the run's generator, zero biases
            for layer in self.linears:
                bound = math.sqrt(6.0 / sum(layer.weight.shape))
                layer.weight.uniform_(-bound, bound, generator=gen)
                layer.bias.zero_()

    def first(self, s: torch.Tensor) -> torch.Tensor:
        """Pre-activation of the first layer: (..., H) -> (..., width_1)."""
        return self.linears[0](s)

    def rest(self, a: torch.Tensor) -> torch.Tensor:
        """Decoder output from a first-layer pre-activation: (..., width_1) -> (..., D)."""
        for layer in self.linears[1:]:
            a = layer(self.act(a))
        return a

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.rest(self.first(s))

    def first_columns(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer as columns (H, width_1) and bias (width_1,): a binary state's
        pre-activation is the bias plus its active latents' columns (a one-bit child's is its
        parent's plus or minus one column)."""
        return self.linears[0].weight.T, self.linears[0].bias

    def residual(self, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """μ − y from first-layer pre-activations a (B, K, width_1) and data y (B, D): (B, K, D)."""
        return self.residual_fn(y)(a)

    def residual_fn(self, y: torch.Tensor):
        """a (B, K, width_1) -> μ − y (B, K, D) for data y (B, D), with the output layer's
        operands prepared once (an E-step calls it once per generation). The output layer and
        the subtraction are one batched matrix product (``baddbmm`` with −(y − bias) as its
        added term), one pass over the (B, K, D) result fewer."""
        if len(self.linears) == 1:
            return lambda a: a - y.unsqueeze(1)
        out = self.linears[-1]
        yb = (out.bias - y).unsqueeze(1)
        wo = out.weight.T.expand(y.shape[0], -1, -1)

        def fn(a):
            for layer in self.linears[1:-1]:
                a = layer(self.act(a))
            return torch.baddbmm(yb, self.act(a), wo)

        return fn

    def scaled_residual_fn(self, y: torch.Tensor, scale: torch.Tensor):
        """a (B, K, width_1 + 1) -> scale · (μ − y) (B, K, D) for data y (B, D) or (B, 1, D),
        ignoring a's last column (the E-step keeps the log-prior there). The layer after the
        first gets a zero weight column for it, and the output layer and the subtraction are one
        batched matrix product (``baddbmm`` with scale · (bias − y) as its added term); operands
        are prepared once per call (an E-step then calls ``fn`` once per generation)."""
        if len(self.linears) == 1:  # a holds μ itself
            ys = as_rows(y * -scale)
            return lambda a: torch.addcmul(ys, a[..., :-1], scale)
        out = self.linears[-1]
        yb = as_rows((out.bias - y) * scale)  # (B, 1, D)
        mid = [
            nn.functional.pad(layer.weight, (0, 1)) if i == 0 else layer.weight
            for i, layer in enumerate(self.linears[1:-1])
        ]
        wo = out.weight * scale
        wo = (wo if mid else nn.functional.pad(wo, (0, 1))).T.expand(y.shape[0], -1, -1)

        def fn(a):
            for layer, weight in zip(self.linears[1:-1], mid):
                a = nn.functional.linear(self.act(a), weight, layer.bias)
            return torch.baddbmm(yb, self.act(a), wo)

        return fn

    def forward_cached(self, s: torch.Tensor):
        """μ(s) (N, D) of states s (N, H) and what :meth:`backward` needs (inputs and
        pre-activations per layer)."""
        xs, zs, x = [s], [], s
        for layer in self.linears[:-1]:
            zs.append(nn.functional.linear(x, layer.weight, layer.bias))
            x = self.act(zs[-1])
            xs.append(x)
        out = self.linears[-1]
        return nn.functional.linear(x, out.weight, out.bias), (xs, zs)

    def backward(self, g: torch.Tensor, cache) -> list[torch.Tensor]:
        """Gradients of the parameters (``parameters()`` order) from ∂loss/∂μ g (N, D),
        back-propagated by hand through the MLP: no autograd graph, a fixed number of calls."""
        xs, zs = cache
        grads = []
        for i in reversed(range(len(self.linears))):
            grads += [g.sum(0), g.T @ xs[i]]  # bias, weight
            if i:
                g = _ACT_GRAD[self.activation](g @ self.linears[i].weight, zs[i - 1], xs[i])
        return grads[::-1]

    def mean(self, a: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """Σ_k q_k μ(s_k) from the states' first-layer pre-activations a (B, K, width_1) (see
        :meth:`first`; the E-step keeps them) weighted by q (B, K) -> (B, D). The output layer
        is affine, so it is applied once to the q-weighted last hidden activations instead of
        to each of the K states: the same value (to rounding) at a K-th of that layer's cost."""
        if len(self.linears) == 1:  # a is μ itself
            return torch.bmm(q.unsqueeze(1), a).squeeze(1)
        x = self.act(a)
        for layer in self.linears[1:-1]:
            x = self.act(layer(x))
        h = torch.bmm(q.unsqueeze(1), x).squeeze(1)  # (B, width_last)
        out = self.linears[-1]
        return torch.addmm(q.sum(1, keepdim=True) * out.bias, h, out.weight.T)


class Constants(NamedTuple):
    """The terms of log p(y, s) that change only with π and σ² (once per epoch)."""

    logit: torch.Tensor  # (H, 1) logit π: log p(s) = s · logit π + base
    base: torch.Tensor  # (1,) Σ_h log(1 − π_h)
    half_log: torch.Tensor  # () ½ log(2πσ²), the likelihood's constant per observed value
    inv2s2: torch.Tensor  # () 1 / (2σ²)
    inv_sqrt: torch.Tensor  # () 1 / √(2σ²), the E-step's residual scale


class Model(nn.Module):
    """Decoder plus the closed-form parameters π (per latent) and σ² (scalar)."""

    pi: torch.Tensor  # (H,) buffer
    sigma2: torch.Tensor  # () buffer

    def __init__(
        self,
        n_latents: int,
        n_out: int,
        hidden: tuple[int, ...],
        activation: str,
        sigma2: float,
        gen: torch.Generator | None = None,
    ):
        super().__init__()
        self.decoder = Decoder(n_latents, n_out, hidden, activation, gen)
        device = self.decoder.linears[0].weight.device
        self.register_buffer("pi", torch.full((n_latents,), 1.0 / n_latents, device=device))
        self.register_buffer("sigma2", torch.tensor(float(sigma2), device=device))

    def prior_terms(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(logit π (H,), Σ_h log(1 − π_h)): log p(s) = s · logit π + Σ_h log(1 − π_h)."""
        pi = self.pi.clamp(PI_MIN, 1 - PI_MIN)
        return torch.log(pi) - torch.log1p(-pi), torch.log1p(-pi).sum()

    def constants(self) -> Constants:
        """What stays fixed while π and σ² do (once per epoch)."""
        logit, base = self.prior_terms()
        inv2s2 = 0.5 / self.sigma2
        return Constants(
            logit.unsqueeze(1),
            base.reshape(1),
            0.5 * torch.log(2 * math.pi * self.sigma2),
            inv2s2,
            inv2s2.sqrt(),
        )

    def log_prior(self, s: torch.Tensor) -> torch.Tensor:
        """Σ_h log p(s_h): (..., H) -> (...)."""
        logit, base = self.prior_terms()
        return s @ logit + base

    def log_likelihood(self, diff: torch.Tensor, obs: torch.Tensor | None):
        """log p(y | s) and the squared error, both (B, K), from the residual μ − y (B, K, D).

        ``obs`` (B, D): each value's weight r (1 observed, 0 missing; None: all observed).
        """
        d_n: int | torch.Tensor = diff.shape[-1]
        if obs is not None:
            diff = diff * obs[:, None, :]  # r · (μ − y): 0 where missing
            d_n = (obs > 0).sum(-1, keepdim=True).to(diff.dtype)
        sqerr = torch.linalg.vector_norm(diff, dim=-1).square()  # one fused reduction
        ll = -0.5 * d_n * torch.log(2 * math.pi * self.sigma2) - sqerr / (2 * self.sigma2)
        return ll, sqerr

    def score(self, y, obs, a, prior):
        """log p(y, s) and squared error (B, K) from first-layer pre-activations a (B, K, width_1)
        and log-priors (B, K) of the states."""
        ll, sqerr = self.log_likelihood(self.decoder.residual(a, y), obs)
        return prior + ll, sqerr

    def log_joint(self, y, s, obs=None):
        """log p(y, s) (B, K) for y (B, D) and states s (B, K, H) (differentiable)."""
        return self.score(y, obs, self.decoder.first(s), self.log_prior(s))[0]
