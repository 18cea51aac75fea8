"""The one check of a window's size (cpc.utils.constants.window_size_problem): whole encoder
frames, named after the flag or config key that gave it, as --sizeWindow, chunk_size and the
datasets report it."""
from __future__ import annotations

import pytest

from cpc.utils.constants import FRAME_SIZE, window_size_problem


@pytest.mark.parametrize("size", [FRAME_SIZE, 3200, 20480, 160 * 1000])
def test_whole_frames_are_accepted(size):
    assert window_size_problem(size, "--sizeWindow") is None
    assert window_size_problem(size, "--sizeWindow", nearest=False) is None


@pytest.mark.parametrize("size, nearest", [(20001, 20000), (3000, 3040), (1000, 960), (50, 160),
                                           (0, 160), (-320, 160)])
def test_other_sizes_are_refused_with_the_nearest_that_would_do(size, nearest):
    assert window_size_problem(size, "--sizeWindow") == (
        f"--sizeWindow {size} must be a positive multiple of 160 samples (whole encoder "
        f"frames), e.g. {nearest}")


def test_the_message_names_what_gave_the_size():
    assert window_size_problem(16001, "run.yaml: chunk_size").startswith(
        "run.yaml: chunk_size 16001 must be a positive multiple of 160 samples")
    assert window_size_problem(1000, "--sizeWindow", nearest=False) == \
        "--sizeWindow 1000 must be a positive multiple of 160 (one encoder frame)"


def test_nearest_is_keyword_only():
    with pytest.raises(TypeError):
        window_size_problem(1000, "--sizeWindow", False)
