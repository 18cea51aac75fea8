"""Download, verify and unpack MiniLibriSpeech (OpenSLR 31) into the layout train.py reads.

    python -m cpc.corpora.minilibrispeech OUT [--base-url URL]

Fetches ``train-clean-5.tar.gz`` and ``dev-clean-2.tar.gz`` from ``--base-url`` (default the
official OpenSLR resource; ``file://`` URLs work too), resuming partial downloads (HTTP Range
requests; ``file://`` copies resume by offset), checks their published md5 sums, unpacks them
refusing any member that would land outside OUT, and writes::

    OUT/downloads/<subset>.tar.gz       the verified archives (a rerun skips what is done)
    OUT/LibriSpeech/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac
                                        both subsets merged under one root, the speaker at the
                                        first directory level (train.py's --pathDB); LibriSpeech
                                        speakers are disjoint across subsets
    OUT/train_split.txt                 stems of train-clean-5   (--pathTrain)
    OUT/val_split.txt                   stems of dev-clean-2     (--pathVal)
    OUT/speaker_train_split.txt         ~90% of each train-clean-5 speaker's utterances, and
    OUT/speaker_val_split.txt           the other ~10%: closed-set lists for
                                        cpc/eval/downstream_speaker.py (dev-clean-2 has other speakers)

A checksum mismatch deletes the downloaded file (a resumed download cannot repair it) and is an
error; rerunning downloads it again.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from cpc.utils.cli import DefaultsHelpFormatter
from cpc.utils.signals import run_command
from cpc.utils.errors import CPCError

BASE_URL = "https://www.openslr.org/resources/31"
SUBSETS = {"train-clean-5": "train_split.txt", "dev-clean-2": "val_split.txt"}
# Published md5 sums of the OpenSLR 31 archives.
MD5 = {"train-clean-5.tar.gz": "5df7d4e78065366204ca6845bb08f490",
       "dev-clean-2.tar.gz": "6d7ab67ac6a1d2c993d050e16d61080d"}
SPEAKER_VAL_EVERY = 10  # every 10th utterance of a speaker (sorted) goes to speaker_val_split.txt
CHUNK = 1 << 20


class PrepareError(CPCError):
    """A download, checksum or archive problem; the message names the file or URL."""


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy(source, target, offset: int) -> int:
    """Append ``source`` (a readable binary stream) to ``target`` opened at ``offset``; bytes copied."""
    copied = 0
    with open(target, "r+b" if offset else "wb") as out:
        out.seek(offset)
        out.truncate()
        for block in iter(lambda: source.read(CHUNK), b""):
            out.write(block)
            copied += len(block)
    return copied


def fetch(url: str, partial: Path) -> int:
    """Download ``url`` into ``partial``, resuming after the bytes it already holds; bytes fetched."""
    offset = partial.stat().st_size if partial.exists() else 0
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        try:
            with open(urllib.request.url2pathname(parsed.path), "rb") as source:
                source.seek(offset)
                return _copy(source, partial, offset)
        except OSError as exc:
            raise PrepareError(f"cannot copy {url}: {exc.strerror or exc}") from None
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            resumed = offset and response.status == 206
            return _copy(response, partial, offset if resumed else 0)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing after the bytes we hold: already complete
            return 0
        raise PrepareError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise PrepareError(f"cannot download {url}: {getattr(exc, 'reason', exc)} (offline? download "
                           f"it by hand to {partial.with_suffix('')} and rerun)") from None


def download(url: str, target: Path, md5: str) -> int:
    """``target`` holding ``url``'s content with checksum ``md5``; bytes fetched (0 if already there).

    Data goes to ``target.partial`` (resumed on the next call after an interruption) and is renamed
    once verified. A mismatch removes the file and raises :class:`PrepareError`.
    """
    if target.exists() and md5sum(target) == md5:
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    fetched = fetch(url, partial)
    actual = md5sum(partial)
    if actual != md5:
        partial.unlink()
        raise PrepareError(f"checksum mismatch for {url}: md5 {actual}, expected {md5}; the corrupt "
                           f"download was deleted, rerun to fetch it again")
    partial.replace(target)
    return fetched


def check_members(archive: tarfile.TarFile, root: Path) -> None:
    """Refuse an archive with a member (or link target) outside ``root``, or a special file."""
    root = root.resolve()
    for member in archive.getmembers():
        destination = (root / member.name).resolve()
        if not destination.is_relative_to(root):
            raise PrepareError(f"{archive.name}: member {member.name!r} would be written outside {root}; "
                               f"refusing to unpack this archive")
        if member.issym() or member.islnk():
            base = destination.parent if member.issym() else root
            if not (base / member.linkname).resolve().is_relative_to(root):
                raise PrepareError(f"{archive.name}: link {member.name!r} -> {member.linkname!r} points "
                                   f"outside {root}; refusing to unpack this archive")
        elif not (member.isfile() or member.isdir()):
            raise PrepareError(f"{archive.name}: member {member.name!r} is a special file; refusing to "
                               f"unpack this archive")


def _extract(archive_path: Path, destination: Path) -> None:
    """:func:`check_members`, then extract; any archive problem is a :class:`PrepareError`."""
    try:
        with tarfile.open(archive_path, "r:*") as archive:
            check_members(archive, destination)
            archive.extractall(destination, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise PrepareError(f"cannot unpack {archive_path}: {exc}") from None


def unpack(archive_path: Path, destination: Path) -> None:
    """Extract ``archive_path`` under ``destination`` after :func:`check_members`.

    On any failure (a refused member included) the folders this call created, ``destination``
    and its missing parents, are removed with whatever they hold; existing folders are kept.
    """
    created = next((p for p in reversed((destination, *destination.parents)) if not p.exists()),
                   None)
    destination.mkdir(parents=True, exist_ok=True)
    try:
        _extract(archive_path, destination)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def merge_subset(staging: Path, subset: str, corpus: Path) -> list[str]:
    """Move the speakers of ``staging/LibriSpeech/<subset>`` into ``corpus``; the subset's stems."""
    source = staging / "LibriSpeech" / subset
    if not source.is_dir():
        raise PrepareError(f"the {subset} archive holds no LibriSpeech/{subset}/ directory")
    stems = sorted(path.stem for path in source.rglob("*.flac"))
    corpus.mkdir(parents=True, exist_ok=True)
    for speaker in sorted(source.iterdir()):
        if (corpus / speaker.name).exists():
            raise PrepareError(f"speaker {speaker.name} of {subset} is already in {corpus}")
        shutil.move(str(speaker), corpus / speaker.name)
    return stems


