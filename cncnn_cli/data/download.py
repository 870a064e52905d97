"""``cncnn data download`` and ``cncnn data verify``: get a published archive, prove it is the published one.

The archives are gigabytes on university servers, so a dropped connection resumes from
``NAME.part`` (HTTP ``Range``) instead of starting over. Nothing is extracted before the
file's sha256 matches: a truncated or altered archive would otherwise give a dataset with
missing images and results nobody can compare. Extraction goes into a temporary folder inside
the root, through tarfile's ``data`` filter (no member or link may land outside it), and is
renamed into place only when complete, so a failure never leaves half a dataset behind.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

from cncnn_cli import __version__
from cncnn_cli.data.dataset import dataset_class
from cncnn_cli.errors import CncnnError
from cncnn_cli.utils.atomic import atomic_write
from cncnn_cli.utils.console import say
from cncnn_cli.utils.progress import progress

CHUNK = 1 << 20
#: Seconds without a byte before a connection counts as dropped (the .part file is kept).
TIMEOUT_S = 60
SHA256 = re.compile(r"[0-9a-f]{64}")
#: Published files that are used as they are, not extracted.
COPIED_SUFFIXES = (".mat",)
#: Why tarfile's ``data`` filter refused a member, in the user's terms (its own text names the
#: temporary folder extraction goes into, not the root the user chose).
UNSAFE_MEMBER = {
    tarfile.AbsolutePathError: "has an absolute path",
    tarfile.OutsideDestinationError: "would land outside {root}",
    tarfile.SpecialFileError: "is a device or FIFO, not a file",
    tarfile.AbsoluteLinkError: "is a link to an absolute path",
    tarfile.LinkOutsideDestinationError: "is a link pointing outside {root}",
}


@dataclass(frozen=True)
class Archive:
    """One published file of a dataset: its name, where it is published (``None``: nowhere any
    more), its size in bytes and its sums (``None`` where no source publishes one; some sources
    publish only an md5). Dataset classes list theirs in ``archives``."""

    name: str
    url: str | None
    size: int | None
    sha256: str | None
    md5: str | None = None
    #: The folder under the download root it is extracted into (a file that is no archive is copied there).
    into: str = ""

    def sums(self) -> dict[str, str]:
        """The published sums by algorithm name: what a file must match to be this one."""
        return {kind: value for kind, value in (("sha256", self.sha256), ("md5", self.md5)) if value}

    def matches(self, sums: dict[str, str]) -> bool:
        """Whether a file with these ``sums`` is this one (every published sum agrees)."""
        published = self.sums()
        return bool(published) and all(sums.get(kind) == value for kind, value in published.items())


@dataclass(frozen=True)
class Verdict:
    """How one user-supplied file compares with a dataset's published files."""

    path: Path
    sha256: str
    size: int
    md5: str
    #: The published file with these sums, if any.
    match: Archive | None
    #: The published file of the same name, if any (for a mismatch: what it should have been).
    namesake: Archive | None

    @property
    def ok(self) -> bool:
        return self.match is not None

    def line(self) -> str:
        if self.match is not None:
            return f"OK        {self.path}: {self.match.name}, {' and '.join(self.match.sums())} as published"
        if self.namesake is not None:
            sizes = "" if self.namesake.size in (None, self.size) else \
                f"; {self.size:,} bytes, published {self.namesake.size:,}"
            kind = "sha256" if self.namesake.sha256 else "md5"
            return (f"MISMATCH  {self.path}: {kind} {getattr(self, kind)}, published {getattr(self.namesake, kind)} "
                    f"for {self.namesake.name}{sizes}")
        return f"UNKNOWN   {self.path}: sha256 {self.sha256} (md5 {self.md5}) is not the sum of any published file"


def published_archives(name: str) -> tuple[Archive, ...]:
    """The ``archives`` of the dataset registered as ``name``, or an error when it has none."""
    archives = tuple(getattr(dataset_class(name), "archives", ()))
    if not archives:
        raise CncnnError(f"dataset '{name}' has no published archives to download or verify")
    return archives


