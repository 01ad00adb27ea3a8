"""Evaluation of frozen backbones: feature extraction, kNN, linear protocols, results log."""

from ccrop.evaluate.features import extract_features, split_batch, top1_percent
from ccrop.evaluate.knn import knn_accuracy, knn_predict, run_knn
from ccrop.evaluate.linear import (
    FAST_PROBE_PROTOCOL,
    LINEAR_LR_IMAGENET,
    LINEAR_LR_SMALL,
    eval_transform,
    evaluate_classifier,
    linear_lr_at,
    linear_milestones,
    linear_train_transform,
    probe_on_features,
    run_fast_probe,
    run_linear,
)
from ccrop.evaluate.results import append_result, read_results

__all__ = [
    "FAST_PROBE_PROTOCOL",
    "LINEAR_LR_IMAGENET",
    "LINEAR_LR_SMALL",
    "append_result",
    "eval_transform",
    "evaluate_classifier",
    "extract_features",
    "knn_accuracy",
    "knn_predict",
    "linear_lr_at",
    "linear_milestones",
    "linear_train_transform",
    "probe_on_features",
    "read_results",
    "run_fast_probe",
    "run_knn",
    "run_linear",
    "split_batch",
    "top1_percent",
]
