"""keep_freed_memory: applied on glibc, a quiet no-op where the C library is another."""
import ctypes
import platform

import pytest

from cpc.utils import memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_glibc_accepts_both_settings():
    assert memory.keep_freed_memory() is True


def test_another_c_library_is_left_alone(monkeypatch):
    class NoGlibc:  # a C library without glibc's functions (musl, macOS)
        def __init__(self, name):
            pass

        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(ctypes, "CDLL", NoGlibc)
    assert memory.keep_freed_memory() is False
