"""Quasi-recurrent neural network: the ``forget_mult`` recurrence and the ``QRNN`` module."""
from .forget_mult import forget_mult
from .qrnn import QRNN, QRNNLayer

__all__ = ["QRNN", "QRNNLayer", "forget_mult"]
