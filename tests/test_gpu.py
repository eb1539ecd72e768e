"""CUDA against CPU: the training step (fp32 and bf16 autocast), the GPU augmentation path, the
device-side normalisation. Every test here needs CUDA and is skipped without it
(`benchmarks/device_check.sh run` runs them on a lent GPU)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from wtours.clips import augment as A
from wtours.clips.augment_cpu import decode_clip, multicrop_cpu
from wtours.clips.epoch import ClipConfig
from wtours.clips.pipeline import ClipDataset, GpuAugmenter, LoaderConfig
from wtours.clips.spec import resolve
from wtours.dora import DoRA
from wtours.train.optim import param_groups
from wtours.train.run import StepSettings, train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

GREY_LEVEL = 1 / (255 * 0.226)  # one uint8 step in normalised units
CLIP = ClipConfig(frames=4, stride=1.0)


@pytest.fixture(scope="module")
def root(canonical_roots, tmp_path_factory):
    return canonical_roots.copy("walk-12s", tmp_path_factory.mktemp("gpu") / "root")


def crops(b: int = 2, t: int = 2, n: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return ([torch.randn(b, t, 3, 224, 224, generator=g)]  # (B, T, 3, 224, 224)
            + [torch.randn(b, t, 3, 112, 112, generator=g) for _ in range(n)])  # n x (B, T, 3, 112, 112)


def one_step(model: DoRA, views: list[torch.Tensor], autocast: torch.dtype | None) -> tuple[float, torch.Tensor]:
    """train_step once; returns the loss and the student's clipped gradients, flattened, on the CPU."""
    optimizer = torch.optim.AdamW(param_groups(model.student))
    scaler = torch.amp.GradScaler(views[0].device.type, enabled=False)
    torch.manual_seed(5)  # the teacher's K heads are drawn from the CPU generator: the same on both devices
    loss, _ = train_step(model, model.student, views, optimizer, scaler,
                         StepSettings(1e-4, 0.04, 0.996, epoch=1, autocast_dtype=autocast))
    grads = torch.cat([p.grad.flatten().float().cpu() for p in model.student.parameters() if p.grad is not None])
    return loss, grads


@pytest.fixture(scope="module")
def fp32_matmuls():
    """TF32 would round CUDA's matmuls and convolutions to 10-bit mantissas: off, for an fp32 comparison."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def micro_model() -> DoRA:
    torch.manual_seed(0)
    return DoRA("vit_micro", out_dim=4096, n_local=2, drop_path=0.0)  # no drop path: no device RNG in the step


def test_training_step_on_cuda_equals_cpu_fp32(fp32_matmuls):
    cpu = micro_model()
    cuda = copy.deepcopy(cpu).cuda()
    views = crops()
    loss_cpu, grads_cpu = one_step(cpu, views, None)
    loss_cuda, grads_cuda = one_step(cuda, [v.cuda() for v in views], None)
    assert np.isfinite(loss_cpu) and loss_cuda == pytest.approx(loss_cpu, rel=1e-3)
    # kernels differ in summation order; the tracker's thresholded masks may flip a patch (inputs perturbed
    # by 1e-3 on the CPU moved the loss by < 1e-4 and the gradients by < 8e-3)
    assert (grads_cuda - grads_cpu).norm() <= 2e-2 * grads_cpu.norm()
    # the EMA teacher and the loss centre follow the step on both devices
    for a, b in zip(cuda.teacher.parameters(), cpu.teacher.parameters()):
        assert torch.allclose(a.cpu(), b, atol=1e-4)
    assert torch.allclose(cuda.loss.center.cpu(), cpu.loss.center, atol=1e-4)


def test_bf16_autocast_step_is_finite_and_close_to_fp32(fp32_matmuls):
    fp32 = micro_model().cuda()
    bf16 = copy.deepcopy(fp32)
    views = [v.cuda() for v in crops(seed=1)]
    loss_fp32, grads_fp32 = one_step(fp32, views, None)
    loss_bf16, grads_bf16 = one_step(bf16, views, torch.bfloat16)
    assert np.isfinite(loss_bf16) and torch.isfinite(grads_bf16).all()
    assert loss_bf16 == pytest.approx(loss_fp32, rel=2e-2)  # bf16 keeps 8 bits of mantissa
    cosine = torch.nn.functional.cosine_similarity(grads_bf16, grads_fp32, dim=0)
    assert cosine > 0.95


def test_normalising_on_cuda_gives_the_cpu_values(root):
    """The CPU path's uint8 views normalised on the GPU: the same float32 values as on the CPU."""
    batch = next(iter(ClipDataset(resolve("walk", root), LoaderConfig(batch_size=2, workers=0, clip=CLIP))))
    on_gpu = batch.to("cuda", non_blocking=True).normalised()
    on_cpu = batch.normalised()
    assert on_gpu.keys == on_cpu.keys
    for a, b in zip(on_gpu, on_cpu):
        assert a.device.type == "cuda" and a.dtype == torch.float32
        assert torch.equal(a.cpu(), b)


