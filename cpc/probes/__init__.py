"""Linear-separability probes: speaker and phone classifiers trained on a model's frozen features,
or with the model fine-tuned (``unfrozen``).

The library behind three users: the periodic probes of training (:class:`cpc.hooks.ProbeHook`),
``--only_classif_metric``, and the standalone script ``cpc/eval/linear_separability.py``.

* :mod:`cpc.probes.config`: the probe names and :class:`~cpc.probes.config.ProbeConfig`, whose
  field defaults are the defaults of every probe flag (torch-free, read by the option modules);
* :mod:`cpc.probes.features`: the frozen features of a dataset's windows, computed once per run;
* :mod:`cpc.probes.training`: one probe, trained on frozen features or fine-tuned with the model;
* :mod:`cpc.probes.run`: a probe run (features once, then every requested probe) and its summary.

This package module imports nothing, so that importing :mod:`cpc.probes.config` imports no torch.
"""
