"""The CUDA path: the same step as on CPU, mixed precision with loss scaling, NHWC, compile, resume.

Skipped where PyTorch sees no GPU (our development and CI machines); run on a GPU machine with
``python -m pytest tests/test_cuda.py``. Tiny networks, so each test takes seconds there.
"""

from __future__ import annotations

import pytest
import torch

from cyclegan_culture.runs import checkpoint
from tests.test_speed_flags import batch, tiny_model
from tests.test_train_resume import make_trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def exact_fp32():
    """True fp32 convolutions and matmuls on CUDA (PyTorch lets cuDNN use TF32 by default)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_fp32_step_on_cuda_matches_cpu(exact_fp32):
    # SGD, so that rounding differences are not amplified into sign flips as Adam's first steps would
    cpu = tiny_model("--optimizer", "sgd", seed=3)
    gpu = tiny_model("--optimizer", "sgd", seed=3, device="cuda")
    for model in (cpu, gpu):
        model.set_input(batch())
        model.optimize_parameters()
    assert gpu.fake_B.is_cuda
    for name in ("G_A", "G_B", "D_A", "D_B"):
        for (key, a), b in zip(cpu.nets[name].state_dict().items(), gpu.nets[name].state_dict().values()):
            assert torch.allclose(a, b.cpu(), atol=1e-4, rtol=1e-4), f"{name}.{key}"
    for name, value in cpu.current_losses.items():
        assert abs(value - gpu.current_losses[name]) < 1e-4, name
    start = tiny_model("--optimizer", "sgd", seed=3)
    moved = max((p - q).abs().max().item() for p, q in zip(start.G_A.parameters(), cpu.G_A.parameters()))
    assert moved > 1e-4  # the step did change the weights, so agreement above means something


@pytest.mark.parametrize("layout", ["auto", "on"])
def test_amp_on_cuda_is_fp16_with_loss_scaling(layout):
    model = tiny_model("--amp", "--channels_last", layout, device="cuda")
    assert model.amp_dtype == torch.float16 and model.scaler.is_enabled()
    # NHWC only when asked for; PyTorch's CUDA instance norm passes the NHWC probe (unlike 2.14's on CPU)
    assert model.memory_format == (torch.channels_last if layout == "on" else torch.contiguous_format)
    for _ in range(3):
        model.set_input(batch())
        model.optimize_parameters()
    assert all(torch.isfinite(torch.tensor(v)) for v in model.current_losses.values())
    assert model.fake_B.dtype == torch.float16
    assert all(p.dtype == torch.float32 for p in model.G_A.parameters())  # master weights stay fp32
    assert model.scaler.get_scale() > 0


def test_compile_on_cuda_trains_with_finite_losses():
    model = tiny_model("--compile", "--amp", device="cuda")
    for _ in range(2):
        model.set_input(batch())
        model.optimize_parameters()
    assert all(torch.isfinite(torch.tensor(v)) for v in model.current_losses.values())
    assert model.current_visuals()["fake_B"].shape == (1, 3, 32, 32)


def test_train_and_resume_on_cuda_keep_scaler_and_cuda_rng(tiny_dataset, tmp_path):
    on_gpu = ["--amp", "--gpu_ids", "0"]  # overrides TINY's --gpu_ids -1
    first = make_trainer(tiny_dataset, tmp_path, *on_gpu, "--n_epochs", "1", "--n_epochs_decay", "0").run()
    state = checkpoint.load_training_state(first.run_dir)
    assert "cuda" in state["rng"]
    assert state["model"]["grad_scaler"]["scale"] > 0
    resumed = make_trainer(tiny_dataset, tmp_path, *on_gpu, "--n_epochs", "2", "--n_epochs_decay", "0",
                           "--continue_train").run()
    assert not resumed.interrupted and resumed.total_iters == 2 * first.total_iters
    assert checkpoint.load_training_state(resumed.run_dir)["epoch"] == 3
