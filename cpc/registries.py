"""The registries that command-line flags choose from, every item by reference.

Each line names an item and where it is defined (``"package.module:attribute"``), and, for an
item with options, its options dataclass; a module is imported when the item is first looked
up, an options module when the parser is built. So this module imports no torch, and the parser
(with its ``choices=`` and the options' groups) and ``--help`` need none. A new encoder,
context network, normalisation, prediction head, criterion or stat is its file plus one line
here (docs/extending.md).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from cpc.registry import Registry

if TYPE_CHECKING:  # third-party types of the builders' signatures; no project module above
    from torch import nn

# What each registry holds (its items' signatures); defined here, the lowest module that names
# them, so that no module below the model, the criteria or the stats refers up to them.
EncoderBuilder = Callable[[Any], "nn.Module"]  # options -> encoder
ARBuilder = Callable[..., "nn.Module"]  # options, *, dim_input, frames -> ContextNetwork
NormBuilder = Callable[[int], "nn.Module"]  # dim -> norm layer
HeadFactory = Callable[[int, int, int], "nn.Module"]  # dim_context, dim_encoded, max distance
CriterionBuilder = Callable[..., "nn.Module"]  # see cpc.criterion.registry
StatBuilder = Callable[[list[str]], Any]  # requested names -> cpc.stats.base.Stat

# The model's options (cpc.model_options), received by the encoders and context networks that
# name no options of their own.
MODEL_OPTIONS = "cpc.model_options:ModelOptions"

# builder(options) -> encoder
ENCODERS: Registry[EncoderBuilder] = Registry("encoder", flag="--encoder_type",
                                              options=MODEL_OPTIONS)
ENCODERS.add("cpc", "cpc.model:build_cpc_encoder")
ENCODERS.add("mfcc", "cpc.model:build_mfcc_encoder")
ENCODERS.add("lfb", "cpc.model:build_lfb_encoder")
ENCODERS.add("pase", "cpc.pase_encoder:build_pase_encoder",
             options="cpc.pase_encoder_options:PaseEncoderOptions")

# builder(options, *, dim_input, frames) -> ContextNetwork (frames: of a training window)
ARS: Registry[ARBuilder] = Registry("context network", flag="--arMode", options=MODEL_OPTIONS)
ARS.add("LSTM", "cpc.model:build_recurrent_ar")
ARS.add("GRU", "cpc.model:build_recurrent_ar")
ARS.add("RNN", "cpc.model:build_recurrent_ar")
ARS.add("transformer", "cpc.model:build_transformer_ar",
        options="cpc.model_options:TransformerContextOptions")
ARS.add("no_ar", "cpc.model:build_no_ar")
ARS.add("QRNN", "cpc.model:build_qrnn_ar")

# norm(dim) -> module, after each convolution of the CPC encoder
NORM_LAYERS: Registry[NormBuilder] = Registry("norm layer", flag="--normMode")
NORM_LAYERS.add("layerNorm", "cpc.model:ChannelNorm")
NORM_LAYERS.add("instanceNorm", "cpc.model:instance_norm")
NORM_LAYERS.add("batchNorm", "torch.nn:BatchNorm1d")
NORM_LAYERS.add("ID", "torch.nn:Identity")

# head(dim_context, dim_encoded, max_rel_distance) -> PredictionHead, one per predicted step
HEADS: Registry[HeadFactory] = Registry("prediction head", flag="--rnnMode")
HEADS.add("linear", "cpc.criterion.cpc:linear_head")
HEADS.add("ffd", "cpc.criterion.cpc:feed_forward_head")
HEADS.add("conv4", "cpc.criterion.cpc:conv4_head")
HEADS.add("conv8", "cpc.criterion.cpc:conv8_head")
HEADS.add("conv12", "cpc.criterion.cpc:conv12_head")
HEADS.add("LSTM", "cpc.criterion.cpc:lstm_head")
HEADS.add("RNN", "cpc.criterion.cpc:rnn_head")
HEADS.add("transformer", "cpc.criterion.cpc:TransformerHead")

# build(options, *, dim_context, dim_encoded, n_speakers, n_phones, size_window, reverse)
# -> criterion
CRITERIA: Registry[CriterionBuilder] = Registry("criterion")
CRITERIA.add("cpc", "cpc.criterion.cpc:build", options="cpc.criterion.options:CPCOptions")
CRITERIA.add("cpcctc", "cpc.criterion.cpc_ctc:build",
             options="cpc.criterion.options:CPCCTCOptions")
SUPERVISED_OPTIONS = "cpc.criterion.options:SupervisedOptions"
CRITERIA.add("speaker", "cpc.criterion.supervised:build_speaker", options=SUPERVISED_OPTIONS)
CRITERIA.add("phone", "cpc.criterion.supervised:build_phone", options=SUPERVISED_OPTIONS)
CRITERIA.add("phone_ctc", "cpc.criterion.supervised:build_phone_ctc", options=SUPERVISED_OPTIONS)

# build(arguments of the spec) -> Stat
STATS: Registry[StatBuilder] = Registry("stat", flag="--captureSetStats")
STATS.add("reprDiff", "cpc.stats.repr_diff:build")
