"""Command line: ``ccrop pretrain | knn | linear | boxes | viz | ab | compare | bench | configs``.

Bad input or a failing disk: one ``ccrop: error: ...`` line, exit code 2; a non-finite loss: exit
code 1; any other exception is a bug and keeps its traceback (docs/reliability.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError
from .config import ConfigError
from .errors import CcropError, DataError, DataPathError, is_environment_error

#: The README's demo: synthetic objects, tiny ResNet-18, SimCLR + ContrastiveCrop (~3 min, 2 CPUs).
DEMO_OVERRIDES = [
    "data.dataset=synthetic", "data.dataset_kwargs.num_images=1536",
    "data.test_num_images=6000", "data.batch_size=256",
    "data.num_workers=2", "model.width=16", "method.name=simclr", "crop.alpha=0.6",
    "crop.warmup_epochs=3", "crop.loc_interval=3", "optim.lr=0.5", "train.epochs=10",
    "train.out_dir=runs/demo", "train.knn_every=5",
]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ccrop", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    helps = {"pretrain": "self-supervised pretraining (default: synthetic demo)",
             "knn": "weighted kNN accuracy (k=200, T=0.1) of a checkpoint",
             "linear": "linear evaluation of a checkpoint",
             "boxes": "localize boxes with a checkpoint's encoder",
             "viz": "figures: heatmaps, boxes, crops, centre distribution",
             "ab": "seeded A/B of named arms: train, then the compare table",
             "compare": "A/B table (and kNN band figure) of run or A/B folders",
             "bench": "speed benchmarks (JSON)",
             "configs": "list the packaged paper configs (usable as --config NAME)"}
    p = {name: sub.add_parser(name, help=text) for name, text in helps.items()}
    for name in ("pretrain", "knn", "linear", "boxes", "viz", "ab", "bench"):
        p[name].add_argument("--config", help="YAML config (only the keys to change; configs/)")
        p[name].add_argument("overrides", nargs="*", metavar="key=value",
                             help="dotted config overrides")
    p["pretrain"].add_argument("--resume",
                               help="'auto' (newest valid checkpoint in train.out_dir) or a path")
    for name in ("knn", "linear", "boxes", "viz"):
        p[name].add_argument("--checkpoint", required=name != "viz",
                             help="checkpoint file (viz: optional, random encoder without)")
    p["linear"].add_argument("--fast", action="store_true", help="cached-feature probe "
                             "(protocol 'linear-fast'), minutes not hours")
    p["linear"].epilog = ("protocol settings are config keys, e.g. eval.linear_epochs=100 "
                          "eval.linear_lr=10 (default 10; 30 with data.recipe=imagenet) "
                          "eval.linear_milestones=[60,80] eval.linear_batch_size=256 "
                          "eval.linear_weight_decay=0")
    p["boxes"].add_argument("--out", help="export the boxes: .csv (index[,path],x0,y0,x1,y1), "
                            ".json (COCO-style) or .pt; read back with crop.box_source=file:PATH")
    p["viz"].add_argument("--out", default="figures", help="output folder")
    p["viz"].add_argument("--num", type=int, default=6, help="images in the heatmap figure")
    p["ab"].add_argument("--arms", default="rcrop,ccrop",
                         help="comma list, first = baseline: built-ins rcrop, ccrop, simccrop, "
                              "oracle, ccrop-paper, saliency-warmup, saliency, or custom "
                              "name:key=value,key=value (default rcrop,ccrop)")
    p["ab"].add_argument("--seeds", default="3", help="N (seeds 0..N-1) or a list like 0,1,2")
    p["ab"].add_argument("--out", default="runs/ab", help="A/B folder: <out>/<arm>/seed<s>, ab.md")
    p["ab"].add_argument("--linear-fast", action="store_true",
                         help="also the cached-feature linear probe of each run (a column)")
    p["compare"].add_argument("runs", nargs="*", help="run folders or A/B folders; the first "
                              "arm is the baseline of the paired differences")
    p["compare"].add_argument("--out", help="PNG of kNN accuracy per epoch (mean and band per "
                              "arm); with --paper: the markdown file to write")
    p["compare"].add_argument("--paper", action="store_true", help="the paper-reproduction "
                              "table (docs/reproduce.md) with 'ours' filled from the runs given")
    p["bench"].add_argument("--out", help="write the JSON here too")
    p["bench"].add_argument("--steps", type=int, default=5, help="timed training steps per variant")
    p["bench"].add_argument("--no-compile", action="store_true",
                            help="skip the torch.compile variant")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``ccrop`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        globals()[f"cmd_{args.command}"](args)  # every sub-command NAME has its cmd_NAME
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (silence the exit-time flush)
        return 0
    except KeyboardInterrupt:
        print("ccrop: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        from .engine import NonFiniteLossError

        user = is_user_error(err)  # bad input or a failing disk: one line, exit code 2
        if not (user or isinstance(err, NonFiniteLossError)):  # diverged training: exit code 1
            raise  # anything else is a bug: Python prints its traceback, exit code 1
        print(f"ccrop: error: {_one_line(err)}", file=sys.stderr)
        return 2 if user else 1
    return 0


def is_user_error(err: BaseException) -> bool:
    """Whether ``ccrop`` reports ``err`` as one line with exit code 2: ``ccrop.errors``'
    family or an ``OSError`` of a failing environment."""
    return isinstance(err, CcropError) or is_environment_error(err)


def _one_line(err: BaseException) -> str:
    """The error as one line; a DataLoader worker's traceback becomes its last line + the worker."""
    text = str(err).strip()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and "Traceback" in text:
        return f"{lines[-1].split(': ', 1)[-1]} ({lines[0].rstrip('.')})"
    return " ".join(ln.strip() for ln in lines) or type(err).__name__


