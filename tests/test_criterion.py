"""CPC InfoNCE against a per-step reference, negative sampling, supervised criteria, registry."""
import argparse
import math

import pytest
import torch
import torch.nn.functional as F

from cpc.registries import CRITERIA
from cpc.criterion.cpc_ctc import CPCCTCCriterion
from cpc.criterion.cpc import CPCCriterion, sample_negative_indices
from cpc.criterion.base import CriterionOutput
from cpc.criterion.supervised import (CTCPhoneCriterion, PhoneCriterion, SpeakerCriterion,
                                      edit_distance, phone_error_rate)
from cpc.criterion.registry import build_criterion
from cpc.criterion.cpc import info_nce_logits, info_nce_step_stats
from cpc.criterion.supervised import collapse_repeats
from cpc.options import complete_with_defaults
from cpc.utils.errors import ConfigError

HEAD_MODES = ["transformer", "RNN", "LSTM", "linear", "ffd", "conv4", "conv8", "conv12"]


def cpc_args(**overrides) -> argparse.Namespace:
    values = dict(nPredicts=4, negativeSamplingExt=7, rnnMode="linear", dropout=False, cpc_mode=None,
                  limitNegsInBatch=0, sizeWindow=20480)
    values.update(overrides)
    return complete_with_defaults(values)


def reference_cpc(criterion: CPCCriterion, c: torch.Tensor, z: torch.Tensor, negative_indices: torch.Tensor,
                  reverse: bool = False):
    """Obviously-correct InfoNCE: one head and one broadcast product per step."""
    if reverse:
        c, z = torch.flip(c, [1]), torch.flip(z, [1])
    batch, length, dim = z.shape
    n_steps = len(criterion.wPrediction.predictors)
    window = length - n_steps
    negatives = z.reshape(batch * length, dim)[negative_indices]  # (B, W, N, D)
    losses, accuracies, predictions = [], [], []
    for k in range(1, n_steps + 1):
        prediction = criterion.wPrediction.predictors[k - 1](c[:, :window])  # (B, W, D)
        positive = z[:, k:k + window]
        candidates = torch.cat([positive[:, :, None], negatives], dim=2)  # (B, W, 1 + N, D)
        scores = (prediction[:, :, None, :] * candidates).mean(dim=3)
        flat = scores.reshape(-1, scores.shape[-1])
        target = torch.zeros(flat.shape[0], dtype=torch.long)
        losses.append(F.cross_entropy(flat, target))
        accuracies.append((flat.argmax(dim=1) == 0).float().mean())
        predictions.append(prediction)
    return torch.stack(losses), torch.stack(accuracies), torch.stack(predictions, dim=2)


@pytest.mark.parametrize("rnn_mode", HEAD_MODES)
def test_batched_info_nce_equals_per_step_reference(rnn_mode):
    torch.manual_seed(0)
    dim_context, dim_encoded = 12, 16
    criterion = build_criterion("cpc", cpc_args(rnnMode=rnn_mode), dim_context=dim_context,
                                dim_encoded=dim_encoded).eval()
    c, z = torch.randn(3, 15, dim_context), torch.randn(3, 15, dim_encoded)
    out = criterion(c, z, None, capture=True)
    assert isinstance(out, CriterionOutput)
    negative_indices = out.captures["negative_indices"]
    assert negative_indices.shape == (3, 11, 7)
    losses, accuracies, predictions = reference_cpc(criterion, c, z, negative_indices)
    assert torch.allclose(out.step_losses, losses, atol=1e-5)
    assert torch.allclose(out.step_accuracies, accuracies)
    assert torch.allclose(out.loss, losses.sum(), atol=1e-5)
    assert torch.allclose(out.captures["pred"], predictions, atol=1e-5)


