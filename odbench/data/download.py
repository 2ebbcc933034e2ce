"""Verified downloads and safe extraction of the benchmark archives named in the dataset cards.

A card's ``[[download.files]]`` tables list the official URLs.  ``download_dataset`` fetches them
with pooch into ``<data root>/.downloads/`` (progress bar; an interrupted transfer resumes from
the bytes already on disk via an HTTP ``Range`` request), verifies each file, extracts the
archives into a temporary folder inside the data root and only then renames the finished dataset
folder into place: a partial download or extraction never counts as present.

Checksums ("trust on first use"): a file's expected sha256 comes from the card; where the card
has none (``sha256 = ""``, because it could not be obtained when the card was written), the
sha256 recorded in ``<data root>/odbench-lock.json`` by an earlier successful download is
enforced; where neither exists, the file is accepted (after the published md5, if the card has
one), and its sha256 is written to the lock file once the dataset has been extracted and laid out
successfully.  Later downloads into the same data root must then match it.

Extraction refuses members with absolute paths or ``..`` components, links whose target falls
outside the extraction folder, and device files; a truncated or corrupt archive is deleted and
reported in one line, and nothing half-extracted is left behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from odbench.cards import DatasetCard
from odbench.data.base import DatasetError
from odbench.imageio import atomic_write_bytes

LOCK_NAME = "odbench-lock.json"
DOWNLOADS = ".downloads"
_ZIP_SUFFIXES = (".zip",)
_TAR_SUFFIXES = (".tar", ".tgz", ".tar.gz", ".tar.bz2", ".tar.xz")


@dataclass(frozen=True)
class FileSpec:
    """One file of a card's ``[[download.files]]``.

    ``into`` is the folder, relative to the data root, that the archive is extracted into (or the
    plain file copied into); ``extract`` is false for plain files (lists, split files)."""

    url: str
    sha256: str = ""
    md5: str = ""
    filename: str = ""
    into: str = ""
    extract: bool = True

    @property
    def name(self) -> str:
        return self.filename or PurePosixPath(urlparse(self.url).path).name


def file_specs(card: DatasetCard) -> list[FileSpec]:
    """The card's download files (empty for generated or explicit-path datasets)."""
    download = card.raw.get("download", {})
    specs = []
    for entry in download.get("files", []):
        if "url" not in entry:
            raise DatasetError(f"{card.path}: a [[download.files]] entry lacks 'url'")
        specs.append(
            FileSpec(
                url=entry["url"],
                sha256=entry.get("sha256", "").lower(),
                md5=entry.get("md5", "").lower(),
                filename=entry.get("filename", ""),
                into=entry.get("into", ""),
                extract=entry.get("extract", True),
            )
        )
    return specs


def download_target(card: DatasetCard) -> str:
    """The folder (relative to the data root) that a download of ``card`` creates."""
    target = card.raw.get("download", {}).get("target", "")
    if not target:
        raise DatasetError(f"{card.name}: the card has no download target (download.target)")
    return str(target)


# ----------------------------------------------------------------------------- lock file


