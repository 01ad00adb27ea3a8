"""SimCLR as a LightningModule (lightly's head and loss) with ContrastiveCrop's box callback.

Usage (``pip install -e ".[lightning]"`` and ``pip install --no-deps lightly``), on the CPU:
    python examples/lightning_simclr.py --epochs 10 --num-images 1536 --out runs/lightning
    python examples/lightning_simclr.py --epochs 4 --devices 2   # DDP, 2 CPU processes (gloo)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from ccrop import BoxStore
from ccrop.boxes import box_iou
from ccrop.data import DATASET_INFO, build_dataset
from ccrop.data.boxed import IndexedImages
from ccrop.data.views import EvalTransform
from ccrop.lightning import ContrastiveCropCallback
from ccrop.models import build_backbone
from ccrop.transforms import BoxedSamples, ContrastiveCrop

MEAN, STD = DATASET_INFO["synthetic"]["mean"], DATASET_INFO["synthetic"]["std"]


class SimCLR(pl.LightningModule):
    """SimCLR: ccrop's CIFAR-stem ResNet-18, lightly's projection head and NT-Xent loss.

    Args:
        width: first-stage channels of the ResNet-18 (64: standard; 16 here for the CPU).
        lr: SGD learning rate.
        epochs: cosine schedule length.
    """

    def __init__(self, width: int = 16, lr: float = 0.06, epochs: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = build_backbone("resnet18", "cifar", width=width)  # (B,3,H,W) -> (B,D)
        self.head = SimCLRProjectionHead(self.backbone.feat_dim, 512, 128)  # (B,D) -> (B,128)
        self.criterion = NTXentLoss(temperature=0.5, gather_distributed=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Projections (B, 128) of images (B, 3, H, W)."""
        return self.head(self.backbone(x))

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        """NT-Xent loss () of a batch ``(indices (B,), [views (B, 3, H, W)] * 2, labels (B,))``."""
        _, (x0, x1), _ = batch
        loss = self.criterion(self(x0), self(x1))
        self.log("train_loss", loss, prog_bar=True, sync_dist=True, batch_size=x0.shape[0])
        return loss

    def configure_optimizers(self) -> dict:
        """SGD with momentum and a cosine learning rate over the epochs."""
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9,
                              weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, self.hparams.epochs))
        return {"optimizer": opt, "lr_scheduler": sched}


def main(argv: list[str] | None = None) -> tuple[BoxStore, ContrastiveCropCallback]:
    """Pretrain and print the boxes' IoU with the true boxes.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).

    Returns:
        ``(store, callback)``: the (N, 4) boxes and the callback (``callback.history``).
    """
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--num-images", type=int, default=1536)
    p.add_argument("--max-steps", type=int, default=0,
                   help="training batches per epoch (Trainer's limit_train_batches); 0: all")
    p.add_argument("--out", default="runs/lightning_simclr",
                   help="folder for the CSV logs, the checkpoint and boxes.pt")
    p.add_argument("--warmup", type=int, default=3, help="epochs of plain RandomResizedCrop")
    p.add_argument("--interval", type=int, default=3, help="epochs between box updates")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--width", type=int, default=16, help="ResNet-18 width (64: standard)")
    p.add_argument("--workers", type=int, default=2, help="training DataLoader workers")
    p.add_argument("--devices", type=int, default=1, help="CPU processes (>1: DDP with gloo)")
    args = p.parse_args(argv)
    pl.seed_everything(0)
    out = Path(args.out)

    dataset = build_dataset("synthetic", split="train", num_images=args.num_images,
                            image_size=32)  # (PIL image, label); dataset.gt_boxes (N, 4)
    store = BoxStore(len(dataset))  # full-image boxes until the first update: RRC warm-up
    views = v2.Compose([
        ContrastiveCrop(32, alpha=0.6), v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), v2.RandomGrayscale(0.2),
        v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])
    train = DataLoader(BoxedSamples(dataset, store, views), args.batch_size, shuffle=True,
                       drop_last=True, num_workers=args.workers,
                       persistent_workers=args.workers > 0)  # workers read the shared store
    plain = DataLoader(IndexedImages(dataset, EvalTransform(MEAN, STD)), 256)  # (index, image)
    boxes = ContrastiveCropCallback(store, plain, encoder="backbone", warmup_epochs=args.warmup,
                                    interval=args.interval, gt_boxes=dataset.gt_boxes)

    trainer = pl.Trainer(
        accelerator="cpu", devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto", max_epochs=args.epochs,
        limit_train_batches=args.max_steps or 1.0, callbacks=[boxes],
        logger=CSVLogger(out, name="logs"), default_root_dir=out,
        enable_model_summary=False, enable_progress_bar=False, log_every_n_steps=1)
    trainer.fit(SimCLR(args.width, epochs=args.epochs), train)

    iou = float(box_iou(store.boxes, dataset.gt_boxes).mean())
    if trainer.is_global_zero:
        for epoch, s in boxes.history:
            print(f"boxes after epoch {epoch}: IoU with gt {s['iou_gt']:.3f}, mean area "
                  f"{s['mean_area']:.2f}, full-image share {s['full_share']:.2f}")
        torch.save(store.state_dict(), out / "boxes.pt")
        print(f"box IoU with the true boxes after training: {iou:.3f} "
              f"({len(boxes.history)} updates, {len(store)} images)")
    return store, boxes


if __name__ == "__main__":
    main()
