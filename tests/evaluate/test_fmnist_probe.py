"""Fast linear probe on real data (Fashion-MNIST from the Debian package; skipped when absent):
a briefly SimCLR-trained encoder must beat the same encoder at random initialisation."""

import pytest
import torch
from torch.utils.data import DataLoader, Subset

from ccrop.boxes import BoxStore
from ccrop.data import DATASET_INFO, build_dataset
from ccrop.data.boxed import BoxedDataset, LabeledImages
from ccrop.data.views import EvalTransform, build_view_transform
from ccrop.evaluate.linear import run_fast_probe
from ccrop.methods import build_method
from ccrop.models import build_backbone

pytestmark = pytest.mark.slow  # six SimCLR epochs on 2048 images


def _fmnist(split, n):
    try:
        return Subset(build_dataset("fashion-mnist", split=split), range(n))
    except (FileNotFoundError, ValueError) as err:
        pytest.skip(f"Fashion-MNIST not installed (apt-get install dataset-fashion-mnist): {err}")


def test_fast_probe_trained_beats_random_on_fashion_mnist():
    torch.manual_seed(0)
    info = DATASET_INFO["fashion-mnist"]
    train, test = _fmnist("train", 2048), _fmnist("test", 1000)
    ev = EvalTransform(info["mean"], info["std"])
    probe_train = DataLoader(LabeledImages(train, ev), 256)
    probe_test = DataLoader(LabeledImages(test, ev), 256)
    backbone = build_backbone("resnet18", width=8)
    random_init = run_fast_probe(backbone, probe_train, probe_test, 10, "cpu")["top1"]

    method = build_method("simclr", backbone, proj_hidden=128, proj_dim=64)
    # lr 0.2 x 6 epochs: gains of 5.9-14.0 points over seeds 0-5; 3 epochs at lr 0.5 were
    # chaotic (gains of 0.2-8.9, so a float-rounding change could flip the test)
    opt = torch.optim.SGD(method.parameters(), 0.2, momentum=0.9, weight_decay=1e-4)
    views = build_view_transform("cifar", "rcrop", 32, info["mean"], info["std"])
    ds = BoxedDataset(train, BoxStore(len(train)), views, seed=0)
    for epoch in range(6):
        ds.set_epoch(epoch)
        for _, (x1, x2), _ in DataLoader(ds, 128, shuffle=True, drop_last=True):
            loss = method(x1, x2)["loss"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    trained = run_fast_probe(backbone, probe_train, probe_test, 10, "cpu")
    assert trained["protocol"].startswith("linear-fast")
    print(f"fast probe on Fashion-MNIST: random init {random_init:.2f}%, "
          f"6 SimCLR epochs {trained['top1']:.2f}%")
    assert 10 + 20 < random_init < trained["top1"] - 2
