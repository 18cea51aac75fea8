"""Is the first directory level under --pathDB really the speakers? Pure checks of a listing.

The speaker of a file is its first directory level under pathDB (LibriSpeech:
``pathDB/<speaker>/<chapter>/<file>``). Given the folder one level higher (the one holding
``train-clean-100``), the listing still works but finds one "speaker" (or a few named like
splits), so training goes ahead and speaker probes score 1.000. These checks spot that
layout from the relative paths alone, before any audio is read.
"""
from __future__ import annotations

import re
from typing import Sequence

# Folder names of corpus roots and splits (LibriSpeech, Libri-light, MiniLibriSpeech...)
SPLIT_NAME = re.compile(r"^(librispeech|libri-?light|mini-?librispeech|"
                        r"(train|dev|test|val|valid)([-_](clean|other))?([-_]\d+)?)$",
                        re.IGNORECASE)


def speaker_folders_inside(paths: Sequence[str]) -> list[str]:
    """The folders under one top folder that look like LibriSpeech speakers, given the paths
    (relative to pathDB, '/'-separated) of that top folder's files: numeric names, each file
    two folder levels or more below them (``top/<speaker>/<chapter>/<file>``). Fewer than two
    such folders, or any file outside them: []."""
    inside = set()
    for path in paths:
        parts = path.split("/")
        if len(parts) < 4 or not parts[1].isdigit():
            return []
        inside.add(parts[1])
    return sorted(inside, key=int) if len(inside) >= 2 else []


def split_level_problem(path_db: str, paths: Sequence[str],
                        speaker_of: Sequence[int], speakers: Sequence[str]) -> str | None:
    """Why pathDB looks like the folder above the speakers, or None.

    ``paths[i]`` is a file's path relative to pathDB and ``speaker_of[i]`` its index in
    ``speakers``. One speaker folder holding speaker folders, or named like a split, is
    refused; so are several whose names are all split names and which all hold speaker
    folders (pathDB = the LibriSpeech folder holding dev-clean and train-clean-100).
    """
    by_speaker: dict[int, list[str]] = {}
    for path, speaker in zip(paths, speaker_of):
        by_speaker.setdefault(speaker, []).append(path)
    inside = {speaker: speaker_folders_inside(files) for speaker, files in by_speaker.items()}
    base = path_db.rstrip("/")
    if len(speakers) == 1:
        name, found = speakers[0], inside[0]
        if found:
            shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
            return (f"--pathDB {path_db} looks one level above a LibriSpeech split: its only "
                    f"\"speaker\" {name} holds {len(found)} speaker folders ({shown}); give "
                    f"--pathDB {base}/{name}")
        if SPLIT_NAME.match(name):
            return (f"--pathDB {path_db} looks one level above a corpus split: its only "
                    f"\"speaker\" folder {name} is named like a split; give --pathDB "
                    f"{base}/{name}, whose first folder level is the speakers")
        return None
    if all(SPLIT_NAME.match(name) for name in speakers) and all(inside.values()):
        return (f"--pathDB {path_db} looks one level above corpus splits: its \"speakers\" "
                f"{', '.join(speakers[:4])} hold speaker folders; give one split, e.g. "
                f"--pathDB {base}/{speakers[0]}")
    return None


def one_speaker_warning(path_db: str, speakers: Sequence[str]) -> str | None:
    """A warning for a listing of one speaker that passed :func:`split_level_problem` (a
    single-speaker corpus is legitimate for CPC training, but not for speaker probes)."""
    if len(speakers) != 1:
        return None
    return (f"--pathDB {path_db} holds one speaker ({speakers[0]}): the speaker of a file is "
            f"its first folder level under --pathDB (pathDB/<speaker>/.../<file>); speaker "
            f"probes need two speakers or more")
