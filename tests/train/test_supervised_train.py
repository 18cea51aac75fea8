"""--supervised (CPC_audio's supervised mode): encoder and context trained on speaker or phone
labels through the training loop of CPC, the checkpoint reloading via feature_loader; and the
CPC_audio flags of that mode and of its pre-release versions, accepted or refused."""
from __future__ import annotations

import json

import pytest

from cpc import run_config
from cpc.criterion.options import criterion_name
from cpc.criterion.supervised import CTCPhoneCriterion, PhoneCriterion, SpeakerCriterion
from cpc.feature_loader import loadModel
from cpc.utils import checkpoint as ckpt
from tests.train.test_train import SMALL, corpus_args, run

# instanceNorm: the layerNorm encoder of this tiny size stays at the class prior for the first
# epochs of supervised training on the tiny corpus (half its units dead)
SUPERVISED = ["--supervised", "--cpc_mode", "none", "--samplingType", "uniform",
              "--warmup_steps", "0", "--save_step", "10", "--normMode", "instanceNorm"]


def phones(root) -> list[str]:
    return ["--path_phone_data", str(root / "converted_aligned_phones.txt")]


@pytest.mark.parametrize("with_phones, flags, criterion, epochs", [
    (False, [], SpeakerCriterion, 4),
    (True, [], PhoneCriterion, 3),
    (True, ["--CTC"], CTCPhoneCriterion, 3),
])
def test_supervised_training_learns_and_its_checkpoint_reloads(tiny_corpus, tmp_path, with_phones,
                                                               flags, criterion, epochs):
    out = tmp_path / "run"
    argv = corpus_args(tiny_corpus) + SMALL + SUPERVISED + flags + [
        "--pathCheckpoint", out, "--nEpoch", epochs] + (phones(tiny_corpus) if with_phones else [])
    assert run(argv) == 0
    logs = json.loads((out / "checkpoint_logs.json").read_text())
    assert logs["loss_train"][-1] < logs["loss_train"][0] - 0.05
    # CTC's 1 - PER rises later, once it stops emitting only blanks
    assert logs["locAcc_train"][-1][0] >= logs["locAcc_train"][0][0]
    if criterion is not CTCPhoneCriterion:
        assert logs["locAcc_val"][-1][0] > logs["locAcc_val"][0][0] + 0.05
    assert len(logs["locLoss_val"][-1]) == 1
    state = ckpt.load_checkpoint(out / f"checkpoint_{epochs - 1}.pt")
    head = next(iter(state["cpcCriterion"]))  # CPC_audio's attribute names
    assert head.startswith("linearSpeakerClassifier" if criterion is SpeakerCriterion
                           else "PhoneCriterionClassifier")
    _, dim_context, _ = loadModel([str(out)])  # strictly
    assert dim_context == 32
    config = run_config.resolve_run([str(a) for a in argv])
    assert criterion_name(config.args) == {
        SpeakerCriterion: "speaker", PhoneCriterion: "phone", CTCPhoneCriterion: "phone_ctc"}[criterion]


def test_only_capture_of_a_supervised_phone_run(tiny_corpus, tmp_path):
    argv = corpus_args(tiny_corpus) + SMALL + SUPERVISED + phones(tiny_corpus) + [
        "--pathCheckpoint", tmp_path / "run", "--nEpoch", "1"]
    assert run(argv) == 0
    assert run(argv + ["--onlyCapture", "--pathCaptureDS", tiny_corpus / "val_split.txt",
                       "--pathCaptureSave", tmp_path / "cap", "--captureCtxRepr"]) == 0
    assert list((tmp_path / "cap" / "0" / "ctx_repr").glob("*.pt"))


@pytest.mark.parametrize("flags, message", [
    (["--cpc_mode", "none"], "--cpc_mode none drops the CPC loss"),
    (["--CTC"], "--CTC sets the supervised training: add --supervised"),
    (["--onEncoder"], "--onEncoder sets the supervised training"),
    (["--supervised", "--CTC"], "--CTC sets the phone classifier of --supervised: add "
                                "--path_phone_data"),
    (["--supervised", "--CPCCTC"], "--supervised trains on labels; it contradicts --CPCCTC"),
    (["--supervised", "--nLevelsPhone", "0"], "--nLevelsPhone must be a finite number >= 1"),
    (["--criterion", "phone"], "--criterion phone: the supervised criteria are chosen by"),
    (["--cpc_mode", "bert"], "--cpc_mode bert: CPC_audio's masked-prediction criterion"),
    (["--adversarial"], "--adversarial: CPC_audio's (deprecated) speaker-adversarial"),
    (["--clustering", "deepEmbedded"], "python -m cpc.units.cluster"),
    (["--n_clusters", "50"], "--n_clusters: clustering is not part of training here"),
])
def test_bad_supervised_and_old_cpc_audio_flags_are_one_line(tiny_corpus, tmp_path, capsys,
                                                             flags, message):
    argv = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", tmp_path / "run",
                                               "--nEpoch", "1"] + flags
    assert run(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run" / "checkpoint_args.json").exists()


def test_old_cpc_audio_clustering_settings_parse_and_act_on_nothing():
    args = run_config.parse_args(["--pathDB", "x", "--cluster_delay", "3", "--cluster_iter", "5",
                                  "--clustering_update", "dpmean", "--cpc_mode", "reverse"])[0]
    run_config.check_compatibility_flags(args)
    assert criterion_name(args) == "cpc"


def test_supervised_is_an_architecture_flag_of_a_resumed_run(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    base = corpus_args(tiny_corpus) + SMALL + ["--pathCheckpoint", out]
    assert run(base + SUPERVISED + ["--nEpoch", "1"]) == 0
    capsys.readouterr()
    resumed = run_config.resolve_run([str(a) for a in base + ["--nEpoch", "2"]])
    assert resumed.args.supervised and resumed.args.cpc_mode == "none"
    assert run(base + phones(tiny_corpus) + ["--nEpoch", "2"]) == 2
    assert "train the 'phone' criterion but the run in" in capsys.readouterr().err
