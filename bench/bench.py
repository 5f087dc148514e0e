"""Benchmarks: training iterations, generator inference, whole test.py runs, and the machine's matmul rate.

Each measurement prints one JSON line; ``--markdown FILE`` also appends a table row. Run one configuration per
process (peak RSS is per process). Examples::

    python bench/bench.py matmul
    python bench/bench.py train --crop 128                       # fp32, the default layout
    python bench/bench.py train --crop 128 --amp
    python bench/bench.py train --crop 128 --reference_step      # the reference's step: fp32, NCHW, for-loop Adam
    python bench/bench.py infer --crop 256 --amp
    python bench/bench.py testpy --images 50 --crop 256 --amp

``bench/run_all.sh`` runs the matrix behind docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cyclegan_culture import options  # noqa: E402
from cyclegan_culture.accel import ExecutionPlan, inference_weights  # noqa: E402
from cyclegan_culture.accel.layers import ResidualConv  # noqa: E402
from cyclegan_culture.devices import select_device  # noqa: E402
from cyclegan_culture.engine.training_plan import training_plan  # noqa: E402
from cyclegan_culture.models import registry  # noqa: E402
from cyclegan_culture.models.cycle_gan import CycleGANModel  # noqa: E402
from cyclegan_culture.options import execution_plan  # noqa: E402


def PLAIN(device: torch.device) -> ExecutionPlan:
    """The reference's networks as built: no fast layers, fp32, NCHW."""
    return ExecutionPlan(device, fast_layers=False)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_memory(device: torch.device) -> dict:
    """Peak host memory of this process, and on CUDA the peak of PyTorch's GPU allocations."""
    out = {"peak_rss_mb": round(peak_rss_mb())}
    if device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20)
    return out


def bench_device(args: argparse.Namespace) -> torch.device:
    """The device as train.py and test.py set it up (cuDNN autotuning on CUDA), except for the reference's step,
    which runs with PyTorch's defaults as the reference does."""
    if args.device == "cuda" and not getattr(args, "reference_step", False):
        device = select_device([0])
        torch.backends.cudnn.benchmark = args.cudnn_benchmark == "on"
        return device
    return torch.device(args.device)


def machine() -> str:
    cpu = "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{cpu}, {torch.get_num_threads()} threads"


def model_opt(args: argparse.Namespace) -> argparse.Namespace:
    argv = ["--dataroot", "bench", "--crop_size", str(args.crop), "--load_size", str(args.crop), "--netG", args.netG,
            "--ngf", str(args.ngf), "--ndf", str(args.ndf), "--batch_size", str(args.batch_size),
            "--channels_last", args.channels_last, "--conv_algorithm", args.conv_algorithm,
            "--autotune", args.autotune, "--gpu_ids", "0" if args.device == "cuda" else "-1"]
    argv += ["--amp"] * args.amp + ["--compile"] * args.compile
    return options.parse(options.build_train_parser(), argv)


