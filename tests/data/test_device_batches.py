"""DeviceLabeledBatches: the evaluation protocols' batches made from a resident dataset."""

import pytest
import torch

from ccrop import dist
from ccrop.data.sources import DeviceLabeledBatches, eval_loader
from ccrop.data.synthetic import SyntheticObjects

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def ds():
    return SyntheticObjects(num_images=50, image_size=16, seed=3)


def test_plain_batches_equal_the_pil_eval_loader(ds):
    dev = DeviceLabeledBatches(ds, MEAN, STD, 16, torch.device("cpu"))
    ref = eval_loader(ds, MEAN, STD, 16, 0)
    assert len(dev) == len(ref) == 4 and len(dev.dataset) == 50
    for (x, y), (xr, yr) in zip(dev, ref):
        assert torch.equal(y, yr.long())
        torch.testing.assert_close(x, xr, atol=1e-6, rtol=0)


def test_train_batches_are_a_fresh_augmented_permutation_every_pass(ds):
    dev = DeviceLabeledBatches(ds, MEAN, STD, 16, torch.device("cpu"), train=True, seed=1)
    assert dev.views.scale == (0.08, 1.0) and dev.views.crop == "rcrop"
    labels = torch.as_tensor(ds.targets)
    passes = []
    for _ in range(2):
        batches = list(dev)
        got = torch.cat([y for _, y in batches])
        assert torch.equal(got.sort().values, labels.sort().values)  # every image once
        assert all(x.shape[1:] == (3, 16, 16) and torch.isfinite(x).all() for x, _ in batches)
        passes.append(batches)
    assert not torch.equal(passes[0][0][0], passes[1][0][0])  # new shuffle and draws
    again = list(DeviceLabeledBatches(ds, MEAN, STD, 16, torch.device("cpu"), train=True,
                                      seed=1))
    assert torch.equal(again[0][0], passes[0][0][0])  # reproducible from the seed
    plain = torch.cat([x for x, _ in DeviceLabeledBatches(ds, MEAN, STD, 50, "cpu")])
    assert not torch.allclose(passes[0][0][0], plain[:16])  # augmented


def test_shards_cover_the_dataset_as_gather_shards_expects(ds, monkeypatch):
    monkeypatch.setattr(dist, "get_world_size", lambda: 3)
    shares = []
    for rank in range(3):
        monkeypatch.setattr(dist, "get_rank", lambda r=rank: r)
        dev = DeviceLabeledBatches(ds, MEAN, STD, 8, torch.device("cpu"), shard=True)
        ys = torch.cat([y for _, y in dev])
        assert ys.shape[0] == 17 and len(dev) == 3  # ceil(50 / 3), padded
        shares.append(ys)
    # padded position q = slot * world + rank holds item q % N: the sampler's order
    rows = torch.stack(shares, dim=1).reshape(-1)[:50]
    assert torch.equal(rows, torch.as_tensor(ds.targets))


def test_bad_arguments_are_rejected(ds):
    with pytest.raises(ValueError, match="batch_size"):
        DeviceLabeledBatches(ds, MEAN, STD, 0, "cpu")
    with pytest.raises(ValueError, match="shard"):
        DeviceLabeledBatches(ds, MEAN, STD, 4, "cpu", train=True, shard=True)
