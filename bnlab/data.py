"""Fashion-MNIST: find it on disk, or download and verify it, then read the IDX files.

The four files are looked for, in this order, in

1. the directory named by the environment variable ``BNLAB_DATA``,
2. ``./data/fashion-mnist`` (and the same under the project root),
3. ``/usr/share/datasets/fashion-mnist`` (Debian package ``dataset-fashion-mnist``),

each either plain (``train-images-idx3-ubyte``) or gzipped (``...-ubyte.gz``). If none
holds them, :func:`download_fashion_mnist` fetches them from the official source into
``./data/fashion-mnist``. Every file is checked against the SHA-256 of its
*decompressed* content, so a recompressed copy (as Debian ships) is accepted and a
truncated or corrupt one is not.

Command line::

    python -m bnlab.data            # find or download, then print where the data is
    python -m bnlab.data --no-download
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

PROJECT_ROOT = Path(__file__).resolve().parents[1]

BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

HOW_TO_GET = (
    "install the Debian package (sudo apt-get install dataset-fashion-mnist), "
    "run `python -m bnlab.data` with network access, or set BNLAB_DATA to a directory "
    "holding the four IDX files"
)

# IDX type codes (third byte of the magic number) and the NumPy dtypes they denote.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataError(RuntimeError):
    """The data set is missing, truncated or corrupt; the message says what to do."""


@dataclass(frozen=True)
class FashionMNIST:
    """The four arrays of Fashion-MNIST.

    Attributes
    ----------
    x_train : ndarray of uint8, shape (60000, 28, 28)
    y_train : ndarray of int64, shape (60000,)
    x_test : ndarray of uint8, shape (10000, 28, 28)
    y_test : ndarray of int64, shape (10000,)
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __iter__(self):
        return iter((self.x_train, self.y_train, self.x_test, self.y_test))


def candidate_dirs() -> list[Path]:
    """The directories searched for the data, in order of preference."""
    dirs = []
    env = os.environ.get("BNLAB_DATA")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path("data") / "fashion-mnist")
    project_data = PROJECT_ROOT / "data" / "fashion-mnist"
    if project_data.resolve() != dirs[-1].resolve():
        dirs.append(project_data)  # notebooks run in chapters/, not in the project root
    dirs.append(Path("/usr/share/datasets/fashion-mnist"))
    return dirs


def _file_in(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        path = directory / name
        if path.is_file():
            return path
    return None


def read_bytes(path: Path) -> bytes:
    """The decompressed content of an IDX file, plain or gzipped."""
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: cannot be read ({err}); delete it and {HOW_TO_GET}") from err


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode an IDX file (the MNIST format) into an array.

    Parameters
    ----------
    data : bytes
        The decompressed file content: a 4-byte magic number ``0 0 type ndim``,
        ``ndim`` big-endian uint32 sizes, then the values in C order.
    source : str
        Where the bytes came from, for error messages.

    Returns
    -------
    ndarray of shape given by the header, in native byte order.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(f"{source}: not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{source}: truncated IDX header")
    shape = tuple(int(v) for v in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(
            f"{source}: IDX header announces shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(data) - header} bytes: the file is truncated or corrupt"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _verify(stem: str, content: bytes, path: Path, checksums: dict[str, str]) -> None:
    digest = hashlib.sha256(content).hexdigest()
    if digest != checksums[stem]:
        raise DataError(
            f"{path}: SHA-256 of the decompressed content is {digest}, expected "
            f"{checksums[stem]}: the file is corrupt or not Fashion-MNIST; delete it and {HOW_TO_GET}"
        )


def find_fashion_mnist(dirs: list[Path] | None = None) -> Path | None:
    """The first directory of ``dirs`` (default: :func:`candidate_dirs`) holding all four files."""
    for directory in dirs if dirs is not None else candidate_dirs():
        if all(_file_in(directory, stem) for stem in FILES.values()):
            return directory
    return None


def download_fashion_mnist(
    dest: Path | str = Path("data") / "fashion-mnist",
    base_url: str = BASE_URL,
    checksums: dict[str, str] = SHA256,
    progress: bool = True,
) -> Path:
    """Download the four gzipped files into ``dest`` and verify them.

    A file is written under its final name only once its checksum is verified, so an
    interrupted or corrupt download never leaves a file that looks valid.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for stem in FILES.values():
        target = dest / (stem + ".gz")
        if target.is_file():
            continue
        url = base_url + stem + ".gz"
        if progress:
            print(f"downloading {url}", file=sys.stderr)
        try:
            with urllib.request.urlopen(url, timeout=60) as response:
                payload = response.read()
        except OSError as err:
            raise DataError(f"cannot download {url} ({err}); {HOW_TO_GET}") from err
        try:
            content = gzip.decompress(payload)
        except (OSError, EOFError) as err:
            raise DataError(f"{url}: the download is not a valid gzip file ({err})") from err
        _verify(stem, content, Path(url), checksums)
        with tempfile.NamedTemporaryFile(dir=dest, delete=False) as tmp:
            tmp.write(payload)
        os.replace(tmp.name, target)
    return dest


def fashion_mnist_dir(download: bool = True) -> Path:
    """The directory holding Fashion-MNIST, downloading it if allowed and needed."""
    found = find_fashion_mnist()
    if found is not None:
        return found
    looked = ", ".join(str(d) for d in candidate_dirs())
    if not download:
        raise DataError(f"Fashion-MNIST not found (looked in {looked}); {HOW_TO_GET}")
    return download_fashion_mnist()


def load_fashion_mnist(
    root: Path | str | None = None,
    download: bool = True,
    checksums: dict[str, str] | None = SHA256,
) -> FashionMNIST:
    """Load Fashion-MNIST :cite:`xiao2017fashion` as NumPy arrays.

    Parameters
    ----------
    root : path, optional
        Directory holding the four IDX files (plain or ``.gz``). Default: the first of
        :func:`candidate_dirs` that has them, else a download.
    download : bool
        Whether a download is allowed when no directory has the files.
    checksums : dict or None
        Expected SHA-256 of each decompressed file; ``None`` skips verification (for
        small test files).

    Returns
    -------
    FashionMNIST
        ``x_train`` (60000, 28, 28) uint8, ``y_train`` (60000,) int64, ``x_test``
        (10000, 28, 28) uint8, ``y_test`` (10000,) int64. Unpacks as a 4-tuple.
    """
    directory = Path(root) if root is not None else fashion_mnist_dir(download)
    arrays = {}
    for key, stem in FILES.items():
        path = _file_in(directory, stem)
        if path is None:
            raise DataError(f"{directory}: missing {stem} (or {stem}.gz); {HOW_TO_GET}")
        content = read_bytes(path)
        if checksums is not None:
            _verify(stem, content, path, checksums)
        arrays[key] = parse_idx(content, str(path))
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(
                f"{directory}: {split} images {images.shape} and labels {labels.shape} do not match"
            )
    return FashionMNIST(
        x_train=arrays["train_images"],
        y_train=arrays["train_labels"].astype(np.int64),
        x_test=arrays["test_images"],
        y_test=arrays["test_labels"].astype(np.int64),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnlab.data", description=__doc__.split("\n")[0])
    parser.add_argument("--no-download", action="store_true", help="fail instead of downloading")
    parser.add_argument("--verify", action="store_true", help="also verify the checksums")
    args = parser.parse_args(argv)
    try:
        directory = fashion_mnist_dir(download=not args.no_download)
        if args.verify:
            load_fashion_mnist(directory)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Fashion-MNIST: {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
