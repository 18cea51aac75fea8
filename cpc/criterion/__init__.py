"""Criteria: CPC InfoNCE, CPC-CTC and supervised ones, all returning
:class:`~cpc.criterion.base.CriterionOutput`.

The training criteria are registered by name in ``CRITERIA`` (a line each in
:mod:`cpc.registries`, naming the criterion's builder and its options dataclass): "cpc",
"cpcctc", and the supervised "speaker", "phone", "phone_ctc" of ``--supervised``; build one
with :func:`cpc.criterion.registry.build_criterion`. The probes of :mod:`cpc.probes` build the
supervised classes directly.

The package imports nothing: its options module (:mod:`cpc.criterion.options`) is read by the
parser, which needs no torch.
"""