def download_dataset(
    name: str, root: str | Path, sources: list[str] | tuple[str, ...] = (), sha256: str | None = None
) -> list[Path]:
    """Fetch dataset ``name``'s published files (or take them from ``sources``), verify and extract them into ``root``.

    Each of ``sources`` is a mirror URL or a file already on disk, standing in for the
    published file of the same name (any name when the dataset publishes one file). ``sha256``
    replaces the published sum: of the one archive, or, for a dataset of several files, of
    the one repackaged copy given as the source. Returns the extracted top-level paths. A file
    already downloaded, verified and extracted there is neither fetched nor extracted again.
    """
    plan = _plan(name, list(sources), sha256)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return [entry for archive, source in plan for entry in _install(archive, source, root)]


def verify_files(name: str, paths: list[Path]) -> list[Verdict]:
    """Compare each of ``paths`` with dataset ``name``'s published files by their sums (any file name)."""
    archives = published_archives(name)
    missing = [path for path in paths if not Path(path).is_file()]
    if missing:
        raise CncnnError(f"{missing[0]}: no such file")
    by_name = {archive.name: archive for archive in archives}
    verdicts = []
    for path in map(Path, paths):
        sums = file_sums(path)
        match = next((archive for archive in archives if archive.matches(sums)), None)
        verdicts.append(Verdict(path, sums["sha256"], path.stat().st_size, sums["md5"], match, by_name.get(path.name)))
    return verdicts


def file_sums(path: Path) -> dict[str, str]:
    """The sha256 and md5 of ``path`` in one read, with a progress display (the archives take a while).

    Both, because the sources differ: torchvision and the iNaturalist README publish md5s, TFDS sha256s.
    """
    digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5(usedforsecurity=False)}
    with open(path, "rb") as file, progress(f"checksum {path.name}", total=path.stat().st_size, unit="B") as bar:
        while chunk := file.read(CHUNK):
            for digest in digests.values():
                digest.update(chunk)
            bar.advance(len(chunk))
    return {kind: digest.hexdigest() for kind, digest in digests.items()}


def fetch(url: str, target: Path) -> Path:
    """Download ``url`` to ``target`` through ``target.part``, resuming a part left by an earlier try.

    A server that ignores ``Range`` (200 instead of 206) gets a clean restart. An interrupted
    transfer keeps the part and raises (exit 1) with how to resume: run the same command again.
    """
    part = target.with_name(f"{target.name}.part")
    start = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": f"cncnn/{__version__}", **({"Range": f"bytes={start}-"} if start else {})}
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # nothing left to send: the part is the whole file
            return part.replace(target)
        raise CncnnError(f"could not download {url}: HTTP {exc.code} {exc.reason}", exit_code=1) from None
    except OSError as exc:
        raise CncnnError(f"could not reach {url}: {getattr(exc, 'reason', exc)}; behind a firewall, get the "
                         f"archive another way and pass --from FILE", exit_code=1) from None
    with response:
        offset = _resume_offset(response, start, target.name)
        total = offset + response.length if response.length is not None else None
        received = _receive(response, part, offset, total, target.name)
    if total is not None and received < total:
        raise CncnnError(f"download of {target.name} interrupted at {received:,} of {total:,} bytes; run the "
                         f"same command again to resume from {part}", exit_code=1)
    return part.replace(target)