class ReferenceStep:
    """The reference's CycleGAN step on our (identical) networks, for side-by-side timing.

    Its order of work: four generator calls for translations and reconstructions, two more for the identity
    images, each discriminator called separately on fakes, reals and pooled fakes, fp32, NCHW layout, and Adam
    with its default per-tensor loop, as in models/cycle_gan_model.py of junyanz/pytorch-CycleGAN-and-pix2pix.
    """

    def __init__(self, model: CycleGANModel):
        import itertools
        self.m = model
        for net in model.nets.values():
            net.to(memory_format=torch.contiguous_format)
        model.memory_format = torch.contiguous_format
        opt = model.schedule
        self.optimizer_G = torch.optim.Adam(itertools.chain(model.G_A.parameters(), model.G_B.parameters()),
                                            lr=opt.lr, betas=(opt.beta1, 0.999))
        self.optimizer_D = torch.optim.Adam(itertools.chain(model.D_A.parameters(), model.D_B.parameters()),
                                            lr=opt.lr, betas=(opt.beta1, 0.999))
        self.l1 = torch.nn.L1Loss()

    def gan(self, pred: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.tensor(1.0 if real else 0.0, device=pred.device)
        return torch.nn.functional.mse_loss(pred, target.expand_as(pred))

    def __call__(self) -> None:
        m, opt = self.m, self.m.config
        fake_B = m.G_A(m.real_A)
        rec_A = m.G_B(fake_B)
        fake_A = m.G_B(m.real_B)
        rec_B = m.G_A(fake_A)
        m._set_requires_grad((m.D_A, m.D_B), False)
        self.optimizer_G.zero_grad()
        idt_A = m.G_A(m.real_B)
        idt_B = m.G_B(m.real_A)
        loss_G = (self.l1(idt_A, m.real_B) * opt.lambda_B * opt.lambda_identity
                  + self.l1(idt_B, m.real_A) * opt.lambda_A * opt.lambda_identity
                  + self.gan(m.D_A(fake_B), True) + self.gan(m.D_B(fake_A), True)
                  + self.l1(rec_A, m.real_A) * opt.lambda_A + self.l1(rec_B, m.real_B) * opt.lambda_B)
        loss_G.backward()
        self.optimizer_G.step()
        m._set_requires_grad((m.D_A, m.D_B), True)
        self.optimizer_D.zero_grad()
        for netD, real, fake in ((m.D_A, m.real_B, m.fake_B_pool.query(fake_B)),
                                 (m.D_B, m.real_A, m.fake_A_pool.query(fake_A))):
            loss_D = (self.gan(netD(real), True) + self.gan(netD(fake.detach()), False)) * 0.5
            loss_D.backward()
        self.optimizer_D.step()


def layout(model: CycleGANModel) -> str:
    """The memory layout the plan resolved to, and whether the step runs our layers or PyTorch's."""
    layers = "" if any(isinstance(m, ResidualConv) for m in model.G_A.modules()) else " reference layers"
    return ("NHWC" if model.memory_format == torch.channels_last else "NCHW") + layers


def summarize(times: list[float]) -> dict:
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": round(statistics.median(times), 4), "q1_s": round(q[0], 4), "q3_s": round(q[2], 4),
            "min_s": round(min(times), 4), "n": len(times)}


def timed_step(model: CycleGANModel, step, batch: dict, device: torch.device) -> float:
    """Seconds for one training step, including moving the batch in and waiting for the GPU."""
    t0 = time.perf_counter()
    model.set_input(batch)
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def bench_train(args: argparse.Namespace) -> dict:
    opt = model_opt(args)
    device = bench_device(args)
    torch.manual_seed(0)
    plan = PLAIN(device) if args.reference_step else training_plan(opt, device)
    model = registry.build(vars(opt), device, plan, training=True)
    step = ReferenceStep(model) if args.reference_step else model.optimize_parameters
    batch = {"A": torch.rand(args.batch_size, 3, args.crop, args.crop) * 2 - 1,
             "B": torch.rand(args.batch_size, 3, args.crop, args.crop) * 2 - 1, "A_paths": [], "B_paths": []}
    flops = None
    if args.flops:
        from torch.utils.flop_counter import FlopCounterMode
        eager = dict(model.run)
        model.run = dict(model.nets)
        model.set_input(batch)
        with FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        model.run = eager
    times = []
    start = time.perf_counter()
    for i in range(args.warmup + args.iters):
        elapsed = timed_step(model, step, batch, device)
        if i >= args.warmup:
            times.append(elapsed)
        if i == args.warmup - 1:
            warm_s = time.perf_counter() - start
    result = {"kind": "train", **config(args), "layout": layout(model), **summarize(times),
              "warmup_s": round(warm_s, 2), "it_per_s": round(1 / statistics.median(times), 4),
              **peak_memory(device)}
    if flops:
        result["gflop_per_it"] = round(flops / 1e9, 1)
        result["gflops_per_s"] = round(flops / 1e9 / statistics.median(times), 1)
    return result


def bench_compare(args: argparse.Namespace) -> dict:
    """Reference step and ours, alternating iteration by iteration in one process, so machine drift hits both.
    (On CUDA both then run with cuDNN autotuning, which is process-wide.)"""
    opt = model_opt(args)
    device = bench_device(args)
    torch.manual_seed(0)
    ours = registry.build(vars(opt), device, training_plan(opt, device), training=True)
    ref_opt = model_opt(argparse.Namespace(**{**vars(args), "amp": False, "compile": False, "channels_last": "off"}))
    reference = registry.build(vars(ref_opt), device, PLAIN(device), training=True)
    ref_step = ReferenceStep(reference)
    batch = {"A": torch.rand(args.batch_size, 3, args.crop, args.crop) * 2 - 1,
             "B": torch.rand(args.batch_size, 3, args.crop, args.crop) * 2 - 1, "A_paths": [], "B_paths": []}
    times: dict[str, list[float]] = {"reference": [], "ours": []}
    for i in range(args.warmup + args.iters):
        for name, model, step in (("reference", reference, ref_step), ("ours", ours, ours.optimize_parameters)):
            elapsed = timed_step(model, step, batch, device)
            if i >= args.warmup:
                times[name].append(elapsed)
    ref, mine = statistics.median(times["reference"]), statistics.median(times["ours"])
    return {"kind": "compare", **config(args), "layout": layout(ours), "reference_median_s": round(ref, 4),
            "ours_median_s": round(mine, 4), "speedup": round(ref / mine, 3),
            "reference": summarize(times["reference"]), "ours": summarize(times["ours"])}