def _output_path(flag: str, path: str, folder: bool = False) -> Path:
    """A user-given output file (or ``folder``), checked before any work (``ConfigError``);
    missing folders are created later."""
    from .files import output_problem

    out = Path(path).expanduser()
    if problem := output_problem(out, folder):
        raise ConfigError(f"{flag} {path!r}: {problem}")
    return out


def _require_positive(flag: str, value: int) -> None:
    """A count argument (``--num``, ``--steps``) of 1 or more, checked before any work."""
    if value < 1:
        raise ConfigError(f"{flag} must be >= 1, got {value}")


def _config(args: argparse.Namespace):
    """The config of ``--config`` and the overrides; without ``--config`` the demo preset."""
    from .config import load_config

    return load_config(args.config, _overrides(args))


def _overrides(args: argparse.Namespace) -> list[str]:
    """The overrides given; without ``--config`` under the demo preset, less its synthetic-only
    keys for another dataset and its test split size when the user sizes the set."""
    user = list(args.overrides)
    if args.config is not None:
        return user
    drop = []
    if any(o.startswith("data.dataset=") and o != "data.dataset=synthetic" for o in user):
        drop = ["data.dataset_kwargs.", "data.test_num_images"]
    elif any(o.startswith("data.dataset_kwargs.num_images=") for o in user):
        drop = ["data.test_num_images"]
    return [o for o in DEMO_OVERRIDES if not o.startswith(tuple(drop))] + user


def cmd_pretrain(args: argparse.Namespace) -> dict[str, Any]:
    """Pretrain; prints the final kNN accuracy and box IoU (synthetic data)."""
    from . import dist
    from .build import build_run
    from .engine import fit
    from .reproduce import write_command
    from .runtime import bars_enabled

    cfg = _config(args)
    dist.init_from_env(cfg.train.device)
    main_process = dist.is_main_process()
    try:
        with bars_enabled(cfg.train.progress):  # train.progress=false: no bar at all
            run = build_run(cfg, args.resume)
            if main_process:
                write_command(run.run_dir, args.config, list(args.overrides),
                              ["ccrop", *sys.argv[1:]])
            summary = fit(run)
    finally:
        dist.cleanup()
    if main_process:
        lines = [line.format(**summary) for key, line in _SUMMARY_LINES.items() if key in summary]
        print("\n".join([f"run folder: {cfg.train.out_dir}", *lines]))
    return summary


#: The lines ``ccrop pretrain`` prints: summary key -> its line, when the summary has the key.
_SUMMARY_LINES = {
    "knn_top1": "kNN top-1 (k={knn_k}, T={knn_temperature}, protocol 'knn'): {knn_top1:.2f}%",
    "box_iou_gt": "box IoU vs ground truth: {box_iou_gt:.3f} (full-image boxes: "
                  "{full_box_iou_gt:.3f}); box updates after epochs {box_updates}",
    "fallback_share": "boxes that fell back to the full image (low confidence) at the last "
                      "update: {fallback_share:.1%}",
    "box_figure": "boxes, heatmaps and crops after the last update: {box_figure}",
    "time": "time: {epochs} epochs trained in {time[train_s]:.1f} s (median epoch "
            "{time[median_epoch_s]:.2f} s), box updates {time[box_update_s]:.1f} s"}