def read_lock(root: Path) -> dict[str, Any]:
    path = root / LOCK_NAME
    if not path.is_file():
        return {"files": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable lock file ({e}); fix or delete it") from e
    data.setdefault("files", {})
    return data  # type: ignore[no-any-return]


def record_checksums(root: Path, entries: dict[str, dict[str, str]]) -> None:
    """Add ``url -> {sha256, file}`` entries to the lock file (atomic rewrite)."""
    lock = read_lock(root)
    lock["files"].update(entries)
    atomic_write_bytes(
        root / LOCK_NAME, (json.dumps(lock, indent=2, sort_keys=True) + "\n").encode()
    )


def expected_sha256(spec: FileSpec, root: Path) -> str:
    """The card's sha256, else the one recorded on first use, else ``""``."""
    if spec.sha256:
        return spec.sha256
    entry = read_lock(root)["files"].get(spec.url, {})
    return str(entry.get("sha256", ""))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- fetching


class ResumableDownloader:
    """A pooch downloader that keeps the received bytes in ``<file>.part`` and resumes an
    interrupted transfer with an HTTP ``Range`` request.  pooch does the hash check and the
    atomic move into place; a file that fails the check is discarded by pooch."""

    def __init__(self, partial: Path, progressbar: bool = True, timeout: float = 60.0) -> None:
        self.partial, self.progressbar, self.timeout = partial, progressbar, timeout

    def __call__(self, url: str, output_file: Any, pooch_obj: Any, check_only: bool = False) -> Any:
        import requests
        from tqdm.auto import tqdm

        if check_only:
            return requests.head(url, allow_redirects=True, timeout=self.timeout).ok
        have = self.partial.stat().st_size if self.partial.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        with requests.get(url, headers=headers, stream=True, timeout=self.timeout) as r:
            if have and r.status_code == 416:  # the partial file is already complete
                os.replace(self.partial, output_file)
                return None
            r.raise_for_status()
            resumed = have > 0 and r.status_code == 206
            if not resumed:
                have = 0
            length = r.headers.get("content-length")
            total = have + int(length) if length is not None else None
            f = None  # the .part file is created when the first byte arrives
            try:
                with tqdm(
                    total=total,
                    initial=have,
                    unit="B",
                    unit_scale=True,
                    desc=self.partial.name.removesuffix(".part"),
                    disable=not self.progressbar,
                    leave=False,
                ) as bar:
                    for chunk in r.iter_content(chunk_size=1 << 20):
                        if f is None:
                            f = self.partial.open("ab" if resumed else "wb")
                        f.write(chunk)
                        bar.update(len(chunk))
            finally:
                if f is not None:
                    f.close()
        if f is None and not resumed:
            self.partial.write_bytes(b"")  # an empty file: nothing arrived, nothing to resume
        os.replace(self.partial, output_file)
        return None


def fetch_file(spec: FileSpec, root: Path, progressbar: bool = True) -> Path:
    """Download one file into ``<root>/.downloads/`` (or reuse a verified copy) and return it."""
    import pooch
    import requests

    folder = root / DOWNLOADS
    folder.mkdir(parents=True, exist_ok=True)
    sha = expected_sha256(spec, root)
    if sha:
        known: str | None = f"sha256:{sha}"
    elif spec.md5:
        known = f"md5:{spec.md5}"
    else:
        known = None
    partial = folder / f"{spec.name}.part"
    try:
        path = pooch.retrieve(
            spec.url,
            known_hash=known,
            fname=spec.name,
            path=folder,
            progressbar=False,
            downloader=ResumableDownloader(partial, progressbar=progressbar),
        )
    except ValueError as e:  # pooch: hash mismatch (the bad file is already removed)
        partial.unlink(missing_ok=True)
        where = "the card" if spec.sha256 else f"{root / LOCK_NAME} (recorded on first download)"
        raise DatasetError(
            f"{spec.url}: checksum mismatch: expected {known} from {where}; the file was not kept ({e})"
        ) from e
    except (requests.RequestException, OSError) as e:
        raise DatasetError(
            f"{spec.url}: download failed ({type(e).__name__}: {e}); run the command again to resume"
        ) from e
    return Path(path)


# ----------------------------------------------------------------------------- extraction


def _check_member_name(name: str, archive: Path) -> None:
    posix = name.replace("\\", "/")
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":"):
        raise DatasetError(f"{archive}: refused: member {name!r} has an absolute path")
    if ".." in PurePosixPath(posix).parts:
        raise DatasetError(f"{archive}: refused: member {name!r} escapes the target folder ('..')")


def _inside(base: str, target: str) -> bool:
    """Whether the relative path ``target`` (already joined to ``base``'s folder) stays inside."""
    norm = os.path.normpath(os.path.join(base, target)) if base else os.path.normpath(target)
    return not (os.path.isabs(target) or norm == ".." or norm.startswith(".." + os.sep))


def _safe_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:
            _check_member_name(info.filename, archive)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DatasetError(
                    f"{archive}: refused: member {info.filename!r} is a symbolic link"
                )
        bad = zf.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"CRC error in member {bad!r}")
        zf.extractall(dest)