@pytest.mark.parametrize("strategy", ["dense", "gather"])
@pytest.mark.parametrize("batch, group", [(4, 0), (4, 2), (6, 4)])
def test_scoring_strategies_equal_a_broadcast_reference(strategy, batch, group):
    torch.manual_seed(1)
    seq_len, n_steps, n_neg, dim = 9, 3, 5, 8
    window = seq_len - n_steps
    predictions = torch.randn(batch, window, n_steps, dim, requires_grad=True)
    encoded = torch.randn(batch, seq_len, dim, requires_grad=True)
    negative_indices = sample_negative_indices(batch, seq_len, window, n_neg, group)
    logits = info_nce_logits(predictions, encoded, negative_indices, group, strategy)
    negatives = encoded.reshape(-1, dim)[negative_indices]  # (B, W, N, D)
    expected = torch.empty(batch, window, n_steps, 1 + n_neg)
    for k in range(n_steps):
        positive = encoded[:, k + 1:k + 1 + window]
        expected[:, :, k, 0] = (predictions[:, :, k] * positive).sum(-1) / dim
        expected[:, :, k, 1:] = (predictions[:, :, k, None, :] * negatives).sum(-1) / dim
    torch.testing.assert_close(logits, expected)
    weights = torch.randn_like(logits)
    grads = torch.autograd.grad((logits * weights).sum(), (predictions, encoded))
    expected_grads = torch.autograd.grad((expected * weights).sum(), (predictions, encoded))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


def test_reverse_mode_matches_reference_on_flipped_sequences():
    torch.manual_seed(1)
    criterion = build_criterion("cpc", cpc_args(cpc_mode="reverse", rnnMode="conv4"), dim_context=8,
                                dim_encoded=8).eval()
    c, z = torch.randn(2, 12, 8), torch.randn(2, 12, 8)
    out = criterion(c, z, None, capture=True)
    losses, accuracies, _ = reference_cpc(criterion, c, z, out.captures["negative_indices"], reverse=True)
    assert torch.allclose(out.step_losses, losses, atol=1e-5) and torch.allclose(out.step_accuracies, accuracies)


def test_perfect_predictions_are_recognised():
    torch.manual_seed(0)
    criterion = CPCCriterion(2, 8, 8, n_negatives=5, rnn_mode="linear")
    with torch.no_grad():
        for head in criterion.wPrediction.predictors:
            head.linear.weight.copy_(torch.eye(8) * 50)
    z = F.normalize(torch.randn(8, 40, 8), dim=-1)
    c = torch.zeros_like(z)
    c[:, :-1] = z[:, 1:]  # context t holds z[t+1]: head 1 is perfect, head 2 is not
    out = criterion(c, z, None)
    assert out.step_accuracies[0] > 0.97 and out.step_losses[0] < 0.1
    assert out.step_losses[1] > 10 * out.step_losses[0] and out.step_accuracies[1] < 0.6


def test_a_negative_at_the_positive_frame_does_not_count_against_accuracy():
    # B=1, T=3, K=1 -> W=2 anchors, N=3 negatives; anchor t's positive frame is flat index t + 1.
    logits = torch.tensor([[[[2.0, 2.0 + 1e-6, -1.0, 2.5]], [[1.0, 0.0, 0.5, 0.0]]]])
    negatives = torch.tensor([[[1, 0, 2], [0, 1, 0]]])  # anchor 0 drew its own positive frame first
    losses, accuracy = info_nce_step_stats(logits, negatives)
    assert accuracy.tolist() == [0.5]  # anchor 0 loses to a genuine negative (2.5), anchor 1 wins
    logits[0, 0, 0, 3] = 1.0
    assert info_nce_step_stats(logits, negatives)[1].tolist() == [1.0]  # the rounding "tie" is ignored
    expected = -torch.log_softmax(logits, dim=-1)[..., 0].mean()
    assert torch.allclose(info_nce_step_stats(logits, negatives)[0], expected.view(1))  # but kept in the loss


def test_loss_backpropagates_into_heads_and_inputs():
    criterion = build_criterion("cpc", cpc_args(rnnMode="transformer", dropout=True), dim_context=8,
                                dim_encoded=8)
    c = torch.randn(2, 10, 8, requires_grad=True)
    z = torch.randn(2, 10, 8, requires_grad=True)
    criterion(c, z, None).loss.backward()
    assert c.grad.abs().sum() > 0 and z.grad.abs().sum() > 0
    assert all(p.grad is not None for p in criterion.parameters())