def speaker_splits(stems: list[str]) -> tuple[list[str], list[str]]:
    """Every ``SPEAKER_VAL_EVERY``-th utterance of each speaker (``<spk>-...`` stems) to validation."""
    by_speaker: dict[str, list[str]] = {}
    for stem in sorted(stems):
        by_speaker.setdefault(stem.split("-")[0], []).append(stem)
    train, val = [], []
    for utterances in by_speaker.values():
        for i, stem in enumerate(utterances):
            (val if i % SPEAKER_VAL_EVERY == SPEAKER_VAL_EVERY - 1 else train).append(stem)
    return train, val


def write_list(path: Path, stems: list[str]) -> None:
    path.write_text("".join(f"{stem}\n" for stem in stems))


def prepare(out: str | Path, base_url: str = BASE_URL, checksums: dict[str, str] | None = None) -> Path:
    """Download, verify, unpack and list both subsets under ``out``; returns the corpus root.

    ``checksums`` maps archive names to md5 sums (default :data:`MD5`, the published ones).
    """
    out = Path(out)
    checksums = MD5 if checksums is None else checksums
    corpus = out / "LibriSpeech"
    for subset, list_name in SUBSETS.items():
        done = out / f".{subset}.done"
        if done.exists():
            continue
        name = f"{subset}.tar.gz"
        archive = out / "downloads" / name
        url = f"{base_url.rstrip('/')}/{name}"
        print(f"{subset}: fetching {url} (resumed if interrupted) and checking its md5", flush=True)
        download(url, archive, checksums[name])
        staging = out / f".staging-{subset}"
        shutil.rmtree(staging, ignore_errors=True)
        print(f"{subset}: unpacking", flush=True)
        unpack(archive, staging)
        stems = merge_subset(staging, subset, corpus)
        shutil.rmtree(staging)
        write_list(out / list_name, stems)
        if subset == "train-clean-5":
            train, val = speaker_splits(stems)
            write_list(out / "speaker_train_split.txt", train)
            write_list(out / "speaker_val_split.txt", val)
        done.touch()
    return corpus


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Download and prepare MiniLibriSpeech for train.py.",
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("out", help="output directory")
    parser.add_argument("--base-url", default=BASE_URL, help="where the OpenSLR 31 archives are")
    args = parser.parse_args(argv)
    try:
        corpus = prepare(args.out, args.base_url)
    except CPCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    print("done. Train with:\n"
          f"  python cpc/train.py --pathDB {corpus} --pathTrain {out / 'train_split.txt'} "
          f"--pathVal {out / 'val_split.txt'} --file_extension .flac --pathCheckpoint runs/pase "
          f"--config configs/pase.yaml\n"
          "Speaker classification on the train-clean-5 speakers:\n"
          f"  python cpc/eval/downstream_speaker.py {corpus} {out / 'speaker_train_split.txt'} "
          f"{out / 'speaker_val_split.txt'} runs/pase --out runs/pase/speaker")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
