"""The data pipeline's parts that know nothing of files: plans (shares, packs, samplers) and
the background batch thread."""