def extract(archive: Path, root: Path) -> list[Path]:
    """Extract the tar ``archive`` into ``root`` safely; the top-level paths it created.

    Members go into a temporary folder inside ``root`` through the ``data`` filter, which
    refuses absolute paths, ``..`` and links pointing outside; only a complete extraction
    is renamed into place, and never over something already there.
    """
    tmp = Path(tempfile.mkdtemp(prefix=f".{archive.name}.", suffix=".extracting", dir=root))
    try:
        try:
            tar = tarfile.open(archive)
        except tarfile.ReadError:
            raise CncnnError(f"{archive}: not a tar archive (.tar, .tgz, .tar.gz, .tar.bz2 or .tar.xz); pass the "
                             f"dataset's published archive; nothing was extracted") from None
        with tar:
            tar.extractall(tmp, filter="data")
        entries = sorted(tmp.iterdir())
        taken = [root / entry.name for entry in entries if os.path.lexists(root / entry.name)]
        if taken:
            raise CncnnError(f"{taken[0]} already exists and is not from this archive; move it away or choose "
                             f"another --root, then run again")
        for entry in entries:
            entry.rename(root / entry.name)
        return [root / entry.name for entry in entries]
    except tarfile.FilterError as exc:
        why = UNSAFE_MEMBER.get(type(exc), "is unsafe to extract").format(root=root)
        raise CncnnError(f"{archive}: refused to extract, its member {exc.tarinfo.name!r} {why}; "
                         f"nothing was extracted") from None
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CncnnError(f"cannot extract {archive}: {exc}; nothing was extracted", exit_code=1) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _plan(name: str, sources: list[str], sha256: str | None) -> list[tuple[Archive, str | None]]:
    """Each file to install and where it comes from (``None``: its published URL)."""
    archives = published_archives(name)
    if sha256 is not None:
        sha256 = _checked_sum(sha256)
        if len(archives) == 1:
            if len(sources) > 1:
                raise CncnnError(f"dataset '{name}' publishes one archive; give one --from")
            archive = archives[0]
            if sha256 != archive.sha256:
                published = f", not the published {archive.sha256}" if archive.sha256 else ""
                say(f"--sha256: checking {archive.name} against {sha256}{published}")
            return [(replace(archive, sha256=sha256, md5=None), sources[0] if sources else None)]
        if len(sources) != 1:
            raise CncnnError(f"--sha256 checks one repackaged copy of all of {name}, given with --from FILE_OR_URL; "
                             f"its published files ({', '.join(a.name for a in archives)}) have sums of their own")
        return [(Archive(_source_name(sources[0]), sources[0], None, sha256), sources[0])]
    by_name = {archive.name: archive for archive in archives}
    chosen: dict[str, str] = {}
    for source in sources:
        archive = archives[0] if len(archives) == 1 else by_name.get(_source_name(source))
        if archive is None:
            raise CncnnError(f"--from {source}: not one of the files {name} publishes ({', '.join(by_name)}); give "
                             f"each under its published name, or a repackaged copy of all of it with --sha256 SUM")
        if archive.name in chosen:
            raise CncnnError(f"--from {source}: {archive.name} is already given ({chosen[archive.name]})")
        chosen[archive.name] = source
    if any(archive.url is None and archive.name not in chosen for archive in archives):
        note = getattr(dataset_class(name), "download_note", "")
        raise CncnnError(note or f"dataset '{name}' has no official download")
    return [(archive, chosen.get(archive.name)) for archive in archives]


def _install(archive: Archive, source: str | None, root: Path) -> list[Path]:
    """Fetch or take one file, verify it against its published sums, extract or copy it into place."""
    target = root / archive.into
    published = archive.sums()
    done = _already_extracted(root, archive, published)
    if done:
        say(f"{archive.name}: already downloaded, verified and extracted in {root}; nothing fetched")
        return done
    local = _local_file(source)
    path = local or _fetch_once(source or archive.url, root / archive.name)
    actual = file_sums(path)
    if published and not archive.matches(actual):
        if local is None:
            path.unlink()  # so that the next run fetches it afresh
        raise _mismatch(path, archive, actual, downloaded=local is None)
    if published:
        say(f"{path}: {' and '.join(published)} verified; extracting into {target}")
    else:
        done = _already_extracted(root, archive, {"sha256": actual["sha256"]})
        if done:
            say(f"{archive.name}: already extracted in {root} from this very file; nothing extracted")
            return done
        say(f"{path}: no checksum is published for {archive.name}, so it cannot be verified (sha256 "
            f"{actual['sha256']}); extracting into {target}")
    target.mkdir(parents=True, exist_ok=True)
    entries = extract(path, target) if _is_archive(archive.name) else [_place(path, target / archive.name)]
    with atomic_write(_marker(root, archive)) as tmp:
        tmp.write_text(json.dumps({"sums": published or {"sha256": actual["sha256"]},
                                   "entries": [entry.relative_to(root).as_posix() for entry in entries]}))
    return entries


def _is_archive(name: str) -> bool:
    """Whether a file is extracted: all but the published ``.mat`` files (Flowers-102's), which are copied."""
    return not name.endswith(COPIED_SUFFIXES)


