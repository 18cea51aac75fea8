"""CPC-style self-supervised speech representation learning (CPC, CPC-CTC, PASE)."""
