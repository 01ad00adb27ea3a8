"""train.compile: a compiler failure falls back to eager training with nothing lost."""

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd

from ccrop import compiling, engine
from ccrop.build import build_run
from ccrop.config import load_config


def _cfg(tmp_path, method: str, *extra: str):
    # CPU even where CUDA exists: the comparisons are bit for bit, and cuDNN's backward is not
    # deterministic, so two CUDA runs differ in the last bits (seen on an H100)
    return load_config(None, [
        "train.device=cpu", "data.dataset=synthetic", "data.dataset_kwargs.num_images=48",
        "data.batch_size=16",
        "data.num_workers=0", "model.width=8", "train.epochs=2", "crop.warmup_epochs=1",
        "crop.loc_interval=1", "train.knn_every=0", "train.tensorboard=false",
        "train.progress=false", "train.max_steps_per_epoch=2", f"method.name={method}",
        "method.params.proj_hidden=32", "method.params.proj_dim=16", "crop.loc_batch_size=32",
        f"train.out_dir={tmp_path}", *extra])


def _broken(gm, inputs):
    raise RuntimeError("PassManager::run failed")


_BACKENDS = {
    "forward": _broken,  # fails while compiling the forward graph
    "backward": aot_autograd(fw_compiler=lambda gm, inputs: gm, bw_compiler=_broken),
}


def _fit(cfg) -> tuple[list[float], dict[str, torch.Tensor], engine.Run]:
    run = build_run(cfg)
    engine.fit(run)
    return [h["loss"] for h in run.history if "loss" in h], run.method.state_dict(), run


@pytest.mark.parametrize("method", ["simclr", "moco"])
@pytest.mark.parametrize("where", ["forward", "backward"])
@pytest.mark.slow  # trains twice (compiled and eager)
def test_compile_failure_falls_back_to_eager_with_identical_training(tmp_path, monkeypatch,
                                                                      method, where):
    ref_loss, ref_state, _ = _fit(_cfg(tmp_path / "eager", method))
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: real_compile(m, backend=_BACKENDS[where]))
    torch._dynamo.reset()
    with pytest.warns(compiling.CompileFailedWarning, match="PassManager::run failed"):
        loss, state, run = _fit(_cfg(tmp_path / "compiled", method, "train.compile=true"))
    assert not hasattr(run.model, "_orig_mod")  # the eager module took over
    assert loss == ref_loss  # the failed attempt left no trace: buffers, grads, RNG
    for k, v in ref_state.items():
        torch.testing.assert_close(state[k], v, rtol=0, atol=0, msg=k)


@pytest.mark.slow  # trains twice (compiled and eager)
def test_working_compile_is_kept_and_matches_eager(tmp_path, monkeypatch):
    ref_loss, _, _ = _fit(_cfg(tmp_path / "eager", "simclr"))
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: real_compile(m, backend="eager"))
    torch._dynamo.reset()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", compiling.CompileFailedWarning)
        loss, _, run = _fit(_cfg(tmp_path / "compiled", "simclr", "train.compile=true"))
    assert hasattr(run.model, "_orig_mod")
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def testcompiler_error_summary_keeps_first_and_last_lines():
    err = RuntimeError("SubprocException: in a subprocess:\n\nTraceback\n  File x\n"
                       "RuntimeError: PassManager::run failed\n\nSet TORCHDYNAMO_VERBOSE=1 ...")
    s = compiling.compiler_error_summary(err)
    assert s.startswith("RuntimeError | SubprocException") and s.endswith("run failed")
    assert "TORCHDYNAMO" not in s