def _place(path: Path, destination: Path) -> Path:
    """Copy the file ``path`` to ``destination`` (never over something there), whole or not at all."""
    if os.path.lexists(destination):
        raise CncnnError(f"{destination} already exists and is not from this download; move it away or choose "
                         f"another --root, then run again")
    with atomic_write(destination) as tmp:
        shutil.copyfile(path, tmp)
    return destination


def _source_name(source: str) -> str:
    """The file name a URL or path ends with."""
    return Path(urllib.parse.urlparse(source).path if "://" in source else source).name


def _checked_sum(sha256: str) -> str:
    sha256 = sha256.strip().lower()
    if not SHA256.fullmatch(sha256):
        raise CncnnError(f"--sha256 {sha256!r}: expected 64 hexadecimal digits")
    return sha256


def _local_file(source: str | None) -> Path | None:
    """``source`` as an archive on disk (a path or ``file://``), ``None`` for a URL or no source."""
    if source is None:
        return None
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme.lower() in ("http", "https", "ftp"):
        return None
    path = Path(urllib.request.url2pathname(parsed.path) if parsed.scheme.lower() == "file" else source).expanduser()
    if not path.is_file():
        raise CncnnError(f"--from {source}: no such file, and not a URL (http://, https://)")
    return path


def _fetch_once(url: str, target: Path) -> Path:
    """``target`` if an earlier run finished downloading it (verified next), else :func:`fetch`."""
    if target.is_file():
        say(f"{target}: downloaded earlier; verifying it instead of fetching it again")
        return target
    return fetch(url, target)


def _resume_offset(response, start: int, name: str) -> int:
    """Where the response body starts in the file: ``start`` for a 206 resuming there, else 0."""
    if not start:
        return 0
    if response.status != 206:
        say(f"{name}: the server does not resume downloads (HTTP {response.status}); starting over")
        return 0
    content_range = response.headers.get("Content-Range", "")
    if not content_range.startswith(f"bytes {start}-"):
        raise CncnnError(f"{name}: the server resumed at {content_range!r}, not at byte {start}; delete "
                         f"{name}.part and run again", exit_code=1)
    return start


def _receive(response, part: Path, offset: int, total: int | None, name: str) -> int:
    """Write the body to ``part`` (appending after ``offset`` bytes); the bytes it now holds."""
    received = offset
    with open(part, "ab" if offset else "wb") as file, progress(name, total=total, unit="B") as bar:
        bar.advance(offset)
        try:
            while chunk := response.read(CHUNK):
                file.write(chunk)
                received += len(chunk)
                bar.advance(len(chunk))
        except (OSError, http.client.HTTPException) as exc:  # reset, stalled, cut chunk: keep what arrived
            say(f"{name}: connection lost ({exc})")
    return received


def _mismatch(path: Path, archive: Archive, actual: dict[str, str], downloaded: bool) -> CncnnError:
    """The checksum error: bad input (2) for the user's own file, a failed run (1) for a download."""
    kind = "sha256" if archive.sha256 else "md5"
    found, expected = actual[kind], archive.sums()[kind]
    if not downloaded:
        return CncnnError(f"{path}: {kind} {found}, expected {expected} for {archive.name}; it is truncated "
                          f"or another file (a repackaged copy needs --sha256 of its own); nothing was extracted")
    return CncnnError(f"{archive.name}: {kind} {found}, expected {expected}; the download is truncated or "
                      f"altered, so it was deleted and nothing was extracted; run again to fetch it afresh",
                      exit_code=1)


def _marker(root: Path, archive: Archive) -> Path:
    return root / f".{archive.name}.extracted"


def _already_extracted(root: Path, archive: Archive, sums: dict[str, str]) -> list[Path]:
    """The paths an earlier run extracted from a file with these very ``sums``, if they are all still there."""
    if not sums:
        return []
    try:
        record = json.loads(_marker(root, archive).read_text())
    except (OSError, ValueError):
        return []
    entries = [root / name for name in record.get("entries", [])]
    if record.get("sums") != sums or not entries or not all(os.path.lexists(e) for e in entries):
        return []
    return entries