def test_dropout_applies_to_predictions_in_training_only():
    criterion = build_criterion("cpc", cpc_args(dropout=True), dim_context=8, dim_encoded=8)
    c, z = torch.randn(2, 30, 8), torch.randn(2, 30, 8)
    zeros = (criterion(c, z, None, capture=True).captures["pred"] == 0).float().mean()
    assert 0.35 < zeros < 0.65
    assert (criterion.eval()(c, z, None, capture=True).captures["pred"] != 0).all()


def test_too_short_sequences_are_rejected():
    with pytest.raises(ValueError, match="too short"):
        CPCCriterion(4, 8, 8, 3)(torch.randn(1, 4, 8), torch.randn(1, 4, 8))


def test_negatives_avoid_the_anchor_time_and_cover_the_batch():
    generator = torch.Generator().manual_seed(0)
    batch, length, window = 5, 9, 6
    indices = sample_negative_indices(batch, length, window, 400, generator=generator)
    assert indices.shape == (batch, window, 400)
    times = indices % length
    assert (times != torch.arange(window)[None, :, None]).all()
    assert set((indices // length).unique().tolist()) == set(range(batch))
    assert set(times.unique().tolist()) == set(range(length))


@pytest.mark.parametrize("batch,group", [(8, 4), (7, 3), (5, 1)])
def test_limit_negs_in_batch_keeps_negatives_in_the_group(batch, group):
    generator = torch.Generator().manual_seed(0)
    items = sample_negative_indices(batch, 10, 6, 300, group_size=group, generator=generator) // 10
    for b in range(batch):
        start = group * (b // group)
        expected = set(range(start, min(start + group, batch)))
        assert set(items[b].unique().tolist()) == expected


def test_criterion_uses_limit_negs_in_batch():
    criterion = build_criterion("cpc", cpc_args(limitNegsInBatch=2), dim_context=8, dim_encoded=8)
    out = criterion(torch.randn(6, 10, 8), torch.randn(6, 10, 8), None, capture=True)
    items = out.captures["negative_indices"] // 10
    assert (items // 2 == torch.arange(6)[:, None, None] // 2).all()


# --------------------------------------------------------------------------- supervised


def train(criterion, c, label, steps=150, lr=0.05):
    optimizer = torch.optim.Adam(criterion.parameters(), lr=lr)
    first = None
    for _ in range(steps):
        out = criterion(c, c, label)
        first = out.loss.item() if first is None else first
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return first, criterion(c, c, label)


@pytest.mark.parametrize("n_layers,pooling", [(1, "last"), (2, "mean")])
def test_speaker_criterion_learns_separable_speakers(n_layers, pooling):
    torch.manual_seed(0)
    centres = torch.randn(4, 10) * 3
    label = torch.arange(4).repeat(8)
    c = centres[label][:, None, :] + 0.3 * torch.randn(32, 6, 10)
    first, out = train(SpeakerCriterion(10, 4, n_layers=n_layers, pooling=pooling), c, label)
    assert out.loss.item() < 0.2 * first and out.step_accuracies.item() > 0.97
    assert out.step_losses.shape == (1,) and out.step_accuracies.shape == (1,)


@pytest.mark.parametrize("n_layers", [1, 2])
def test_phone_criterion_learns_separable_frames(n_layers):
    torch.manual_seed(0)
    centres = torch.randn(5, 8) * 3
    label = torch.randint(0, 5, (6, 20))
    c = centres[label] + 0.3 * torch.randn(6, 20, 8)
    first, out = train(PhoneCriterion(8, 5, n_layers=n_layers), c, label)
    assert out.loss.item() < 0.2 * first and out.step_accuracies.item() > 0.97


def test_ctc_criterion_learns_phone_sequences():
    torch.manual_seed(0)
    centres = torch.randn(4, 8) * 3
    segments = torch.randint(0, 4, (8, 8))
    label = segments.repeat_interleave(4, dim=1)  # (8, 32) frames, runs of 4
    c = centres[label] + 0.3 * torch.randn(8, 32, 8)
    first, out = train(CTCPhoneCriterion(8, 4), c, label, steps=200, lr=0.3)
    assert out.loss.item() < 0.1 * first
    assert out.step_accuracies.item() > 0.9  # 1 - PER


def test_supervised_criteria_read_encoded_features_on_encoder():
    criterion = PhoneCriterion(5, 4, on_encoder=True)  # dim_context 3, dim_encoded 5
    out = criterion(torch.randn(2, 6, 3), torch.randn(2, 6, 5), torch.randint(0, 4, (2, 6)), capture=True)
    assert out.captures["logits"].shape == (2, 6, 4)


def test_phone_labels_must_match_frames():
    with pytest.raises(ValueError, match="labels"):
        PhoneCriterion(4, 3)(torch.randn(2, 6, 4), None, torch.zeros(2, 5, dtype=torch.long))


def test_collapse_repeats():
    targets, lengths = collapse_repeats(torch.tensor([[1, 1, 2, 2, 2, 1], [3, 3, 3, 3, 3, 3]]))
    assert lengths.tolist() == [3, 1]
    assert targets.tolist() == [[1, 2, 1], [3, 0, 0]]


def test_ctc_greedy_decode_on_hand_made_logits():
    blank = 3
    paths = torch.tensor([[1, 1, blank, 1, 2, 2, blank], [blank, blank, 0, 0, blank, blank, blank]])
    logits = F.one_hot(paths, 4).float() * 10
    assert CTCPhoneCriterion(5, 3).greedy_decode(logits) == [[1, 1, 2], [0]]


def test_edit_distance_and_per():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2]) == 2 and edit_distance([1, 2], [1, 2]) == 0
    assert edit_distance([1, 2, 3], [1, 3]) == 1
    assert phone_error_rate([[1, 2, 3], [4]], [[1, 3], [4, 5, 6]]) == pytest.approx(3 / 5)


# --------------------------------------------------------------------------- registry


def test_registry_builds_every_criterion_and_rejects_unknown_names():
    assert CRITERIA.names() == ["cpc", "cpcctc", "phone", "phone_ctc", "speaker"]
    args = complete_with_defaults({})
    defaults = build_criterion("cpc", args, dim_context=4, dim_encoded=8)
    assert len(defaults.wPrediction.predictors) == 12 and defaults.n_negatives == 128
    assert isinstance(build_criterion("cpcctc", args, dim_context=4, dim_encoded=8), CPCCTCCriterion)
    with pytest.raises(ConfigError, match="unknown criterion 'no_such_criterion'; available: cpc, cpcctc, phone"):
        build_criterion("no_such_criterion", args, dim_context=4, dim_encoded=4)
    with pytest.raises(ValueError, match="already registered"):
        CRITERIA.register("cpc")(lambda *a, **k: None)
    on_encoder = complete_with_defaults({"onEncoder": True, "nLevelsPhone": 2})
    speaker = build_criterion("speaker", on_encoder, dim_context=4, dim_encoded=8, n_speakers=3)
    assert speaker.linearSpeakerClassifier.in_features == 8 and speaker.label_field == "speaker"
    phone = build_criterion("phone", on_encoder, dim_context=4, dim_encoded=8, n_phones=5)
    assert len(phone.PhoneCriterionClassifier) == 3 and phone.label_field == "phones"
    assert speaker.chance_loss() == pytest.approx(math.log(3))
    assert isinstance(build_criterion("phone_ctc", args, dim_context=4, dim_encoded=8, n_phones=5),
                      CTCPhoneCriterion)


def test_supervised_criteria_classes():
    assert isinstance(SpeakerCriterion(4, 3).linearSpeakerClassifier, torch.nn.Linear)
    ctc = CTCPhoneCriterion(4, 7)
    assert ctc.PhoneCriterionClassifier.out_features == 8 and ctc.blank == 7
