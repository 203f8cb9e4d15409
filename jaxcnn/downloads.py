"""The original files of the built-in data sets: tensorflow-datasets' checksum records, offline folders
verified against them, and downloads through tensorflow-datasets' download manager."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from jaxcnn.array_cache import cache_dir
from jaxcnn.errors import DataError

DATA_DIR_ENV = "JAXCNN_DATA_DIR"
"""Environment variable: the offline data folder (``--data-dir``), holding ``<name>/`` with the original files."""
DOWNLOAD_PROBE_SECONDS = 5.0
"""How long a download waits to reach the data's host before saying that it cannot."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_record_path(name: str) -> Path:
    """tensorflow-datasets' checksum record for a data set (``url_checksums/<name>.txt`` in its package)."""
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"{name}: tensorflow-datasets is not installed; it records the checksums jaxcnn verifies "
            "the data against (pip install tensorflow-datasets)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "url_checksums" / f"{name}.txt"


def recorded_checksums(name: str) -> dict[str, tuple[str, str]]:
    """tensorflow-datasets' record for a data set: file name -> (url, sha256).

    Read from the record file itself (tab-separated url, size, sha256, file name per line), as
    tensorflow-datasets reads it: importing tensorflow-datasets just to parse it took 0.45 s.
    ``tests/test_data.py`` checks the result equals tensorflow-datasets' own parse.
    """
    records = {}
    for line in checksum_record_path(name).read_text().splitlines():
        fields = line.strip().split("\t")
        if len(fields) == 4 and not fields[0].startswith("#"):
            url, _size, checksum, filename = fields
            records[filename] = (url, checksum)
    return records


def verify(path: Path, expected: str, dataset: str) -> None:
    """Raise DataError unless ``path`` exists and has the expected sha256."""
    if not path.is_file():
        raise DataError(
            f"{path}: missing. The offline folder for {dataset} must hold the original file {path.name} "
            f"(sha256 {expected}); copy it there, or unset --data-dir/{DATA_DIR_ENV} to download it."
        )
    actual = sha256_of(path)
    if actual != expected:
        raise DataError(
            f"{path}: sha256 is {actual}, expected {expected} (the checksum tensorflow-datasets records). "
            "The file is corrupt or not the original; replace it with the original file, or delete it and "
            f"unset --data-dir/{DATA_DIR_ENV} to download it again."
        )


def _download(name: str, files: list[str]) -> dict[str, Path]:
    """Fetch original files with tensorflow-datasets' download manager (verifies sha256)."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.download import checksums

    infos = checksums.load_url_infos(checksum_record_path(name))
    by_file = {str(info.filename): url for url, info in infos.items()}
    from tensorflow_datasets.core.download import resource

    for f in files:  # files downloaded before are used without the network
        url = by_file[f]
        if not (cache_dir() / "downloads" / name / resource.get_dl_fname(url, str(infos[url].checksum))).is_file():
            _check_reachable(url, name)
    manager = tfds.download.DownloadManager(
        download_dir=cache_dir() / "downloads",
        url_infos=infos,
        dataset_name=name,
        force_checksums_validation=True,
    )
    try:
        fetched = manager.download({f: by_file[f] for f in files})
    except Exception as err:  # network, checksum or disk errors from tensorflow-datasets
        raise DataError(
            f"could not download {name} ({err}). Offline, point --data-dir or {DATA_DIR_ENV} at a folder "
            f"holding {name}/ with the original files."
        ) from None
    return {f: Path(str(p)) for f, p in fetched.items()}


def _check_reachable(url: str, name: str) -> None:
    """A DataError within seconds when ``url``'s host cannot be reached, instead of the minutes that
    tensorflow-datasets' download retries take on a machine without network access."""
    import socket
    import urllib.parse

    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=DOWNLOAD_PROBE_SECONDS):
            pass
    except OSError as err:
        raise DataError(
            f"cannot download {name}: {parts.hostname}:{port} is unreachable ({err.strerror or err}). Offline, "
            f"point --data-dir or {DATA_DIR_ENV} at a folder holding {name}/ with the original files "
            "(see the README's Data section)"
        ) from None


def source_files(name: str, files: list[str], data_dir: Path | None) -> tuple[dict[str, Path], str]:
    """Verified paths of the original files, offline or downloaded, and a description of where from."""
    records = recorded_checksums(name)
    if data_dir is None:
        return _download(name, files), "downloaded by tensorflow-datasets (sha256 verified)"
    folder = data_dir / name
    paths = {f: folder / f for f in files}
    for f, p in paths.items():
        verify(p, records[f][1], name)
    return paths, f"offline folder {folder} (sha256 verified)"
