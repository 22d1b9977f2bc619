"""The joint-upsampling example (examples/joint_upsampling.py) runs end to end at a small size,
with the network blocked (its photograph and disparity ship inside scikit-image), and its
helpers do what they say."""
from __future__ import annotations

import importlib.util
import math
import socket
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("skimage", reason="the example needs scikit-image (the 'test'/'examples' extras)")
pytest.importorskip("matplotlib", reason="the example needs matplotlib")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "joint_upsampling.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("joint_upsampling_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access is blocked in this test")
    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_runs_small_offline(example, no_network, tmp_path, capsys):
    out = tmp_path / "ju.png"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scores = example.main(["--size", "64", "--steps", "6", "--crop", "32", "--backend", "reference",
                               "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert list(scores) == ["bilinear", "joint bilateral (fixed PAC)", "trained PAC (6 steps)"]
    for name, (whole, edges) in scores.items():
        assert math.isfinite(whole) and math.isfinite(edges) and whole > 10, (name, whole, edges)
        assert f"{whole:.2f}" in printed
    # Joint bilateral upsampling follows the photograph's edges: better than bilinear even this small.
    assert scores["joint bilateral (fixed PAC)"][1] > scores["bilinear"][1]
    assert out.stat().st_size > 10_000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_defaults_do_not_overwrite_the_committed_picture_and_train_in_float32(example, tmp_path, monkeypatch):
    """Issue 12: the default --out wrote over examples/joint_upsampling.png; the data is float32."""
    committed = EXAMPLE.with_name("joint_upsampling.png").resolve()
    monkeypatch.chdir(tmp_path)
    assert example.DEFAULT_OUT.resolve() != committed
    assert example.DEFAULT_OUT.resolve().parent == tmp_path.resolve()  # the current directory
    image, target, valid = example.load_scene(32, 4)
    assert image.dtype == target.dtype == valid.dtype == torch.float32
    model = example.PacUpsampler(4, 1.5, 0.2, channels=2)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


@pytest.mark.parametrize("factor", [2, 3, 4, 5])
def test_geometry_and_bilinear(example, factor):
    kernel_size, padding, output_padding, offset = example.geometry(factor)
    low = torch.randn(1, 2, 5, 7)
    up = F.conv_transpose2d(low, torch.ones(2, 1, kernel_size, kernel_size), stride=factor, padding=padding,
                            output_padding=output_padding, groups=2)
    assert up.shape[-2:] == (5 * factor, 7 * factor)
    # Low-res pixel i lands on high-res pixel i * factor + offset.
    impulse = torch.zeros(1, 1, 5, 7)
    impulse[0, 0, 2, 3] = 1
    hit = F.conv_transpose2d(impulse, _centre(kernel_size), stride=factor, padding=padding,
                             output_padding=output_padding)
    assert hit[0, 0].nonzero().tolist() == [[2 * factor + offset, 3 * factor + offset]]
    result = example.bilinear(low, factor)
    if factor % 2:  # samples at block centres: exactly F.interpolate's grid
        torch.testing.assert_close(result, F.interpolate(low, scale_factor=factor, mode="bilinear",
                                                         align_corners=False))
    centres = result[..., offset::factor, offset::factor]
    torch.testing.assert_close(centres, low)


def _centre(kernel_size):
    window = torch.zeros(1, 1, kernel_size, kernel_size)
    window[0, 0, kernel_size // 2, kernel_size // 2] = 1
    return window


def test_decimate_and_fill(example):
    signal = torch.rand(1, 1, 12, 15)
    valid = torch.ones_like(signal)
    low, low_valid = example.decimate(signal, valid, 3)
    torch.testing.assert_close(low, F.avg_pool2d(signal, 3))
    assert bool((low_valid == 1).all())
    valid[..., :6, :] = 0  # the whole top half has no ground truth
    low, low_valid = example.decimate(signal, valid, 3)
    assert bool((low_valid[..., :2, :] == 0).all()) and bool((low_valid[..., 2:, :] == 1).all())
    filled = example.fill_holes(low, low_valid)
    torch.testing.assert_close(filled[..., 2:, :], low[..., 2:, :])
    assert bool(torch.isfinite(filled).all()) and float(filled.min()) >= 0
