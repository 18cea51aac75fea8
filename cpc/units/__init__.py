"""Discrete units: k-means on frame features, quantized corpora, one-hot features, unit quality.

The command lines follow CPC_audio's clustering tools (``clustering_script.py``,
``quantize_audio.py``, ``build_1hot_features.py``), with the same arguments and output files:

* ``python -m cpc.units.cluster``: k-means centroids of a checkpoint's (or MFCC) features;
* ``python -m cpc.units.quantize``: one ``stem<TAB>u1,u2,...`` line per audio file;
* ``python -m cpc.units.onehot``: one-hot features that ``cpc.eval.ABX from_pre_computed`` reads;
* ``python -m cpc.units.evaluate``: phone purity, cluster purity, PNMI, bitrate and ABX.
"""