def _eval_setup(args: argparse.Namespace):
    """Config (the checkpoint's under ``--config`` and overrides), backbone with its weights
    (eval mode, on the device), checkpoint state (None: viz without one), ``Evaluator``, device;
    the global RNGs are seeded from ``train.seed`` (linear protocol, viz's random encoder)."""
    from .build import build_data, build_evaluator, config_backbone, resolve_device, seed_everything
    from .checkpoint import load_backbone_state, load_checkpoint
    from .config import load_config

    state = None if args.checkpoint is None else load_checkpoint(args.checkpoint)
    if state is None:
        cfg = _config(args)
    elif not isinstance(state.get("config"), dict):  # the architecture is unknown without it
        raise CheckpointError(f"checkpoint {args.checkpoint!r} has no saved run config "
                              "('config', a dict: every checkpoint of ccrop pretrain has one)")
    else:
        cfg = load_config(args.config, list(args.overrides), base=state["config"])
    seed_everything(cfg.train.seed)
    backbone = config_backbone(cfg)  # every model key (timm/tv archs, kwargs, image size)
    if state is not None:
        load_backbone_state(backbone, state["model"], source=args.checkpoint)
    device = resolve_device(cfg.train.device)
    evaluator = build_evaluator(cfg, build_data(cfg))
    return cfg, backbone.to(device).eval(), state, evaluator, device


def _record(args, cfg, state, evaluator, result: dict[str, Any]) -> None:
    """Report skipped images and print the result; append it to ``<run>/results.jsonl`` only
    when the checkpoint lies in ``<run>/checkpoints/`` next to ``<run>/config.yaml``."""
    from .evaluate.results import RESULTS_FILE, append_result

    evaluator.data.report_bad_images()  # data.on_bad_image=skip: one line per split
    rec = {**result, "dataset": cfg.data.dataset, "split": cfg.data.test_split,
           "checkpoint": str(args.checkpoint), "epoch": state["epoch"]}
    folder = Path(args.checkpoint).resolve().parent
    if folder.name == "checkpoints" and (folder.parent / "config.yaml").is_file():
        append_result(folder.parent, rec)
    else:
        print(f"ccrop: note: {RESULTS_FILE} not written: checkpoint {str(args.checkpoint)!r} "
              "is not inside a run folder (<run>/checkpoints/ next to <run>/config.yaml)",
              file=sys.stderr)
    print(json.dumps(rec))


def cmd_knn(args: argparse.Namespace) -> None:
    """kNN accuracy of a checkpoint's backbone on the config's test split."""
    cfg, backbone, state, evaluator, device = _eval_setup(args)
    result = evaluator.knn(backbone, device, progress=cfg.train.progress)
    _record(args, cfg, state, evaluator, result)


def cmd_linear(args: argparse.Namespace) -> None:
    """Linear evaluation: the official protocol, or ``--fast`` on cached features (with
    ``data.pipeline=gpu`` on a small set the protocol's augmentation runs on the device)."""
    from .evaluate.linear import run_fast_probe, run_linear

    cfg, backbone, state, evaluator, device = _eval_setup(args)
    d, t, e, classes = cfg.data, cfg.train, cfg.eval, evaluator.data.num_classes
    test = evaluator.eval_batches(d.test_split, device)
    speed = dict(amp=t.amp, channels_last=t.channels_last, progress=t.progress)
    if args.fast:
        train = evaluator.eval_batches(d.eval_train_split, device)
        res = run_fast_probe(backbone, train, test, classes, device, **speed)
    else:
        train = evaluator.eval_batches(d.eval_train_split, device, train=True,
                                       batch_size=e.linear_batch_size)
        res = run_linear(backbone, train, test, classes, device,
                         epochs=e.linear_epochs, lr=e.linear_lr_or_default(d.recipe),
                         weight_decay=e.linear_weight_decay, milestones=e.linear_milestones,
                         **speed)
    _record(args, cfg, state, evaluator, res)


def cmd_boxes(args: argparse.Namespace) -> None:
    """Localize every training image with the checkpoint's encoder; print the statistics and
    optionally export the boxes (``--out`` .csv, COCO-style .json or .pt)."""
    from .box_files import check_output_path, write_boxes
    from .boxes import BoxStore
    from .build import dataset_paths
    from .data.sources import loc_loader
    from .localize import localize_dataset
    from .runtime import bars_enabled

    out = check_output_path(args.out) if args.out else None  # before the pass, not after
    cfg, backbone, _, evaluator, device = _eval_setup(args)
    data = evaluator.data
    loader = loc_loader(data.train, data.mean, data.std, cfg.crop.loc_batch_size,
                        cfg.data.num_workers, cfg.data.loc_image_size)
    store = BoxStore(len(data.train))
    with bars_enabled(cfg.train.progress):  # train.progress=false: no bar at all
        stats = localize_dataset(cfg.crop, backbone, loader, store, device,
                                 gt_boxes=data.gt_boxes, progress=cfg.train.progress)
    data.report_bad_images()  # data.on_bad_image=skip: one line per split
    if out is not None:
        paths = dataset_paths(data.train)
        stats["out"] = str(write_boxes(out, store.boxes.clone(), paths,
                                       _image_sizes(data.train, paths)))
    print(json.dumps(stats))


