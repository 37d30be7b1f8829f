"""Tests of bnlab.data on small IDX files generated here: no test touches the network."""

import gzip
import hashlib
import http.server
import struct
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from bnlab import data


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as an IDX file, independently of the parser under test."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}
    code = codes[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def make_dataset(directory: Path, n_train=12, n_test=5, compress=True, seed=0):
    """Write a tiny Fashion-MNIST look-alike; return its arrays and SHA-256 table."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    checksums = {}
    for key, stem in data.FILES.items():
        content = idx_bytes(arrays[key])
        checksums[stem] = hashlib.sha256(content).hexdigest()
        if compress:
            (directory / (stem + ".gz")).write_bytes(gzip.compress(content))
        else:
            (directory / stem).write_bytes(content)
    return arrays, checksums


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """Run in an empty directory, with no BNLAB_DATA and no system or project data."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BNLAB_DATA", raising=False)
    monkeypatch.setattr(data, "PROJECT_ROOT", tmp_path / "project")
    real = data.candidate_dirs
    monkeypatch.setattr(
        data, "candidate_dirs",
        lambda: [d for d in real() if not str(d).startswith("/usr/share")],
    )
    return tmp_path


@pytest.mark.parametrize("compress", [True, False])
def test_load_roundtrip(tmp_path, compress):
    arrays, checksums = make_dataset(tmp_path, compress=compress)
    ds = data.load_fashion_mnist(tmp_path, checksums=checksums)
    np.testing.assert_array_equal(ds.x_train, arrays["train_images"])
    np.testing.assert_array_equal(ds.y_train, arrays["train_labels"])
    np.testing.assert_array_equal(ds.x_test, arrays["test_images"])
    np.testing.assert_array_equal(ds.y_test, arrays["test_labels"])
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int64
    x_train, y_train, x_test, y_test = ds  # unpacks as a 4-tuple
    assert x_train.shape == (12, 28, 28) and y_test.shape == (5,)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_parse_idx_dtypes_and_byte_order(dtype):
    array = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    parsed = data.parse_idx(idx_bytes(array))
    np.testing.assert_array_equal(parsed, array)
    assert parsed.dtype.isnative


def test_parse_idx_rejects_bad_magic():
    with pytest.raises(data.DataError, match="not an IDX file"):
        data.parse_idx(b"\x01\x02\x03\x04rest", "f")


def test_truncated_file_names_the_file(tmp_path):
    _, checksums = make_dataset(tmp_path, compress=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(data.DataError, match="train-images-idx3-ubyte.*truncated"):
        data.load_fashion_mnist(tmp_path, checksums=None)


def test_truncated_gzip_is_a_clear_error(tmp_path):
    make_dataset(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(data.DataError, match="t10k-images-idx3-ubyte.gz: cannot be read"):
        data.load_fashion_mnist(tmp_path, checksums=None)


def test_wrong_checksum(tmp_path):
    make_dataset(tmp_path)  # random content: the real checksums cannot match
    with pytest.raises(data.DataError, match="SHA-256 .* expected"):
        data.load_fashion_mnist(tmp_path)


def test_missing_file(tmp_path):
    _, checksums = make_dataset(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match="missing train-labels-idx1-ubyte"):
        data.load_fashion_mnist(tmp_path, checksums=checksums)


def test_mismatched_lengths(tmp_path):
    arrays, _ = make_dataset(tmp_path, compress=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(arrays["train_labels"][:3]))
    with pytest.raises(data.DataError, match="do not match"):
        data.load_fashion_mnist(tmp_path, checksums=None)


def test_search_order_prefers_bnlab_data(isolated, monkeypatch):
    make_dataset(isolated / "data" / "fashion-mnist", seed=1)
    assert data.find_fashion_mnist() == Path("data") / "fashion-mnist"
    make_dataset(isolated / "elsewhere", seed=2)
    monkeypatch.setenv("BNLAB_DATA", str(isolated / "elsewhere"))
    assert data.find_fashion_mnist() == isolated / "elsewhere"


def test_incomplete_directory_is_skipped(isolated, monkeypatch):
    make_dataset(isolated / "partial")
    (isolated / "partial" / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("BNLAB_DATA", str(isolated / "partial"))
    assert data.find_fashion_mnist() is None


def test_not_found_without_download_says_where_it_looked(isolated):
    with pytest.raises(data.DataError) as err:
        data.fashion_mnist_dir(download=False)
    message = str(err.value)
    assert "data/fashion-mnist" in message and "apt-get install dataset-fashion-mnist" in message


def test_cli_reports_missing_data_in_one_line(isolated, capsys):
    assert data.main(["--no-download"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: Fashion-MNIST not found") and err.count("\n") == 1


@pytest.fixture
def file_server(tmp_path):
    """Serve a directory over HTTP on localhost (stands in for the official server)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


def test_download_verifies_and_loads(file_server, tmp_path):
    served, url = file_server
    arrays, checksums = make_dataset(served)
    dest = tmp_path / "dest"
    data.download_fashion_mnist(dest, base_url=url, checksums=checksums, progress=False)
    ds = data.load_fashion_mnist(dest, checksums=checksums)
    np.testing.assert_array_equal(ds.x_test, arrays["test_images"])


def test_download_rejects_corrupt_file_and_keeps_nothing(file_server, tmp_path):
    served, url = file_server
    _, checksums = make_dataset(served)
    checksums["t10k-images-idx3-ubyte"] = "0" * 64
    dest = tmp_path / "dest"
    with pytest.raises(data.DataError, match="SHA-256"):
        data.download_fashion_mnist(dest, base_url=url, checksums=checksums, progress=False)
    assert not (dest / "t10k-images-idx3-ubyte.gz").exists()
    assert sorted(p.name for p in dest.iterdir() if not p.name.endswith(".gz")) == []


def test_download_failure_is_a_clear_error(file_server, tmp_path):
    _, url = file_server  # serves an empty directory: every file is a 404
    with pytest.raises(data.DataError, match="cannot download .*train-images"):
        data.download_fashion_mnist(tmp_path / "dest", base_url=url, progress=False)
