"""Channel dropout: dropout3d semantics (whole channels, per sample, survivors scaled by 1/(1-p))."""

from __future__ import annotations

import itertools

import pytest
import torch

from nnunetv2_dropgen.dropout import ChannelDropout, channel_dropout


def _keep_mask(out: torch.Tensor) -> torch.Tensor:
    """(B, C) boolean: which channels survived (inputs in the tests are never zero)."""
    return out.flatten(2).ne(0).any(dim=2)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5])
def test_probability_outside_unit_interval_is_rejected(p):
    x = torch.ones(2, 3, 4, 4, 4)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        channel_dropout(x, p)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        channel_dropout(x, p, training=False)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        ChannelDropout(p)


def test_identity_when_not_training_or_p_zero():
    torch.manual_seed(0)
    x = torch.randn(4, 5, 3, 3, 3)
    for out in (channel_dropout(x, 0.75, training=False), channel_dropout(x, 0.0), channel_dropout(x, 0.0, (0, 1))):
        assert torch.equal(out, x)
    module = ChannelDropout(0.75, channels=(0, 2)).eval()
    assert torch.equal(module(x), x)
    assert torch.equal(ChannelDropout(0.0).train()(x), x)
    # and not identity in training mode (so the checks above can fail)
    assert not torch.equal(ChannelDropout(0.75).train()(x), x)


@pytest.mark.parametrize("p", [0.5, 0.75, 0.9])
def test_kept_fraction_is_one_minus_p(p):
    torch.manual_seed(1)
    x = torch.ones(4000, 8, 2, 2, 2)
    kept = _keep_mask(channel_dropout(x, p)).float().mean().item()
    assert abs(kept - (1 - p)) < 0.02, f"p={p}: kept fraction {kept:.4f}, expected {1 - p:.4f}"


@pytest.mark.parametrize("p", [0.5, 0.75, 0.9])
def test_module_kept_fraction_is_one_minus_p(p):
    torch.manual_seed(2)
    module = ChannelDropout(p).train()
    kept = _keep_mask(module(torch.ones(4000, 8, 2, 2, 2))).float().mean().item()
    assert abs(kept - (1 - p)) < 0.02, f"p={p}: kept fraction {kept:.4f}, expected {1 - p:.4f}"


@pytest.mark.parametrize("p", [0.5, 0.75, 0.9, 0.3])
def test_whole_channels_dropped_and_survivors_scaled_exactly(p):
    torch.manual_seed(3)
    x = torch.rand(64, 6, 3, 4, 5) + 0.5  # no zeros in the input
    out = channel_dropout(x, p)
    expected = (x.double() / (1 - p)).float()
    dropped = kept = 0
    for b, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        channel = out[b, c]
        if torch.equal(channel, torch.zeros_like(channel)):
            dropped += 1
        else:
            kept += 1
            torch.testing.assert_close(channel, expected[b, c], rtol=1e-6, atol=0)
    assert dropped > 0 and kept > 0
    if p in (0.5, 0.75):  # 1/(1-p) is a power of two: scaling is exact
        survivors = _keep_mask(out)
        assert torch.equal(out[survivors], x[survivors] / (1 - p))


@pytest.mark.parametrize("p", [0.5, 0.75])
def test_masks_are_independent_across_samples(p):
    torch.manual_seed(4)
    batch, channels = 200, 8
    masks = _keep_mask(channel_dropout(torch.ones(batch, channels, 1, 1, 1), p))
    assert len({tuple(m.tolist()) for m in masks}) > 1, "every sample got the same mask"
    # fraction of identical masks between sample pairs vs. the independent expectation
    same = (masks[:, None, :] == masks[None, :, :]).all(dim=2)
    pairs = batch * (batch - 1) / 2
    frac_same = (same.triu(diagonal=1).sum().item()) / pairs
    q = 1 - p
    expected = (q * q + p * p) ** channels
    assert 0.5 * expected < frac_same < 1.5 * expected, f"{frac_same:.5f} vs {expected:.5f}"
    # correlation between two samples' masks (and two channels of one sample) over many draws
    draws = 2000
    masks = _keep_mask(channel_dropout(torch.ones(draws * 2, channels, 1, 1, 1), p)).view(draws, 2, channels)
    a, b = masks[:, 0].flatten().float(), masks[:, 1].flatten().float()
    r_samples = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    assert abs(r_samples) < 0.1, f"masks of different samples correlate: r={r_samples:.3f}"
    c0, c1 = masks[:, 0, 0].float(), masks[:, 0, 1].float()
    r_channels = torch.corrcoef(torch.stack([c0, c1]))[0, 1].item()
    assert abs(r_channels) < 0.1, f"masks of different channels correlate: r={r_channels:.3f}"


def test_masks_differ_between_calls():
    torch.manual_seed(5)
    x = torch.ones(16, 8, 1, 1, 1)
    assert not torch.equal(channel_dropout(x, 0.5), channel_dropout(x, 0.5))


@pytest.mark.parametrize("channels", [(0, 1), (1, 3)])
def test_channels_outside_selection_are_untouched(channels):
    torch.manual_seed(6)
    x = torch.rand(500, 4, 3, 3, 3) + 0.5
    p = 0.75
    for out in (channel_dropout(x, p, channels), ChannelDropout(p, channels).train()(x)):
        others = [c for c in range(4) if c not in channels]
        assert torch.equal(out[:, others], x[:, others])
        selected = list(channels)
        kept = _keep_mask(out[:, selected])
        assert 0.2 < kept.float().mean().item() < 0.3  # the selected channels are dropped at rate p
        sel_out, sel_x = out[:, selected], x[:, selected]
        assert torch.equal(sel_out[kept], sel_x[kept] * 4)
        assert torch.equal(sel_out[~kept], torch.zeros_like(sel_out[~kept]))


def test_dtype_device_and_shape_are_preserved():
    torch.manual_seed(7)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = torch.rand(3, 4, 2, 3, 4, dtype=dtype) + 0.5
        out = channel_dropout(x, 0.5, (0, 2))
        assert out.dtype == dtype and out.shape == x.shape and out.device == x.device


def test_module_repr_and_attributes():
    module = ChannelDropout(0.75, channels=range(1, 3))
    assert module.p == 0.75 and module.channels == (1, 2)
    assert "p=0.75" in repr(module)
