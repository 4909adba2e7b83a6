"""The capturable step (GPU throughput, part 2a): static buffers, LR and epoch in device tensors,
gradients zeroed in place, SGD with a tensor LR. Run eagerly on a CPU it must give the same
per-step losses and the same final weights as the ordinary step, over epochs that change the LR
and the loss ramps and end with a partial batch; only the capture itself needs a GPU (the
CUDA tests at the bottom skip here)."""

from __future__ import annotations

import pytest
import torch

from kdsrc.config import resolve_run_config, uses_compile, wants_cuda_graph
from kdsrc.data import load_dataset
from kdsrc.distillers import get_method
from kdsrc.engine import RunPaths, train
from kdsrc.engine.optim import ensure_momentum_buffers, sgd_step
from kdsrc.errors import ConfigError
from kdsrc.models import load_state_dict_file
from kdsrc_testutil import step_losses

# 3 epochs of 150 images in batches of 32: 4 full batches and one of 22 per epoch; the LR
# decays after epoch 1 and DKD's ramp (warm-up 3) moves every epoch
N_TRAIN, EPOCHS = 150, 3


@pytest.fixture(scope="module")
def small():
    return load_dataset("digits").head(N_TRAIN, 64)


def _cfg(method, teacher, **extra):
    return {"dataset": "digits", "student": "resnet8", "method": method,
            "teacher": {"name": "resnet8", "checkpoint": str(teacher)},
            "solver": {"epochs": EPOCHS, "batch_size": 32, "lr_decay_epochs": [1],
                       "nesterov": extra.pop("nesterov", False)},
            "seed": 5, **extra}


def _run(tmp_path, cfg, data, kind):
    prog = step_losses()
    record = train(cfg, RunPaths.in_dir(tmp_path / kind), device="cpu", progress=prog,
                   arrays=data, step_kind=kind, resume=False)
    weights = load_state_dict_file(tmp_path / kind / "final.pt")
    return prog, record, weights


METHODS = {
    "kd": {"name": "kd"},
    "dkd": {"name": "dkd", "warmup": 3},
    "crd": {"name": "crd", "nce_k": 64, "dkd_weight": 0.3, "dkd_warmup": 3},
    "angularkd_crd": {"name": "angularkd", "base": "crd", "preset": "official",
                      "base_settings": {"kd_weight": 1.0, "nce_k": 64}},
}


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_static_step_equals_the_ordinary_step(tmp_path, digits_teacher, small, method):
    cfg = _cfg(METHODS[method], digits_teacher)
    ordinary, rec_o, w_o = _run(tmp_path, cfg, small, "ordinary")
    static, rec_s, w_s = _run(tmp_path, cfg, small, "static")
    assert len(ordinary.losses) == EPOCHS * 5 == len(static.losses)
    assert static.losses == ordinary.losses
    assert w_s.keys() == w_o.keys()
    for k in w_o:
        assert torch.equal(w_s[k], w_o[k]), k
    assert rec_s["top1_last"] == rec_o["top1_last"]
    assert rec_s["cuda_graph"] == rec_o["cuda_graph"] == "off"
    keep = [k for k in rec_o if k not in ("wall_s", "samples_per_s")]
    log_o = (tmp_path / "ordinary" / "log.csv").read_text().splitlines()
    log_s = (tmp_path / "static" / "log.csv").read_text().splitlines()
    drop = log_o[0].split(",").index("epoch_s")
    assert [r.split(",")[:drop] for r in log_s] == [r.split(",")[:drop] for r in log_o]
    assert all(rec_s[k] == rec_o[k] for k in keep if k not in ("git_rev",)), \
        [k for k in keep if rec_s[k] != rec_o[k]]


def test_a_changed_lr_breaks_the_equality(tmp_path, digits_teacher, small, monkeypatch):
    """Negative control: the static step reading a stale LR (the one of epoch 1 for ever, what a
    graph with the LR baked in would do) is caught by the comparison above."""
    from kdsrc.engine import capture

    cfg = _cfg(METHODS["kd"], digits_teacher)
    ordinary, _, w_o = _run(tmp_path, cfg, small, "ordinary")
    real = capture.StaticStep.begin_epoch

    def stale(self, epoch, lr):
        real(self, epoch, lr)
        if epoch > 1:
            self.lr.fill_(cfg_lr)

    cfg_lr = resolve_run_config(cfg)["solver"]["lr"]
    monkeypatch.setattr(capture.StaticStep, "begin_epoch", stale)
    static, _, w_s = _run(tmp_path, cfg, small, "static")
    assert static.losses[:5] == ordinary.losses[:5]
    assert static.losses[5:] != ordinary.losses[5:]


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_with_a_tensor_lr_is_sgd_bit_for_bit(nesterov):
    torch.manual_seed(0)
    params = [torch.randn(7, 5, requires_grad=True), torch.randn(5, requires_grad=True)]
    mirror = [p.detach().clone().requires_grad_(True) for p in params]
    ref = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    ours = torch.optim.SGD(mirror, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)
    ensure_momentum_buffers(ours)
    lr = torch.tensor(0.05)
    for step in range(12):
        if step == 6:
            for g in ref.param_groups:
                g["lr"] = 0.005
            lr.fill_(0.005)
        grads = [torch.randn_like(p) for p in params]
        for p, q, g in zip(params, mirror, grads):
            p.grad, q.grad = g.clone(), g.clone()
        ref.step()
        sgd_step(ours, lr)
    for p, q in zip(params, mirror):
        assert torch.equal(p, q)
    for p, q in zip(params, mirror):
        assert torch.equal(ref.state[p]["momentum_buffer"], ours.state[q]["momentum_buffer"])


