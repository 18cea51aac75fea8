"""Encoders, context networks, the causal transformer and build_model."""
import argparse

import pytest
import torch

from cpc.model import ARS, ENCODERS, CPCAR, ChannelNorm, CPCModel, build_model
from cpc.options import complete_with_defaults
from cpc.transformers import CausalTransformer
from cpc.utils.errors import ConfigError

LENGTHS = [1600, 1601, 1759, 2000, 3333]  # multiples of 160 and not (1759 % 160 == 159)


def tiny_args(**overrides) -> argparse.Namespace:
    values = dict(hiddenEncoder=16, hiddenGar=12, nLevelsGRU=1, arMode="LSTM", normMode="layerNorm",
                  encoder_type="cpc", sizeWindow=20480, abspos=False, cpc_mode=None)
    values.update(overrides)
    return complete_with_defaults(values)


@pytest.mark.parametrize("norm_mode", ["layerNorm", "instanceNorm", "batchNorm", "ID"])
def test_cpc_encoder_downsamples_by_160(norm_mode):
    model = build_model(tiny_args(normMode=norm_mode))
    assert model.downsampling == 160
    for n_samples in LENGTHS:
        c, z, _ = model(torch.randn(2, 1, n_samples), None)
        assert z.shape == (2, (n_samples + 1) // 160, 16)  # == n_samples // 160 unless n % 160 == 159
        assert c.shape == (2, (n_samples + 1) // 160, 12)
    assert model(torch.randn(1, 1, 20480), None)[1].shape[1] == 128


def test_mfcc_encoder_frames_and_dims():
    model = build_model(tiny_args(encoder_type="mfcc", hiddenEncoder=20))
    assert model.downsampling == 160 and model.dim_encoded == 20
    assert not list(model.gEncoder.parameters())
    for n_samples in LENGTHS:
        c, z, _ = model(torch.randn(3, 1, n_samples), None)
        assert z.shape == (3, n_samples // 160, 20) and c.shape == (3, n_samples // 160, 12)


@pytest.mark.parametrize("ar_mode,dim_context", [("LSTM", 12), ("GRU", 12), ("RNN", 12),
                                                 ("transformer", 16), ("no_ar", 16)])
@pytest.mark.parametrize("n_levels", [1, 2])
def test_every_ar_shape_and_all_layers(ar_mode, dim_context, n_levels):
    model = build_model(tiny_args(arMode=ar_mode, nLevelsGRU=n_levels))
    assert model.dim_context == dim_context and model.gAR.dim_output == dim_context
    c, z, label = model(torch.randn(2, 1, 1700), "lbl")
    assert c.shape == (2, 10, dim_context) and label == "lbl"
    model.eval()
    layers = model.gAR(z, return_all_layers=True)
    assert len(layers) == (1 if ar_mode == "no_ar" else n_levels)
    assert torch.allclose(layers[-1], model.gAR(z), atol=1e-6)


def test_registries_list_the_flag_choices():
    from cpc.options import build_parser
    choices = {action.dest: set(action.choices) for action in build_parser()._actions
               if action.choices}
    assert set(ENCODERS) == choices["encoder_type"] >= {"cpc", "mfcc", "lfb"}
    assert set(ARS) == choices["arMode"] >= {"LSTM", "GRU", "RNN", "transformer", "no_ar", "QRNN"}
    with pytest.raises(ConfigError, match="--arMode: .*available"):
        build_model(tiny_args(arMode="SRU"))
    with pytest.raises(ConfigError, match="--encoder_type: .*available"):
        build_model(tiny_args(encoder_type="wav2vec"))
    with pytest.raises(ValueError, match="cpc_mode"):
        build_model(tiny_args(cpc_mode="bert"))


def test_state_dict_keys_are_cpc_audio_names():
    keys = build_model(tiny_args(normMode="batchNorm", nLevelsGRU=2)).state_dict().keys()
    for i in range(5):
        assert f"gEncoder.conv{i}.weight" in keys and f"gEncoder.batchNorm{i}.running_mean" in keys
    assert {"gAR.baseNet.weight_ih_l0", "gAR.baseNet.weight_hh_l1", "gAR.baseNet.bias_ih_l1"} <= set(keys)
    layer_norm = build_model(tiny_args()).state_dict()
    assert layer_norm["gEncoder.batchNorm3.weight"].shape == (1, 16, 1)
    assert layer_norm["gEncoder.batchNorm3.bias"].shape == (1, 16, 1)


@pytest.mark.parametrize("affine", [True, False])
def test_channel_norm_formula(affine):
    torch.manual_seed(0)
    norm = ChannelNorm(6, affine=affine)
    if affine:
        with torch.no_grad():
            norm.weight.uniform_(0.5, 2.0)
            norm.bias.normal_()
    x = (torch.randn(3, 6, 9) * torch.logspace(-3, 1, 9)).requires_grad_()  # small deviations: eps matters
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).sum(dim=1, keepdim=True) / (6 - 1)  # unbiased
    expected = (x - mean) / torch.sqrt(var + 1e-5)
    if affine:
        expected = expected * norm.weight + norm.bias
    out = norm(x)
    assert torch.allclose(out, expected, atol=1e-5)
    target = torch.randn_like(out)
    params = [x] + list(norm.parameters())
    for got, want in zip(torch.autograd.grad((out * target).sum(), params),
                         torch.autograd.grad((expected * target).sum(), params)):
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


def test_reverse_mode_runs_backwards_in_time():
    torch.manual_seed(0)
    forward_ar = CPCAR(4, 5, mode="GRU")
    backward_ar = CPCAR(4, 5, mode="GRU", reverse=True)
    backward_ar.load_state_dict(forward_ar.state_dict())
    x = torch.randn(2, 8, 4)
    assert torch.allclose(backward_ar(x), torch.flip(forward_ar(torch.flip(x, [1])), [1]))
    changed = x.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(backward_ar(changed)[:, 0], backward_ar(x)[:, 0])
    assert torch.allclose(forward_ar(changed)[:, :-1], forward_ar(x)[:, :-1])


def test_reverse_flag_reaches_transformer_ar():
    assert build_model(tiny_args(arMode="transformer", cpc_mode="reverse")).gAR.reverse


@pytest.mark.parametrize("abspos", [False, True])
@pytest.mark.parametrize("length", [7, 300])
def test_causal_transformer_is_causal_at_any_length(abspos, length):
    torch.manual_seed(0)
    net = CausalTransformer(16, n_layers=2, n_heads=4, dim_ff=32, abspos=abspos, max_rel_distance=20).eval()
    x = torch.randn(2, length, 16)
    cut = length // 2
    changed = x.clone()
    changed[:, cut:] = torch.randn(2, length - cut, 16)
    out, out_changed = net(x), net(changed)
    assert out.shape == (2, length, 16)
    assert torch.allclose(out[:, :cut], out_changed[:, :cut], atol=1e-5)
    assert not torch.allclose(out[:, cut:], out_changed[:, cut:])


def test_relative_keys_are_used_beyond_the_clipping_distance():
    torch.manual_seed(0)
    net = CausalTransformer(8, n_heads=2, dim_ff=16, max_rel_distance=4).eval()
    x = torch.randn(1, 40, 8)
    out = net(x)
    with torch.no_grad():
        net.layers[0].multihead.rel_keys[-1] += 1.0  # the key shared by every distance >= 3
    changed = net(x)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[:, :3], changed[:, :3])  # frames 0..2 never see a distance >= 3
    assert not torch.allclose(out[:, 3:], changed[:, 3:])


def test_model_from_cpc_audio_style_namespace():
    args = complete_with_defaults(dict(
        hiddenEncoder=16, hiddenGar=8, nPredicts=12, negativeSamplingExt=128, learningRate=2e-4,
        samplingType="samespeaker", cpc_mode=None, encoder_type="cpc", normMode="layerNorm", arMode="GRU",
        nLevelsGRU=1, rnnMode="transformer", dropout=True, abspos=False, sizeWindow=20480,
        pathDB="/somewhere", load=None, nGPU=8, batchSizeGPU=16, debug=False))
    model = build_model(args)
    assert isinstance(model, CPCModel) and isinstance(model.gAR, CPCAR) and model.gAR.mode == "GRU"
    defaults = build_model(complete_with_defaults({}))
    assert defaults.dim_encoded == 256 and defaults.dim_context == 256
    assert defaults.gAR.mode == "LSTM" and isinstance(defaults.gEncoder.batchNorm0, ChannelNorm)


def test_model_backward_reaches_every_parameter():
    model = build_model(tiny_args(arMode="transformer"))
    c, z, _ = model(torch.randn(2, 1, 1600), None)
    (c.sum() + z.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())
