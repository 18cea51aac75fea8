"""--encoder_type lfb: CPC_audio's learnable filterbank, whose checkpoints load strictly.

The fixture tests/model/fixtures/cpc_audio_lfb was written by CPC_audio's own model code (see its
README.md): a checkpoint, its args and the outputs CPC_audio computed on a fixed input.
"""
from pathlib import Path

import pytest
import torch

from cpc.feature_loader import loadModel
from cpc.model import LFBEncoder, build_model
from cpc.options import complete_with_defaults

FIXTURE = Path(__file__).parent / "fixtures" / "cpc_audio_lfb"


def test_cpc_audio_lfb_checkpoint_loads_strictly_and_gives_its_outputs():
    model, dim_context, dim_encoded = loadModel([str(FIXTURE / "checkpoint_0.pt")])
    assert isinstance(model.gEncoder, LFBEncoder) and (dim_context, dim_encoded) == (8, 8)
    reference = torch.load(FIXTURE / "reference_outputs.pt")
    with torch.no_grad():
        c, z, _ = model.eval()(reference["input"], None)
    torch.testing.assert_close(z, reference["encodedData"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(c, reference["cFeature"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_samples", [400, 1600, 1759, 3200])
def test_lfb_frames(n_samples):
    model = build_model(complete_with_defaults(dict(encoder_type="lfb", hiddenEncoder=6,
                                                    hiddenGar=5, arMode="GRU")))
    c, z, _ = model(torch.randn(2, 1, n_samples), None)
    assert model.downsampling == 160
    assert z.shape == (2, (n_samples - 99) // 160 + 1, 6) and c.shape[-1] == 5
    if n_samples % 160 == 0:
        assert z.shape[1] == n_samples // 160


def test_lfb_is_trainable_and_normalised_per_channel():
    encoder = LFBEncoder(4)
    out = encoder(torch.randn(3, 1, 3200))
    torch.testing.assert_close(out.mean(dim=2), torch.zeros(3, 4), atol=1e-5, rtol=0)
    out.pow(2).sum().backward()
    assert encoder.conv.weight.grad.abs().sum() > 0
    assert set(encoder.state_dict()) == {"conv.weight", "conv.bias", "han"}