def _safe_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        members = tf.getmembers()
        for m in members:
            _check_member_name(m.name, archive)
            if m.issym():
                parent = os.path.dirname(m.name)
                if not _inside(parent, m.linkname):
                    raise DatasetError(
                        f"{archive}: refused: link {m.name!r} -> {m.linkname!r} points outside the target folder"
                    )
            elif m.islnk():
                if not _inside("", m.linkname):
                    raise DatasetError(
                        f"{archive}: refused: hard link {m.name!r} -> {m.linkname!r} points outside the target folder"
                    )
            elif not (m.isfile() or m.isdir()):
                raise DatasetError(f"{archive}: refused: member {m.name!r} is a special file")
        if hasattr(tarfile, "data_filter"):  # belt and braces (Python >= 3.11.4 / 3.12)
            tf.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - older Pythons; members were validated above
            tf.extractall(dest, members=members)


def archive_kind(name: str) -> str:
    lower = name.lower()
    if lower.endswith(_ZIP_SUFFIXES):
        return "zip"
    if lower.endswith(_TAR_SUFFIXES):
        return "tar"
    raise DatasetError(f"{name}: unknown archive type (expected one of .zip, .tar, .tgz, .tar.gz)")


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a zip or tar archive into ``dest`` after validating every member.

    Raises :class:`DatasetError` for a malicious member or a truncated / corrupt archive; the
    folders this call created (``dest`` and any missing parents) are removed again then, so a
    refused archive leaves no empty target folder behind."""
    kind = archive_kind(archive.name)
    made = [p for p in (dest, *dest.parents) if not p.exists()]  # removed again on failure
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if kind == "zip":
            _safe_zip(archive, dest)
        else:
            _safe_tar(archive, dest)
    except BaseException as e:
        if made:
            shutil.rmtree(made[-1], ignore_errors=True)  # the outermost folder this call made
        if isinstance(e, (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, OSError)):
            raise DatasetError(
                f"{archive}: truncated or corrupt archive ({type(e).__name__}: {e})"
            ) from e
        raise


# ----------------------------------------------------------------------------- datasets


def download_dataset(
    card: DatasetCard,
    data_root: Path,
    *,
    progressbar: bool = True,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Fetch, verify and extract every file of ``card`` into ``data_root``; return the dataset
    folder (``data_root / download.target``).  If that folder already exists it is returned as is.

    ``check(folder)`` (the loader's layout check) runs on the extracted folder before it is
    renamed into place; it raises :class:`DatasetError` if the archives did not produce the
    expected layout.  Checksums of files without a known one are recorded afterwards (see the
    module docstring)."""
    specs = file_specs(card)
    if not specs:
        raise DatasetError(f"{card.name}: nothing to download (the card lists no files)")
    target = download_target(card)
    final = data_root / target
    if final.exists():
        return final
    # Folders this call creates are removed again if the download fails while they are empty
    # (nothing arrived); a partial transfer stays in .downloads/ to be resumed.
    created = [p for p in (data_root, data_root / DOWNLOADS) if not p.exists()]
    try:
        try:
            data_root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatasetError(f"{data_root}: cannot create the data root ({e})") from e
        files = [(spec, fetch_file(spec, data_root, progressbar)) for spec in specs]
    except BaseException:
        for folder in reversed(created):
            try:
                folder.rmdir()  # only if empty
            except OSError:
                pass
        raise
    tmp = Path(tempfile.mkdtemp(prefix=f".partial-{card.name}-", dir=data_root))
    try:
        for spec, path in files:
            into = tmp / spec.into
            _check_member_name(spec.into or ".", card.path)
            if spec.extract:
                try:
                    safe_extract(path, into)
                except DatasetError as e:
                    if "truncated or corrupt" in str(e):
                        path.unlink(missing_ok=True)  # never reuse a corrupt archive
                        raise DatasetError(
                            f"{e}; the archive was deleted, run `odbench data download "
                            f"{card.name} --data-root {shlex.quote(str(data_root))}` again"
                        ) from e
                    raise
            else:
                into.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, into / spec.name)
        built = tmp / target
        if not built.is_dir():
            found = sorted(p.name for p in tmp.iterdir())
            raise DatasetError(
                f"{card.name}: the archives did not produce {target}/ (found: {', '.join(found) or 'nothing'})"
            )
        if check is not None:
            check(built)
        try:
            os.replace(built, final)
        except OSError:
            if not final.is_dir():  # another process may have finished first: keep its copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lock = read_lock(data_root)["files"]
    new = {
        spec.url: {"sha256": sha256_of(path), "file": spec.name}
        for spec, path in files
        if not spec.sha256 and spec.url not in lock
    }
    if new:
        record_checksums(data_root, new)
    return final