def test_nvjpeg_decodes_like_libjpeg_turbo(root):
    raw = next(iter(ClipDataset(resolve("walk", root), LoaderConfig(batch_size=1, workers=0, augment="gpu",
                                                                    clip=CLIP))))
    from torchvision.io import decode_jpeg

    gpu = decode_jpeg(raw.jpgs, device="cuda")  # T x (3, H, W) uint8
    cpu = decode_clip([bytes(j.numpy()) for j in raw.jpgs])
    for a, b in zip(gpu, cpu):
        assert a.shape == b.shape
        error = (a.cpu().float() - b.float()).abs().mean()
        assert error < 1.0, f"nvJPEG vs libjpeg-turbo: {error:.3f} grey levels"  # chroma upsampling may differ


def test_gpu_augmentation_path_matches_the_cpu_path(root):
    """Same clip, same seed: the GPU path (nvJPEG + batched tensor ops, float) and the CPU workers' path
    (libjpeg-turbo + uint8 kernels, normalised after the copy) make nearly the same views."""
    config = LoaderConfig(batch_size=1, workers=0, augment="gpu", clip=CLIP)
    raws = iter(ClipDataset(resolve("walk", root), config))
    for seed in range(3):
        raw = next(raws)  # one clip: multicrop_cpu draws per clip, multicrop_tensor per batch of one
        gpu = GpuAugmenter(config.multicrop, "cuda", seed=seed)(raw)
        frames = decode_clip([bytes(j.numpy()) for j in raw.jpgs])
        cpu = [A.normalise_uint8(v) for v in multicrop_cpu([frames], np.random.default_rng(seed), config.multicrop)]
        assert len(gpu) == len(cpu) == 1 + config.multicrop.n_local
        for a, b in zip(gpu, cpu):
            assert a.device.type == "cuda" and a.shape == b.shape and a.dtype == b.dtype == torch.float32
            error = (a.cpu() - b).abs().mean() / GREY_LEVEL
            assert error < 0.75, f"GPU vs CPU path: {error:.3f} grey levels"  # 0.3 between the CPU-run paths


def test_pinned_batches_free_their_worker_sets_and_keep_their_values(root):
    """With pin_memory the loader tracks the views the worker filled (the pinned copy's `lease_refs`):
    sets are reused, and the pinned batches are those of a loader without reuse."""
    import hashlib

    from wtours.clips.pipeline import make_loader

    def digest(batch) -> str:
        return hashlib.sha256(b"".join(v.cpu().numpy().tobytes() for v in batch)).hexdigest()

    config = LoaderConfig(batch_size=2, workers=1, clip=ClipConfig(frames=2, stride=0.5), shuffle_buffer=4)
    plain = torch.utils.data.DataLoader(ClipDataset(resolve("walk", root), config), batch_size=None, num_workers=1)
    expected = [digest(b) for b in list(plain)]
    assert len(expected) >= 8
    leases, seen = [], []
    for batch in make_loader(ClipDataset(resolve("walk", root), config), pin_memory=True):
        assert all(v.is_pinned() for v in batch) and batch.lease_refs is not None  # the worker's views, tracked
        seen.append(digest(batch))
        leases.append(batch.lease)
    assert seen == expected
    assert all(lease is not None for lease in leases) and len({lease.cell for lease in leases}) < len(leases)
