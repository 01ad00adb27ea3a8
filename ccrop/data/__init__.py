"""Datasets (CIFAR, STL-10, Tiny ImageNet, image folders, Fashion-MNIST, synthetic) and helpers."""

from .base import ArrayDataset, ImageDataset
from .boxed import BoxedDataset
from .cifar import CIFAR10, CIFAR100
from .cluttered import ClutteredFashionMNIST
from .fashion_mnist import FashionMNIST
from .folder import BadImageError, FileListDataset, ImageFolder, UnlabeledFolder, load_rgb
from .registry import DATASET_INFO, build_dataset
from .stl10 import STL10
from .synthetic import SHAPES, SyntheticObjects
from .tensors import dataset_to_uint8
from .tiny_imagenet import TinyImageNet
from .views import build_view_transform

__all__ = [
    "DATASET_INFO", "SHAPES", "STL10", "ArrayDataset", "BadImageError", "BoxedDataset", "CIFAR10",
    "CIFAR100", "ClutteredFashionMNIST", "FashionMNIST", "FileListDataset", "ImageDataset",
    "ImageFolder", "SyntheticObjects", "TinyImageNet", "UnlabeledFolder", "build_dataset",
    "build_view_transform", "dataset_to_uint8", "load_rgb",
]  # fmt: skip