def test_cuda_graph_setting(digits_teacher):
    base = _cfg(METHODS["kd"], digits_teacher)
    auto = resolve_run_config(base)
    # the default, auto: fast mode on CUDA only, and out of the config hash
    assert auto["cuda_graph"] == "auto"
    assert not wants_cuda_graph(auto, "cuda") and not wants_cuda_graph(auto, "cpu")
    off = resolve_run_config({**base, "cuda_graph": "off"})
    assert not wants_cuda_graph(off, "cuda")
    fast = resolve_run_config({**base, "cuda_graph": "auto", "mode": "fast"})
    assert wants_cuda_graph(fast, "cuda") and not wants_cuda_graph(fast, "cpu")
    assert not uses_compile(fast, "cuda")   # a graphed step is not compiled under compile: auto
    from kdsrc.config import config_hash
    assert config_hash(auto) == config_hash({k: v for k, v in auto.items() if k != "cuda_graph"})
    assert config_hash(off) != config_hash(auto)
    on = resolve_run_config({**base, "cuda_graph": "on"})
    with pytest.raises(ConfigError, match="cuda_graph: 'on' needs a CUDA device"):
        wants_cuda_graph(on, "cpu")
    with pytest.raises(ConfigError, match="cuda_graph"):
        resolve_run_config({**base, "cuda_graph": "yes"})


def test_on_a_cpu_is_a_clear_error_before_any_work(tmp_path, digits_teacher, small):
    cfg = _cfg(METHODS["kd"], digits_teacher, cuda_graph="on")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        train(cfg, RunPaths.in_dir(tmp_path), device="cpu", arrays=small)
    assert not any(tmp_path.iterdir())


def test_a_method_that_cannot_be_captured_says_why(tmp_path, digits_teacher, monkeypatch):
    mlkd = get_method("mlkd")
    assert "host" in mlkd.capture_blocker_for(None)
    assert get_method("kd").capture_blocker_for(None) is None
    ak = get_method("angularkd")
    assert ak.capture_blocker_for({"base": "crd"}) is None
    assert "base mlkd" in ak.capture_blocker_for({"base": "mlkd"})
    assert "teacher_input_aug" in ak.capture_blocker_for({"teacher_input_aug": "on"})
    import kdsrc.engine.loop as loop

    loaded = []
    real = loop.load_dataset
    monkeypatch.setattr(loop, "load_dataset", lambda *a, **k: loaded.append(1) or real(*a, **k))
    with pytest.raises(ConfigError, match="cannot be captured: its strong image"):
        train(_cfg({"name": "mlkd"}, digits_teacher), RunPaths.in_dir(tmp_path), device="cpu",
              step_kind="static")
    assert not loaded and not any(tmp_path.iterdir())   # stopped before any work


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: captures a graph")


@cuda
@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_graph_matches_eager_on_cuda(tmp_path, digits_teacher, small, method, monkeypatch):
    """Graph replays vs the same static step eager, fp32, deterministic cuDNN kernels and no
    TF32 (else two eager runs already drift apart: cuDNN's weight gradients add with atomics)."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    cfg = _cfg(METHODS[method], digits_teacher, mode="fast", channels_last="off")
    runs = {}
    for kind in ("static", "graph"):
        prog = step_losses()
        rec = train(cfg, RunPaths.in_dir(tmp_path / kind), device="cuda", progress=prog,
                    arrays=small, step_kind=kind, resume=False)
        runs[kind] = (prog.losses, rec)
    (eager, _), (graph, rec_g) = runs["static"], runs["graph"]
    assert rec_g["cuda_graph"] == "on"
    assert len(graph) == len(eager)
    worst = max(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(graph, eager))
    print(f"{method}: largest relative loss difference graph vs eager {worst:.3g}")
    assert worst <= 1e-5, worst