def bench_infer(args: argparse.Namespace) -> dict:
    opt = model_opt(args)
    device = bench_device(args)
    model = registry.build(vars(opt), device, execution_plan(opt, device, training=False), training=False)
    # as test.py loads it: fixed weights (Winograd keeps its transformed filters), bf16-stored under --amp on CPU
    G = inference_weights(model.G_A.requires_grad_(False), model.amp_dtype)
    if args.compile:
        G = torch.compile(G)
    x = (torch.rand(1, 3, args.crop, args.crop) * 2 - 1).to(device, memory_format=model.memory_format)
    times = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=model.amp_dtype or torch.float32,
                                                enabled=model.amp_dtype is not None):
        for i in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            G(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    return {"kind": "infer", **config(args), "layout": layout(model), **summarize(times),
            "img_per_s": round(1 / statistics.median(times), 3), **peak_memory(device)}


def bench_testpy(args: argparse.Namespace) -> dict:
    """The whole test.py process on N images of crop x crop, both directions with reconstructions."""
    import numpy as np
    from PIL import Image
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        for side in ("testA", "testB"):
            (tmp / "data" / side).mkdir(parents=True)
            for i in range(args.images):
                Image.fromarray(rng.integers(0, 255, (args.crop, args.crop, 3), dtype=np.uint8)).save(
                    tmp / "data" / side / f"{i:03d}.jpg")
        run = tmp / "ckpt" / "bench"
        run.mkdir(parents=True)
        opt = model_opt(args)
        torch.manual_seed(0)  # the same weights every run, as a user's run has: --backend's export cache applies
        model = registry.build(vars(opt), torch.device("cpu"), PLAIN(torch.device("cpu")), training=False)
        from cyclegan_culture.runs.checkpoint import save_networks
        save_networks(model.nets, run, "latest")
        if args.reference_step:
            images = tmp / "results"
            cmd = [sys.executable, str(ROOT / "bench" / "reference_test.py"), str(tmp / "data"), str(run), str(images),
                   "--ngf", str(args.ngf), "--netG", args.netG, "--num_test", str(args.images), "--device", args.device]
        else:
            images = tmp / "results" / "bench" / "test_latest" / "images"
            cmd = [sys.executable, str(ROOT / "test.py"), "--dataroot", str(tmp / "data"), "--name", "bench",
                   "--checkpoints_dir", str(tmp / "ckpt"), "--results_dir", str(tmp / "results"), "--netG",
                   args.netG, "--ngf", str(args.ngf), "--channels_last", args.channels_last,
                   "--conv_algorithm", args.conv_algorithm, "--autotune", args.autotune]
            cmd += ["--amp"] * args.amp + ["--gpu_ids", "0" if args.device == "cuda" else "-1", "--backend", args.backend]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        n = len(list(images.glob("*_fake_*.png")))
    # the test.py process is this process's only child: its peak resident memory
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    return {"kind": "testpy", **config(args), "backend": args.backend, "images": n, "wall_s": round(wall, 2),
            "s_per_image": round(wall / n, 3), "peak_rss_mb": round(child_peak)}


def bench_matmul(args: argparse.Namespace) -> dict:
    """Sustained GFLOP/s of a large matrix multiply on the benchmark's device, fp32 and bf16 (and fp16 on CUDA):
    the ceiling for convolution-heavy work. fp32 on CUDA is true fp32 (PyTorch's default, TF32 off)."""
    device = torch.device(args.device)
    out = {"kind": "matmul", "machine": machine(), "torch": torch.__version__, "device": args.device}
    n = 8192 if device.type == "cuda" else 2048
    dtypes = (torch.float32, torch.bfloat16) + ((torch.float16,) if device.type == "cuda" else ())
    for dtype in dtypes:
        a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
        times = []
        for i in range(13):
            t0 = time.perf_counter()
            a @ b
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - t0)
        out[f"{str(dtype).split('.')[-1]}_gflops"] = round(2 * n ** 3 / statistics.median(times) / 1e9, 1)
    return out


