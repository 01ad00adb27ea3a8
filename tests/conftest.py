"""Test-wide settings: one intra-op thread (tiny tensors; DataLoader workers share the cores)."""

import torch

torch.set_num_threads(1)
