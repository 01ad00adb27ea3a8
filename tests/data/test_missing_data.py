"""The missing-files and failed-download error of every downloadable dataset: the message names
the dataset, the folder, the expected layout, the official URL and the config keys; a failed
download removes the folders it created and keeps a folder that existed as it was."""

import os
import urllib.error
from dataclasses import dataclass

import pytest

from ccrop.config import ConfigError
from ccrop.data import build_dataset


@dataclass(frozen=True)
class Case:
    """One downloadable dataset, as its error message and download should describe it."""

    name: str  # the registry name, the message's first word
    split: str  # the split asked for; ``layout`` names its files
    url: str  # the official archive (or folder of files): named, and fetched first
    layout: tuple[str, ...]  # words of the expected layout the message names
    existing: dict[str, bytes | None]  # a partial copy below root: path -> bytes (None: folder)
    checksum: bool = True  # torchvision checks the archive's md5 (a corrupt one: RuntimeError)


KRIZ = "https://www.cs.toronto.edu/~kriz"
CASES = [
    Case("cifar10", "test", f"{KRIZ}/cifar-10-python.tar.gz",
         ("cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}",),
         {"other": None, "other/notes.txt": b"mine", "cifar-10-python.tar.gz.old": b"kept"}),
    Case("cifar100", "train", f"{KRIZ}/cifar-100-python.tar.gz",
         ("cifar-100-python/{train, test, meta}",),
         {"cifar-100-python": None, "cifar-100-python/meta": b"names only"}),
    Case("stl10", "train", "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
         ("stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin",),
         {"stl10_binary": None, "stl10_binary/class_names.txt": b"a b"}),
    Case("tiny-imagenet", "train", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
         ("tiny-imagenet-200/{wnids.txt, train/<wnid>/images/*.JPEG",),
         {"imagenet": None, "readme.txt": b"mine"}, checksum=False),  # a zip without an md5
    Case("fashion-mnist", "train", "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
         ("train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]", "FashionMNIST/raw/"),
         {"FashionMNIST": None, "FashionMNIST/raw": None,
          "FashionMNIST/raw/train-labels-idx1-ubyte": b"only the labels"}),  # images missing
]  # fmt: skip
IDS = [c.name for c in CASES]


def _offline(monkeypatch, corrupt=False):
    """Make torchvision's downloads fail as without network: each fetch writes a partial archive,
    then raises URLError (or, with ``corrupt``, returns so torchvision's checksum fails).
    Returns the list of URLs tried."""
    from torchvision.datasets import utils

    fetched = []

    def urlretrieve(url, filename, chunk_size=0):
        fetched.append(url)
        with open(filename, "wb") as f:
            f.write(b"half an archive")
        if not corrupt:
            raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(utils, "_urlretrieve", urlretrieve)
    return fetched


def _tree(root):
    """Every path below root (relative), with the bytes of the files (None for folders)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes() if p.is_file() else None
        for p in root.rglob("*")
    }


@pytest.mark.parametrize("corrupt", [False, True], ids=["offline", "corrupt"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_failed_download_removes_the_folders_it_created(tmp_path, monkeypatch, case, corrupt):
    fetched = _offline(monkeypatch, corrupt)
    root = tmp_path / "data" / case.name  # neither folder exists yet
    with pytest.raises(ConfigError) as err:
        build_dataset(case.name, root, split=case.split, download=True)
    assert fetched and fetched[0].startswith(case.url), fetched
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg  # torchvision's text is joined
    assert msg.startswith(f"{case.name}: downloading {case.url}")
    assert f" into {root} (data.root) failed" in msg
    # a corrupt archive: torchvision's checksum (RuntimeError), else the unpacking (BadZipFile)
    reason = ("RuntimeError" if case.checksum else "BadZipFile") if corrupt else \
        "Name or service not known"
    assert reason in msg, msg
    assert all(word in msg for word in case.layout), msg
    assert "data.download=true" in msg and "data.root=<folder>" in msg
    assert os.listdir(tmp_path) == []  # data/, data/<name>, the partial archive: all gone


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_failed_download_keeps_a_folder_that_existed(tmp_path, monkeypatch, case):
    fetched = _offline(monkeypatch)
    for path, content in case.existing.items():  # parents first
        if content is None:
            (tmp_path / path).mkdir()
        else:
            (tmp_path / path).write_bytes(content)
    before = _tree(tmp_path)
    assert before == case.existing
    with pytest.raises(ValueError, match=f"{case.name}: downloading .* failed"):
        build_dataset(case.name, tmp_path, split=case.split, download=True)
    assert fetched
    assert _tree(tmp_path) == before  # same paths, same bytes; the partial archive is gone


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_missing_files_without_download_name_the_config_keys(tmp_path, case):
    root = tmp_path / "nowhere"
    with pytest.raises(ConfigError) as err:
        build_dataset(case.name, root, split=case.split)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert msg.startswith(f"{case.name}: dataset files not found in {root} (data.root)")
    assert all(word in msg for word in case.layout), msg
    assert "Set data.download=true" in msg and "data.root=<folder>" in msg and case.url in msg
    assert "pass download=True" not in msg and "download=True fetches" not in msg  # old texts
    assert not root.exists()  # nothing is created without download
