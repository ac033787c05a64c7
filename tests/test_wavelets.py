import torch

from ncodec.codecs.wavelets import iwpt, wpt


def test_wpt_perfect_reconstruction_2d_and_1d():
    x = torch.rand(2, 3, 32, 48, dtype=torch.float64)
    y = wpt(x, 2, 2)
    assert y.shape == (2, 48, 8, 12)
    assert torch.allclose(iwpt(y, 2, 2), x, atol=1e-12)
    a = torch.rand(1, 2, 256, dtype=torch.float64)
    assert torch.allclose(iwpt(wpt(a, 4, 1), 4, 1), a, atol=1e-12)


def test_wpt_near_orthonormal_and_dc_in_first_band():
    c = torch.full((1, 1, 16, 16), 0.5, dtype=torch.float64)
    y = wpt(c, 2, 2)
    assert torch.allclose(y[:, 0], torch.full_like(y[:, 0], 2.0))  # DC gain 2 per 2-D level
    assert y[:, 1:].abs().max() < 1e-12
    x = torch.randn(4, 1, 64, 64, dtype=torch.float64)
    ratio = (wpt(x, 2, 2) ** 2).sum() / (x**2).sum()
    assert 0.8 < ratio < 1.25
