"""Capture of representations, predictions and alignments during training.

``writer`` runs the model (and criterion) over the capture dataset and saves the tensors and
stats of one epoch; ``loader`` reads them back; ``plots`` draws them (``python -m
cpc.capture.plots``); ``plot_run`` draws a run's history from its ``checkpoint_logs.json``.
"""
