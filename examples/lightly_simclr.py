"""SimCLR the lightly way (lightly's head and loss, a plain loop) with ccrop's ContrastiveCrop.

ccrop supplies the crop (a torchvision v2 transform), the shared-memory BoxStore, BoxedSamples
and the box update. Run: ``python examples/lightly_simclr.py --epochs 10``.
"""

import argparse

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from ccrop import BoxStore, update_boxes
from ccrop.data import SyntheticObjects
from ccrop.data.boxed import IndexedImages
from ccrop.data.views import EvalTransform
from ccrop.localize import feature_fn
from ccrop.models import build_backbone
from ccrop.schedule import box_update_epochs
from ccrop.transforms import BoxedSamples, ContrastiveCrop

MEAN, STD = (0.3515, 0.3416, 0.3449), (0.1830, 0.1747, 0.1786)  # SyntheticObjects


def main(argv: list[str] | None = None) -> BoxStore:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--images", type=int, default=1536)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps", type=int, default=0, help="max steps per epoch (0: all)")
    p.add_argument("--warmup", type=int, default=3, help="epochs of plain RandomResizedCrop")
    p.add_argument("--interval", type=int, default=3, help="epochs between box updates")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=int, default=16, help="ResNet-18 width (64: standard)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--save", default="", help="write the boxes (BoxStore.state_dict) here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    dataset = SyntheticObjects(args.images, image_size=32, seed=0)  # (PIL image, label)
    store = BoxStore(len(dataset))  # full-image boxes: the crop's guard makes them plain RRC
    views = v2.Compose([
        ContrastiveCrop(32, alpha=0.6), v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(0.2),
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    train = DataLoader(BoxedSamples(dataset, store, views), args.batch_size, shuffle=True,
                       drop_last=True, num_workers=args.workers,
                       persistent_workers=args.workers > 0)  # workers read the shared store
    plain = DataLoader(IndexedImages(dataset, EvalTransform(MEAN, STD)), 256)  # (index, image)

    backbone = build_backbone("resnet18", "cifar", width=args.width)
    model = torch.nn.Sequential(backbone, SimCLRProjectionHead(backbone.feat_dim, 512, 128))
    model.to(device)
    criterion = NTXentLoss(temperature=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9, weight_decay=5e-4)
    updates = box_update_epochs(args.epochs, args.warmup, args.interval)
    for epoch in range(1, args.epochs + 1):
        for step, (_, (x0, x1), _) in enumerate(train):
            loss = criterion(model(x0.to(device)), model(x1.to(device)))  # (B, 128) x 2 -> ()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step + 1 == args.steps:
                break
        print(f"epoch {epoch}/{args.epochs} loss {loss.item():.4f}")
        if epoch in updates:  # re-localize with the current encoder; workers see the new boxes
            s = update_boxes(feature_fn(backbone, (3,)), plain, store, mode="otsu",  # ccrop's
                             region="peak", align="receptive", gt_boxes=dataset.gt_boxes)  # rule
            print(f"boxes after epoch {epoch}: IoU with gt {s['iou_gt']:.3f}, "
                  f"mean area {s['mean_area']:.2f}, full-image share {s['full_share']:.2f}")
    if args.save:
        torch.save(store.state_dict(), args.save)
    return store


if __name__ == "__main__":
    main()
