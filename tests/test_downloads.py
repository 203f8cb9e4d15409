"""The download path, end to end, against a local HTTP server on 127.0.0.1.

The server serves MNIST-format files under the names tensorflow-datasets records, and a checksum
record points tensorflow-datasets' download manager at it, as the real record points at the real
hosts. Nothing leaves the machine.
"""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from jaxcnn import data as D
from jaxcnn import downloads
from jaxcnn.data import DataError, load_dataset

from datasets import write_mnist_files

pytestmark = pytest.mark.slow


class _Server:
    """A static file server on a free loopback port, in a thread."""

    def __init__(self, root: Path) -> None:
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.httpd.server_address[1]
        self.requests: list[str] = []
        self.httpd.requests = self.requests  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]


@pytest.fixture
def served_mnist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[_Server, Path, dict[str, np.ndarray]]]:
    """Tiny MNIST files served over HTTP, a checksum record naming them, and an empty cache."""
    monkeypatch.setenv(D.CACHE_DIR_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(D.DATA_DIR_ENV, raising=False)
    served = tmp_path / "served"
    arrays = write_mnist_files(served, 12, 5)
    server = _Server(served)
    record = tmp_path / "mnist.txt"
    record.write_text(
        "".join(
            f"http://127.0.0.1:{server.port}/{f}\t{(served / f).stat().st_size}\t"
            f"{downloads.sha256_of(served / f)}\t{f}\n"
            for f in D.IDX_FILES.values()
        )
    )
    monkeypatch.setattr(downloads, "checksum_record_path", lambda name: record)
    yield server, served, arrays
    server.stop()


def test_a_good_download_is_verified_cached_and_used_offline_next_time(served_mnist):
    server, _, arrays = served_mnist
    data = load_dataset("mnist")
    np.testing.assert_array_equal(data.train_images[..., 0], arrays["train_images"])
    assert "downloaded by tensorflow-datasets (sha256 verified)" in data.source
    assert sorted(server.requests) == sorted(f"/{f}" for f in D.IDX_FILES.values())
    server.stop()  # the host is gone: the files downloaded before are used
    again = load_dataset("mnist")
    np.testing.assert_array_equal(again.test_labels, arrays["test_labels"])


@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_a_bad_download_is_refused_with_both_checksums_and_not_cached(served_mnist, damage):
    _, served, _ = served_mnist
    target = served / D.IDX_FILES["train_labels"]
    expected = downloads.sha256_of(target)
    raw = target.read_bytes()
    target.write_bytes(raw[:-5] if damage == "truncated" else raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    with pytest.raises(DataError) as info:
        load_dataset("mnist")
    message = str(info.value)
    assert "could not download mnist" in message and expected in message and downloads.sha256_of(target) in message
    bad = downloads.sha256_of(target)
    kept = [p for p in (D.cache_dir() / "downloads").rglob("*") if p.is_file() and ".tmp." not in str(p)]
    assert bad not in {downloads.sha256_of(p) for p in kept}, "the bad file was kept as a download"
    target.write_bytes(raw)  # the host serves the right file again: it is fetched, not the bad one reused
    assert load_dataset("mnist").train_labels.shape == (12,)


def test_an_unreachable_host_fails_within_seconds(served_mnist):
    server, _, _ = served_mnist
    server.stop()
    start = time.perf_counter()
    with pytest.raises(DataError, match=rf"cannot download mnist: 127\.0\.0\.1:{server.port} is unreachable"):
        load_dataset("mnist")
    assert time.perf_counter() - start < downloads.DOWNLOAD_PROBE_SECONDS + 5