def _image_sizes(dataset: Any, paths: list[str] | None) -> list[tuple[int, int]] | None:
    """(h, w) of every image for a COCO-style export: file headers of a folder dataset, else
    the first image's size for all (array datasets hold one size)."""
    if paths is None:
        first = dataset[0][0]
        return [(first.height, first.width)] * len(dataset) if hasattr(first, "height") else None
    from PIL import Image

    sizes = []
    for path in paths:
        try:
            with Image.open(path) as img:  # reads the header only
                sizes.append((img.height, img.width))
        except OSError as err:  # missing, or not an image (PIL's UnidentifiedImageError)
            if is_environment_error(err):
                raise
            kind = DataPathError if isinstance(err, FileNotFoundError) else DataError
            raise kind(f"{path}: cannot read the image size for --out ({err})") from err
    return sizes


def cmd_viz(args: argparse.Namespace) -> None:
    """Heatmap/box/crop figure for a few images and the crop-centre distribution figure."""
    import torch

    from . import viz

    _require_positive("--num", args.num)
    out = _output_path("--out", args.out, folder=True)
    cfg, backbone, _, evaluator, device = _eval_setup(args)
    data = evaluator.data
    out.mkdir(parents=True, exist_ok=True)
    idx = torch.linspace(0, len(data.train) - 1, min(args.num, len(data.train))).long().tolist()
    print(viz.config_localization_figure(cfg.crop, backbone, data.train, idx,
                                         out / "localization.png", device=device, mean=data.mean,
                                         std=data.std, gt_boxes=data.gt_boxes,
                                         image_size=cfg.data.loc_image_size))
    print(viz.plot_centre_distribution(out / "centre_distribution.png"))


def cmd_ab(args: argparse.Namespace) -> dict[str, Any] | None:
    """Train every arm on every seed (resumable), then print the compare table (``ab.md``)."""
    from . import dist
    from .ab import parse_arms, parse_seeds, report, run_ab

    arms, seeds = parse_arms(args.arms), parse_seeds(args.seeds)
    _output_path("--out", args.out, folder=True)
    dist.init_from_env(_config(args).train.device)
    try:  # without --config the demo preset, exactly as `ccrop pretrain`
        groups = run_ab(args.config, _overrides(args), arms, seeds, args.out,
                        linear_fast=args.linear_fast)
        main_process = dist.is_main_process()
    finally:
        dist.cleanup()
    if not main_process:
        return None
    markdown, data = report(groups, args.out)
    print(f"\n{markdown}\nwritten: {Path(args.out) / 'ab.md'}, ab.json, ab_knn.png")
    return data


def cmd_compare(args: argparse.Namespace) -> dict[str, Any]:
    """The A/B table of run folders grouped by arm (first = baseline); optional band figure."""
    from .ab import collect_groups, plot_bands, report

    out = _output_path("--out", args.out) if args.out else None
    if args.paper:
        from .reproduce import reproduce_table

        table = reproduce_table(args.runs)
        if out is not None:
            _write(out, table)
        print(table, end="")
        return {"table": table}
    if not args.runs:
        raise ConfigError("ccrop compare needs at least one run folder (or --paper)")
    markdown, data = report(collect_groups(args.runs))
    print(markdown, end="")
    if out is not None:
        print(plot_bands(data, out))
    return data


def cmd_bench(args: argparse.Namespace) -> None:
    """Speed benchmarks of a config; prints JSON (and writes ``--out``)."""
    from .bench import run_bench

    _require_positive("--steps", args.steps)
    out = _output_path("--out", args.out) if args.out else None
    cfg = _config(args)
    result = run_bench(cfg, steps=args.steps, compiled=not args.no_compile)
    text = json.dumps(result, indent=2)
    if out is not None:
        _write(out, text + "\n")
    print(text)


def _write(out: Path, text: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def cmd_configs(args: argparse.Namespace) -> None:
    """Print every packaged config with the first line of its description."""
    from .config import PACKAGED_CONFIGS, packaged_configs

    names = packaged_configs()
    width = max((len(n) for n in names), default=0)
    for name in names:
        first = (PACKAGED_CONFIGS / name).read_text().splitlines()[:1] or [""]
        print(f"{name:<{width}}  {first[0].lstrip('# ').strip()}")
    print(f"\n{len(names)} configs in {PACKAGED_CONFIGS}; use e.g. "
          f"`ccrop pretrain --config {names[0] if names else 'NAME'}`")


if __name__ == "__main__":
    sys.exit(main())
