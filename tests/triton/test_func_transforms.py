"""torch.func and batched gradients through the Triton ops: what runs (vmap of a forward, as a
loop over the custom ops) and what is refused with a clear NotImplementedError naming the
transform (gradient transforms, batched gradients), for every operator family. Before, the
refusals were PyTorch's messages about an autograd.Function without setup_context and a
BatchedTensorImpl without storage."""
from __future__ import annotations

import pytest
import torch

import pac_triton as pac
from triton_helpers import PassThrough

_B, _C, _D = 1, 4, 2


def _ops():
    w = torch.randn(4, _C, 3, 3)
    wt = torch.randn(_C, 4, 3, 3)
    return {
        "pac_conv2d": lambda x, g, be: pac.pac_conv2d(x, g, w, padding=1, backend=be),
        "pac_conv_transpose2d": lambda x, g, be: pac.pac_conv_transpose2d(
            x[..., ::2, ::2], g, wt, stride=2, padding=1, output_padding=0, backend=be),
        "pac_pool2d": lambda x, g, be: pac.pac_pool2d(x, g, 3, padding=1, backend=be),
        "packernel2d": lambda x, g, be: pac.packernel2d(g, kernel_size=3, padding=1, backend=be)[0],
    }


OPS = list(_ops())


def _inputs():
    torch.manual_seed(0)
    return torch.randn(_B, _C, 5, 5), torch.randn(_B, _D, 5, 5)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("transform", ["grad", "vjp", "jacrev"])
def test_func_gradient_transforms_refused(op, transform):
    fn = _ops()[op]
    x, g = _inputs()
    loss = lambda gg: fn(x, gg, "triton").square().sum()  # noqa: E731
    run = {"grad": lambda: torch.func.grad(loss)(g), "vjp": lambda: torch.func.vjp(loss, g),
           "jacrev": lambda: torch.func.jacrev(loss)(g)}[transform]
    with pytest.raises(NotImplementedError, match="torch.func gradient transforms"):
        run()


@pytest.mark.parametrize("op", OPS)
def test_hessian_refused_naming_it(op):
    """``hessian`` is ``jacfwd(jacrev(f))``: the forward-mode transform reaches the op first, so
    the forward-AD refusal is the one it meets, and it names ``hessian``."""
    fn = _ops()[op]
    x, g = _inputs()
    with pytest.raises(NotImplementedError, match="forward-mode AD .*hessian"):
        torch.func.hessian(lambda gg: fn(x, gg, "triton").square().sum())(g)


@pytest.mark.parametrize("op", OPS)
def test_batched_gradients_refused(op):
    fn = _ops()[op]
    x, g = _inputs()
    gr = g.clone().requires_grad_()
    y = fn(x, gr, "triton")
    with pytest.raises(NotImplementedError, match="batched gradients"):
        torch.autograd.grad(y, gr, torch.randn(2, *y.shape), is_grads_batched=True)


@pytest.mark.parametrize("op", OPS)
def test_vmap_forward_runs(op):
    """A vmap over a forward (no gradient transform) runs, per sample as without it."""
    fn = _ops()[op]
    x, g = _inputs()
    xs, gs = torch.stack([x, 2 * x]), torch.stack([g, -g])
    y = torch.func.vmap(lambda a, b: fn(a, b, "triton"))(xs, gs)
    torch.testing.assert_close(y, torch.stack([fn(xs[i], gs[i], "triton") for i in range(2)]))


@pytest.mark.parametrize("case", ["no_grad", "detached", "vmapped_constants"])
def test_func_grad_runs_what_it_does_not_differentiate(case):
    """Inside torch.func.grad, a Triton call that the transform does not differentiate (under
    torch.no_grad, on a detached input, on constants batched by an inner vmap) runs, with the
    reference's values: only calls torch would refuse are refused."""
    x, g = _inputs()
    x, g = x.double(), g.double()
    w = torch.randn(3, _C, 3, 3, dtype=torch.float64)
    conv = lambda a, b, be: pac.pac_conv2d(a, b, w, padding=1, backend=be)  # noqa: E731

    def loss(s, be):
        if case == "no_grad":
            with torch.no_grad():
                y = conv(x * s, g, be)
            return s * y.sum()
        if case == "detached":
            return s * conv(x * s.detach(), g, be).sum()
        ys = torch.func.vmap(lambda a, b: conv(a, b, be))(torch.stack([x, 2 * x]), torch.stack([g, -g]))
        return (s * ys).sum()
    s = torch.tensor(1.5, dtype=torch.float64)
    torch.testing.assert_close(torch.func.grad(loss)(s, "triton"), torch.func.grad(loss)(s, "reference"))


@pytest.mark.parametrize("op", OPS[:3])
def test_out_mask_is_a_constant(op):
    """The out-mask gets no gradient (the mask is a constant), as the reference's: it does not
    require grad, on the eager path and through the custom ops alike."""
    x, g = _inputs()
    x.requires_grad_()
    m = (torch.rand(_B, 1, 5, 5) > 0.3).float()
    calls = {
        "pac_conv2d": lambda: pac.pac_conv2d(x, g, torch.randn(4, _C, 3, 3), padding=1, mask=m, backend="triton"),
        "pac_conv_transpose2d": lambda: pac.pac_conv_transpose2d(
            x[..., ::2, ::2], g, torch.randn(_C, 4, 3, 3), stride=2, padding=1, mask=m[..., ::2, ::2],
            backend="triton"),
        "pac_pool2d": lambda: pac.pac_pool2d(x, g, 3, padding=1, mask=m, backend="triton"),
    }
    y, om = calls[op]()
    with PassThrough():  # the custom ops
        y2, om2 = calls[op]()
    assert y.requires_grad and not om.requires_grad and not om2.requires_grad
