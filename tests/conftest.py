"""Test-wide settings: one intra-op thread. Tiny tensors gain nothing from more, DataLoader
workers share the 2 cores, and the SIGKILL/resume tests compare bit for bit with subprocesses
started with OMP_NUM_THREADS=1."""

import torch

torch.set_num_threads(1)
