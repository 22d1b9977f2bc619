"""``torch.compile(fullgraph=True)`` of a small model holding every PAC layer: no graph break,
forward and a training step equal to eager, on the reference and on the Triton backend (custom
ops; Triton's interpreter on a CPU). ``aot_eager`` keeps the test fast: what is checked is that
Dynamo traces the library (validation, dispatch, custom ops) as one graph."""
import pytest
import torch

import pac_triton as P


class EveryLayer(torch.nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.conv = P.PacConv2d(4, 4, 3, padding=1, kernel_type="inv_0.5_1.5_asym", backend=backend)
        self.pool = P.PacPool2d(3, padding=1, normalize_kernel=True, backend=backend)
        self.up = P.PacConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1,
                                       smooth_kernel_type="gaussian", backend=backend)
        self.crf = P.PacCRF(3, 1, pairwise_kernels=dict(kernel_size=3, compat_type="2d"), backend=backend)

    def forward(self, x, guide, guide_up):
        y = self.conv(x, guide)
        y = self.pool(y, guide)
        y = self.up(y, guide_up)
        return self.crf(y, guide_up)


@pytest.mark.parametrize("backend,save_k", [("reference", None), ("triton", None), ("triton", "1")],
                         ids=["reference", "triton", "triton-PAC_TRITON_SAVE_K=1"])
def test_fullgraph_compile_matches_eager(backend, save_k, monkeypatch):
    """``save_k``: the Triton backend's stored-K route (its switch read while Dynamo traces; the
    compiled training step's conv passes read a stored K)."""
    conv_k_modes = []
    if save_k is not None:
        from pac_triton.triton import conv, host_common
        monkeypatch.setenv("PAC_TRITON_SAVE_K", save_k)

        class Spy(host_common.checked):  # the K_MODE of every dense conv launch
            def __getitem__(self, grid):
                launch = super().__getitem__(grid)

                def run(*a, **k):
                    if self.kernel in (conv.pac_conv_kernel, conv.pac_conv_dxdk_kernel, conv.pac_conv_dw_kernel):
                        conv_k_modes.append(k["K_MODE"])
                    return launch(*a, **k)
                return run
        monkeypatch.setattr(host_common, "checked", Spy)
    torch.manual_seed(0)
    model = EveryLayer(backend)
    x = torch.randn(1, 4, 5, 6)
    guide, guide_up = torch.randn(1, 2, 5, 6), torch.randn(1, 2, 10, 12)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")

    expected = model(x, guide, guide_up)
    expected.square().mean().backward()
    eager_grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    conv_k_modes.clear()
    actual = compiled(x, guide, guide_up)  # fullgraph=True: a graph break raises
    actual.square().mean().backward()
    if save_k is not None:
        from pac_triton.triton.host_common import K_LOAD
        # conv and transposed conv: forward, dx / dK and dW each (the CRF's convs take a given K)
        assert conv_k_modes.count(K_LOAD) >= 6 and set(conv_k_modes) == {K_LOAD}, conv_k_modes
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    assert eager_grads, "no parameter received a gradient"
    for name, grad in eager_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")
