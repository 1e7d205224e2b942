"""Fashion-MNIST as a LightningDataModule, read from the idx files (Debian's
``dataset-fashion-mnist`` package) with a small strict reader."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from nas_aug.data._arrays import ArrayDataModule, Arrays

DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"

# idx type codes (third byte of the magic number) -> big-endian numpy dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """The array in an idx file (gzip'd or plain, told apart by content), in native byte order.

    The header is checked strictly: two zero bytes, a known type code, ``ndim`` dimensions when
    given, and exactly as many data bytes as the dimensions say. A bad file raises ValueError
    naming it.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = Path(tmp, "labels-idx1-ubyte")
    ...     _ = path.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
    ...     read_idx(path, ndim=1)
    array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(f"{path}: corrupt gzip data ({error})") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: not an idx file (magic number {raw[:4].hex() or 'missing'}; expected "
            f"0000TTNN with type code TT in {sorted(f'{c:02x}' for c in _IDX_DTYPES)})"
        )
    dtype, file_ndim = _IDX_DTYPES[raw[2]], raw[3]
    if ndim is not None and file_ndim != ndim:
        raise ValueError(f"{path}: idx file has {file_ndim} dimensions, expected {ndim}")
    header = 4 + 4 * file_ndim
    if len(raw) < header:
        raise ValueError(f"{path}: idx header truncated ({len(raw)} bytes, expected {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=file_ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path}: idx shape {shape} needs {expected} bytes, file has {len(raw)} "
            "(truncated or corrupt)"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # a writable copy in native byte order


def _find(root: Path) -> dict[str, Path] | None:
    """The four idx files in ``root`` or in torchvision's ``root/FashionMNIST/raw``."""
    for folder in (root, root / "FashionMNIST" / "raw"):
        found = {}
        for key, stem in _STEMS.items():
            candidates = [folder / stem, folder / f"{stem}.gz"]  # plain reads faster
            found[key] = next((c for c in candidates if c.is_file()), None)
        if all(found.values()):
            return found
    return None


def _download(root: Path) -> dict[str, Path] | None:
    from torchvision.datasets import FashionMNIST  # heavy: imported only when downloading

    FashionMNIST(str(root), download=True)  # writes root/FashionMNIST/raw/*-ubyte[.gz]
    return _find(root)


def read_fashion_mnist(root: str | Path = DEFAULT_ROOT, download: bool = False) -> Arrays:
    """The official training (60000) and test (10000) sets as uint8 ``(N, 28, 28)`` images and
    labels, read from the idx files in ``root``; torchvision downloads them into ``root`` first
    when they are missing and ``download`` is true."""
    root = Path(root)
    files = _find(root)
    if files is None and download:
        files = _download(root)
    if files is None:
        names = ", ".join(f"{stem}[.gz]" for stem in _STEMS.values())
        raise FileNotFoundError(
            f"Fashion-MNIST not found in {root} (looked for {names} there and in "
            f"{root / 'FashionMNIST' / 'raw'}). Either install Debian's package "
            f"(`sudo apt-get install dataset-fashion-mnist`, or `make data`), which puts it in "
            f"{DEFAULT_ROOT}, or pass download=True with a writable root to let "
            "torchvision download it (needs internet)."
        )
    arrays = {}
    for split in ("train", "test"):
        images = read_idx(files[f"{split}_images"], ndim=3)
        labels = read_idx(files[f"{split}_labels"], ndim=1)
        if images.dtype != np.uint8 or labels.dtype != np.uint8 or images.shape[1:] != (28, 28):
            raise ValueError(
                f"{files[f'{split}_images']}: expected uint8 images of shape (N, 28, 28) and "
                f"uint8 labels, got {images.dtype} {images.shape} and {labels.dtype}"
            )
        if len(images) != len(labels):
            raise ValueError(
                f"{files[f'{split}_images'].parent}: {len(images)} {split} images but "
                f"{len(labels)} labels"
            )
        arrays[split] = images, labels
    return Arrays(*arrays["train"], *arrays["test"])


class FashionMNISTDataModule(ArrayDataModule):
    """Zalando's Fashion-MNIST (60000 + 10000 28x28 grey images, 10 classes) in memory.

    The official 10000 test images are the test split (``test_fraction`` of them, stratified);
    ``heldout_fraction`` of the 60000 training images make the held-out split that
    ``val_dataloader()`` serves to the outer loop of a search, and ``train_fraction`` of the
    rest is trained on (below 1 for quick, low-data runs). Splits are stratified and depend only
    on ``seed``; the training order comes from an :class:`EpochSeededSampler`. ``img_size``
    resizes (bilinear, antialiased) and ``channels=3`` tiles the grey channel, once, in
    :meth:`setup`. Images are float32 ``(channels, img_size, img_size)`` in ``[0, 1]``, labels
    int64. Data is read from ``root`` (Debian's ``dataset-fashion-mnist`` installs it to the
    default); with ``download=True`` missing files are downloaded there by torchvision.

    Args:
        root: the folder the data is read from (default: where Debian's
            ``dataset-fashion-mnist`` puts it).
        batch_size: images per batch, for every split.
        heldout_fraction: the share of the training images in the held-out split.
        train_fraction: the share of the remaining training images trained on.
        test_fraction: the share of the official test images in the test split.
        img_size: resize the images to this side, once, in :meth:`setup` (``None``: keep).
        channels: 1 (grey) or 3 (the grey channel tiled).
        seed: the seed of the splits and of the training order.
        num_workers: data-loader worker processes.
        download: fetch missing files into ``root`` (needs internet).

    Raises:
        ValueError: a fraction or channel count out of range.
        FileNotFoundError: the data is not under ``root`` and ``download`` is off, named
            with the files looked for.

    >>> dm = FashionMNISTDataModule(img_size=32, channels=3, train_fraction=0.1)
    >>> dm.input_shape, dm.num_classes, dm.classes[0]
    ((3, 32, 32), 10, 'T-shirt/top')
    """

    num_classes = 10
    input_shape = (1, 28, 28)
    has_test_set = True
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

    def __init__(
        self,
        root: str | Path = DEFAULT_ROOT,
        batch_size: int = 128,
        heldout_fraction: float = 0.1,
        train_fraction: float = 1.0,
        test_fraction: float = 1.0,
        img_size: int | None = None,
        channels: int = 1,
        seed: int = 0,
        num_workers: int = 0,
        download: bool = False,
    ):
        super().__init__(
            batch_size=batch_size,
            heldout_fraction=heldout_fraction,
            test_fraction=test_fraction,
            train_fraction=train_fraction,
            seed=seed,
            num_workers=num_workers,
            img_size=img_size,
            channels=channels,
        )
        self.root = Path(root)
        self.download = download

    def load_arrays(self) -> Arrays:
        return read_fashion_mnist(self.root, self.download)