def config(args: argparse.Namespace) -> dict:
    precision = "bf16" if args.amp and args.device == "cpu" else ("fp16" if args.amp else "fp32")
    return {"mode": "reference" if getattr(args, "reference_step", False) else "ours", "crop": args.crop,
            "netG": args.netG, "ngf": args.ngf, "batch_size": args.batch_size, "precision": precision,
            "channels_last": args.channels_last, "conv_algorithm": args.conv_algorithm, "compile": args.compile,
            "autotune": args.autotune,
            "device": args.device, **({"cudnn_benchmark": args.cudnn_benchmark} if args.device == "cuda" else {}),
            "machine": machine(), "torch": torch.__version__}


def _who(r: dict) -> str:
    """'ours' or 'reference', with the convolution algorithm where ours was not left on auto."""
    conv = r.get("conv_algorithm", "auto")
    return r["mode"] if r["mode"] == "reference" or conv == "auto" else f"{r['mode']}, {conv} conv"


def _layout(r: dict) -> str:
    """--channels_last as given, with the layout it resolved to where the benchmark recorded it."""
    return f"{r['channels_last']} ({r['layout']})" if "layout" in r else r["channels_last"]


def _peak(r: dict) -> str:
    """Peak memory for the table: GPU allocations on CUDA, the process's RSS on CPU."""
    return f"{r['peak_gpu_mb']} (GPU)" if "peak_gpu_mb" in r else str(r["peak_rss_mb"])


def markdown_row(r: dict) -> str:
    if r["kind"] == "train":
        return (f"| train | {_who(r)} | {r['crop']} | {r['batch_size']} | {r['precision']} | {_layout(r)} | "
                f"{r['compile']} | {r['median_s']:.3f} ({r['q1_s']:.3f}-{r['q3_s']:.3f}) | {r['it_per_s']:.3f} | "
                f"{r.get('gflops_per_s', '')} | {_peak(r)} |")
    if r["kind"] == "infer":
        return (f"| generator | {_who(r)} | {r['crop']} | 1 | {r['precision']} | {_layout(r)} | {r['compile']} | "
                f"{r['median_s']:.3f} | {r['img_per_s']:.2f} img/s | | {_peak(r)} |")
    if r["kind"] == "testpy":
        return (f"| test.py, {r['images']} translations | {_who(r)} | {r['crop']} | 1 | {r['precision']} | "
                f"{_layout(r)} | False | {r['wall_s']:.1f} s total | {r['s_per_image']:.3f} s/img | | |")
    if r["kind"] == "compare":
        return (f"| train, side by side | reference vs {_who(r)} | {r['crop']} | {r['batch_size']} | {r['precision']} | "
                f"{_layout(r)} | {r['compile']} | {r['reference_median_s']:.3f} vs {r['ours_median_s']:.3f} | "
                f"**{r['speedup']:.2f}x** | | |")
    short = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
    rates = ", ".join(f"{short[k[:-len('_gflops')]]} {v} GFLOP/s" for k, v in r.items() if k.endswith("_gflops"))
    return f"| matmul | | | | {rates} | | | | | | |"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["train", "compare", "infer", "testpy", "matmul"])
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--netG", default="resnet_9blocks")
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--amp", action="store_true")
    p.add_argument("--channels_last", default="auto", choices=["auto", "on", "off"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--conv_algorithm", default="auto", choices=options.CONV_ALGORITHMS)
    p.add_argument("--autotune", default="auto", choices=["auto", "on", "off"],
                   help="the per-machine plan (accel/autotune.py): auto reads or fills the cache")
    p.add_argument("--cudnn_benchmark", default="on", choices=["on", "off"],
                   help="CUDA: cuDNN autotuning for our step (train.py and test.py turn it on)")
    p.add_argument("--reference_step", action="store_true", help="time the reference's step instead of ours")
    p.add_argument("--backend", default="pytorch", help="testpy: test.py --backend (pytorch, openvino, onnxruntime)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--iters", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--flops", action="store_true", help="count FLOPs of one step (torch.utils.flop_counter)")
    p.add_argument("--markdown", type=Path, help="append a table row to this file")
    args = p.parse_args()
    result = {"train": bench_train, "compare": bench_compare, "infer": bench_infer, "testpy": bench_testpy, "matmul": bench_matmul}[args.what](args)
    result["platform"] = platform.platform()
    print(json.dumps(result), flush=True)
    if args.markdown:
        with open(args.markdown, "a", encoding="utf-8") as f:
            f.write(markdown_row(result) + "\n")


if __name__ == "__main__":
    main()
