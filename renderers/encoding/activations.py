"""``trunc_exp``: exponential whose gradient is clamped (Instant-NGP density activation)."""

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["TRUNC_EXP_MAX", "trunc_exp"]

TRUNC_EXP_MAX = 15.0  # backward uses exp(min(x, 15)): keeps density gradients finite (spec section 2)


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=TRUNC_EXP_MAX))


def trunc_exp(x: Float[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
    """Forward ``exp(x)``; backward ``g * exp(min(x, 15))``.

    Differentiable w.r.t.: ``x`` (with the truncated derivative).

    Example:
        >>> x = torch.tensor([0.0, 20.0], requires_grad=True); trunc_exp(x).sum().backward()
        >>> bool(x.grad[1] == torch.exp(torch.tensor(15.0)))
        True
    """
    return _TruncExp.apply(x)
