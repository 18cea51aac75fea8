"""Corpora this project can make or fetch: the synthetic espeak-ng corpus (``synthetic``, over
``espeak``) and the preparation of MiniLibriSpeech (``minilibrispeech``)."""
