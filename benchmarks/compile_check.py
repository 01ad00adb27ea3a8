"""torch.compile (Inductor) of every loss, forward and backward, at training shapes: does it
compile, and the largest difference from eager. Also the cross_entropy form of NT-Xent, which
Triton 3.6 failed to compile on an H100 (kept as a diagnostic; ccrop does not use it).

Usage: python benchmarks/compile_check.py [--device cuda] [--out compile_check.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ccrop.compiling import compiler_error_summary
from ccrop.losses import byol_loss, info_nce_queue, neg_cosine, nt_xent


def nt_xent_cross_entropy_form(z1: torch.Tensor, z2: torch.Tensor,
                               temperature: float = 0.5) -> torch.Tensor:
    """One-process NT-Xent written as ``F.cross_entropy`` of self-masked logits (2B, 2B)."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D)
    n = z.shape[0]
    idx = torch.arange(n, device=z.device)
    logits = (z @ z.T / temperature).masked_fill(idx[:, None] == idx, float("-inf"))
    return F.cross_entropy(logits, (idx + n // 2) % n)


def cases(b: int, d: int, queue: int, device: torch.device) -> dict[str, tuple[Callable, list]]:
    """Loss functions with inputs of training shape: B embeddings of D dims, a K-key queue."""
    g = torch.Generator().manual_seed(0)

    def x(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(device)

    q = F.normalize(x(queue, d), dim=1)
    return {
        "nt_xent": (lambda a, c: nt_xent(a, c, 0.5), [x(b, d), x(b, d)]),
        "info_nce_queue": (lambda a, c: info_nce_queue(a, c.detach(), q, 0.2), [x(b, d), x(b, d)]),
        "byol_loss": (byol_loss, [x(b, d), x(b, d)]),
        "neg_cosine": (neg_cosine, [x(b, d), x(b, d)]),
        "nt_xent_cross_entropy_form": (nt_xent_cross_entropy_form, [x(b, d), x(b, d)]),
    }


def check(fn: Callable, inputs: list[torch.Tensor]) -> dict:
    """Eager vs compiled: loss and input-gradient max abs differences, or the compile error."""
    def run(f: Callable) -> list[torch.Tensor]:
        leaves = [t.clone().requires_grad_() for t in inputs]
        loss = f(*leaves)
        loss.backward()
        return [loss.detach()] + [t.grad if t.grad is not None else torch.zeros_like(t)
                                  for t in leaves]

    ref = run(fn)
    try:
        got = run(torch.compile(fn))
    except Exception as err:  # a compiler failure is the finding, not a crash
        return {"ok": False, "error": compiler_error_summary(err)}
    diff = max(float((a.float() - r.float()).abs().max()) for a, r in zip(got, ref))
    return {"ok": True, "loss": float(ref[0]), "max_abs_diff": diff}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--out", default="compile_check.json")
    args = p.parse_args()
    device = torch.device(args.device)
    result: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else platform.processor() or "cpu", "torch": torch.__version__}
    try:
        import triton

        result["triton"] = triton.__version__
    except ImportError:
        result["triton"] = None
    for name, (fn, inputs) in cases(args.batch, args.dim, args.queue, device).items():
        torch._dynamo.reset()
        result[name] = check(fn, inputs)
        print(name, result[name], flush=True)
    used = [k for k in result if isinstance(result[k], dict) and k != "nt_xent_cross_entropy_form"]
    result["all_ccrop_losses_compile"] = all(result[k]["ok"] for k in used)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
