"""The clip pipeline: clip formation, exact epoch length, rank/worker split, robustness, multi-crop."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tests.http_server import FileServer
from tests.reference_multicrop import PIL_OPS, multicrop_pil
from tests.videos import run_ffmpeg
from wtours.cli.main import cli
from wtours.clips import augment as A
from wtours.clips.augment_cpu import _CPU_OPS, colour_cpu, decode_clip, multicrop_cpu
from wtours.clips.epoch import ClipConfig, clip_starts, clips_per_epoch, plan_epoch
from wtours.clips.pipeline import ClipDataset, GpuAugmenter, LoaderConfig, make_loader
from wtours.clips.spec import ShardRef, resolve
from wtours.clips.stages import Problems, open_shards, samples_to_clips, shuffle, tar_samples, take_quota
from wtours.download import add_local
from wtours.errors import WtoursError
from wtours.layout import Layout
from wtours.shard.params import RunOptions, ShardParams
from wtours.shard.run import shard_video
from wtours.shard.writer import ShardWriter, encode_json

CLIP = ClipConfig(frames=4, stride=1.0)


@pytest.fixture(scope="module")
def gapped(tmp_path_factory) -> Layout:
    """24 s walk with a 4 s black stretch at 10-14 s, sharded at 2 fps, 12 cells (6 s) per shard."""
    folder = tmp_path_factory.mktemp("gapped")
    video = folder / "gap.mp4"
    graph = ("testsrc2=size=192x128:rate=25:duration=10[a];color=c=black:size=192x128:rate=25:duration=4[b];"
             "testsrc2=size=192x128:rate=25:duration=10,hflip[c];[a][b][c]concat=n=3:v=1:a=0[v]")
    run_ffmpeg(["-filter_complex", graph, "-map", "[v]", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
                "yuv420p", str(video)])
    layout = Layout(folder / "root")
    add_local(video, "gap", layout.root, mode="symlink", say=lambda m: None)
    shard_video(layout, "gap", ShardParams(fps=2.0, short_side=128, samples_per_shard=12),
                RunOptions(workers=2, progress=False), say=lambda m: None)
    return layout


def all_clips(shards: list[ShardRef], config: ClipConfig, epoch: int = 0) -> list[dict]:
    from wtours.clips.epoch import epoch_starts

    problems = Problems()
    starts = {s.url: set(epoch_starts(s, config, epoch)) for s in shards}
    samples = tar_samples(open_shards(shards, problems), problems)
    return list(samples_to_clips(samples, {s.url: s for s in shards}, starts, config, problems))


def test_clips_never_span_a_gap_and_keep_their_stride(gapped):
    shards = resolve("gap", gapped.root)
    index = gapped.read_index("gap")
    assert index["dropped"] == {"blank": 8} and index["blank_stretches"] == [[10.0, 13.52]]  # 25 fps frame times
    clips = all_clips(shards, CLIP)
    assert len(clips) == clips_per_epoch(shards, CLIP)
    for clip in clips:
        times = [m["t"] for m in clip["meta"]]
        assert np.allclose(np.diff(times), 1.0, atol=0.05), times
        assert not any(10.0 <= t < 14.0 for t in times)
        assert times[-1] < 10.0 or times[0] >= 14.0, f"clip spans the blank stretch: {times}"


def test_epoch_length_is_exact_from_the_index(gapped):
    shards = resolve("gap", gapped.root)
    # by hand: shards cover cells 0-11 | 12-19 (20-27 blank) | 28-35 | 36-47; a 4-frame clip spans 6 cells
    runs = [r for s in shards for r in s.cell_runs]
    assert runs == [(0, 11), (12, 19), (28, 35), (36, 47)]
    assert clips_per_epoch(shards, CLIP) == 6 + 2 + 2 + 6
    result = CliRunner().invoke(cli, ["inspect", "gap", "--root", str(gapped.root), "--clip-frames", "4", "--json"])
    info = json.loads(result.output)
    assert info["clips_per_epoch"] == 16 and info["videos"]["gap"]["gaps"] == [[10.0, 14.0]]
    subset = ClipConfig(frames=4, stride=1.0, clips_per_shard=3)
    assert clips_per_epoch(shards, subset) == 3 + 2 + 2 + 3 == len(all_clips(shards, subset, epoch=5))


def test_stride_must_fit_the_grid(gapped):
    shards = resolve("gap", gapped.root)
    with pytest.raises(WtoursError, match="whole number of frames"):
        clip_starts(shards[0], ClipConfig(frames=4, stride=0.75))


def ref(name: str, cells: int, first: int = 0) -> ShardRef:
    return ShardRef(url=name, name=name, slug="v", samples=cells, fps=2.0, cell_runs=((first, first + cells - 1),),
                    t_start=first / 2, t_end=(first + cells - 1) / 2)


def test_epoch_plan_balances_and_is_deterministic():
    shards = [ref(f"s{i}", cells) for i, cells in enumerate([40, 30, 30, 20, 20, 20, 10, 12])]
    plan = plan_epoch(shards, CLIP, epoch=3, num_slots=4, batch_size=4)
    assert sorted(i for slot in plan.slots for i in slot) == list(range(8))
    assert plan == plan_epoch(shards, CLIP, epoch=3, num_slots=4, batch_size=4)
    assert plan.slots != plan_epoch(shards, CLIP, epoch=4, num_slots=4, batch_size=4).slots
    assert plan.quota % 4 == 0 and plan.quota >= max(plan.slot_clips)
    assert max(plan.slot_clips) - min(plan.slot_clips) <= 34  # no slot far heavier than another
    assert plan.total_clips == clips_per_epoch(shards, CLIP)


def test_two_ranks_two_workers_disjoint_and_covering(gapped):
    shards = resolve("gap", gapped.root)
    config = LoaderConfig(batch_size=2, workers=2, augment="gpu", clip=CLIP, shuffle_buffer=4)
    seen: dict[int, list[str]] = {}
    lengths = []
    for rank in range(2):
        dataset = ClipDataset(shards, config, rank=rank, world_size=2)
        dataset.set_epoch(1)
        batches = list(make_loader(dataset))
        lengths.append((len(batches), len(dataset)))
        seen[rank] = [key for batch in batches for key in batch.keys]
    assert lengths[0] == lengths[1] and lengths[0][0] == lengths[0][1]
    plan = ClipDataset(shards, config, world_size=2).plan()
    plan_1 = plan_epoch(shards, CLIP, epoch=1, num_slots=4, batch_size=2)
    assert [sorted(s) for s in plan_1.slots if s] and sum(len(s) for s in plan_1.slots) == len(shards)
    assert plan.quota > 0
    expected = {c["__key__"] for c in all_clips(shards, CLIP)}
    assert set(seen[0]) | set(seen[1]) == expected  # together they cover the epoch
    shard_of = {}
    for s in shards:
        for c in all_clips([s], CLIP):
            shard_of[c["__key__"]] = s.name
    assert not {shard_of[k] for k in seen[0]} & {shard_of[k] for k in seen[1]}  # disjoint shards


def test_corrupted_and_missing_shards_are_skipped_and_counted(gapped, tmp_path, caplog):
    shards = resolve("gap", gapped.root)
    broken = tmp_path / "broken.tar"
    data = Path(shards[0].url).read_bytes()
    broken.write_bytes(data[: len(data) // 3])
    garbage = tmp_path / "garbage.tar"
    garbage.write_bytes(b"not a tar at all" * 4000)
    bad = [ShardRef(**{**s.__dict__, "url": str(p)}) for s, p in ((shards[0], broken), (shards[3], garbage))]
    missing = ShardRef(**{**shards[1].__dict__, "url": str(tmp_path / "nope.tar")})
    mixed = bad + [missing] + shards[1:3]
    dataset = ClipDataset(mixed, LoaderConfig(batch_size=2, workers=0, augment="gpu", clip=CLIP))
    with caplog.at_level(logging.WARNING):
        keys = [k for batch in dataset for k in batch.keys]
    assert set(dataset.problems.bad_shards) == {str(broken), str(garbage), str(tmp_path / "nope.tar")}
    assert sum("skipping unreadable shard" in r.message for r in caplog.records) == 3  # one warning each
    assert len(keys) == len(dataset) * 2 and keys


def test_sample_with_missing_field_is_dropped_and_counted(tmp_path):
    writer = ShardWriter(tmp_path / "v-000000.tar")
    for cell in range(6):
        fields = {"jpg": b"\xff\xd8fake", "json": encode_json({"t": cell / 2, "frame": cell, "video": "v"})}
        if cell == 2:
            del fields["json"]
        writer.write(f"v-{cell:08d}", fields)
    writer.close()
    shard = ShardRef(url=str(tmp_path / "v-000000.tar"), name="v-000000.tar", slug="v", samples=6, fps=2.0,
                     cell_runs=((0, 5),), t_start=0, t_end=2.5)
    problems = Problems()
    config = ClipConfig(frames=2, stride=0.5)
    clips = list(samples_to_clips(tar_samples(open_shards([shard], problems), problems), {shard.url: shard},
                                  {shard.url: {0, 1, 2, 3, 4}}, config, problems))
    assert problems.bad_samples == 1
    assert [c["start_cell"] for c in clips] == [0, 3, 4]  # no clip uses the broken cell 2


def test_clip_with_an_undecodable_frame_is_counted_and_replaced(gapped, tmp_path, caplog):
    """A JPEG damaged inside a readable shard: its clips are counted with one warning, and other clips
    of their batches take their places, so batches keep their size."""
    source = resolve("gap", gapped.root)[0]
    problems = Problems()
    samples = list(tar_samples(open_shards([source], problems), problems))
    damaged = samples[5]["__key__"]
    writer = ShardWriter(tmp_path / "gap-000000.tar")
    for sample in samples:
        jpg = sample["jpg"][: len(sample["jpg"]) // 3] if sample["__key__"] == damaged else sample["jpg"]
        writer.write(sample["__key__"], {"jpg": jpg, "json": sample["json"]})
    writer.close()
    shard = dataclasses.replace(source, url=str(tmp_path / "gap-000000.tar"))
    affected = sum(samples[5]["jpg"] in clip["jpgs"] for clip in all_clips([source], CLIP))
    assert affected > 0
    dataset = ClipDataset([shard], LoaderConfig(batch_size=3, workers=0, clip=CLIP))
    with caplog.at_level(logging.WARNING):
        batches = list(dataset)
    assert dataset.problems.bad_clips == affected
    assert sum("does not decode" in r.message for r in caplog.records) == 1
    assert all(b[0].shape[0] == 3 for b in batches) and len(batches) == len(dataset)


def test_spec_matching_nothing_fails_first(tmp_path):
    with pytest.raises(WtoursError, match=r"SPEC '.*nothing-\{0\.\.3\}\.tar' matches no shard"):
        resolve(str(tmp_path / "nothing-{0..3}.tar"))
    with pytest.raises(WtoursError, match="wtours shard --city venice"):
        resolve("venice", tmp_path)


def test_specs_mix_local_patterns_and_http(gapped):
    folder = gapped.shard_dir("gap")
    local = resolve(str(folder / "gap-{000000..000001}.tar"))
    assert [s.name for s in local] == ["gap-000000.tar", "gap-000001.tar"]
    with FileServer(folder) as server:
        remote = resolve(server.url("gap-{000002..000003}.tar"))
        mixed = resolve([str(folder / "gap-{000000..000001}.tar"), server.url("gap-{000002..000003}.tar")])
        assert len(mixed) == 4 and mixed[2].url.startswith("http://")
        http_keys = [c["__key__"] for c in all_clips(remote, CLIP)]
    local_keys = [c["__key__"] for c in all_clips(resolve("gap", gapped.root)[2:], CLIP)]
    assert http_keys == local_keys and http_keys


def test_stages_work_on_plain_lists():
    assert sorted(shuffle(range(50), 8, random.Random(0))) == list(range(50))
    assert list(take_quota(lambda n: iter(["a", "b"]), 5)) == ["a", "b", "a", "b", "a"]


# ------------------------------------------------------------------------------- augmentation


def test_box_sampler_matches_the_spec_ranges():
    rng = np.random.default_rng(0)
    boxes = A.sample_boxes(rng, np.full(20000, 512.0), np.full(20000, 910.0), (0.2, 1.0), (3 / 4, 4 / 3))
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    area = w * h / (512 * 910)
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 910).all() and (boxes[:, 3] <= 512).all()
    found = (w / h >= 0.74) & (w / h <= 1.34)
    assert found.mean() > 0.99 and area[found].min() > 0.19 and area[found].max() <= 1.0


def test_colour_probabilities_follow_the_spec():
    config = A.MultiCropConfig()
    plan = A.plan_colours(np.random.default_rng(1), 40000, config.local_blur_p, config)
    assert plan.jitter.mean() == pytest.approx(0.8, abs=0.01)
    assert plan.gray.mean() == pytest.approx(0.2, abs=0.01)
    assert (~np.isnan(plan.blur_sigma)).mean() == pytest.approx(0.5, abs=0.01)
    assert np.nanmin(plan.blur_sigma) >= 0.1 and np.nanmax(plan.blur_sigma) <= 2.0
    assert plan.factors[:, 0].min() >= 0.6 and plan.factors[:, 0].max() <= 1.4
    assert np.abs(plan.factors[:, 3]).max() <= 0.1
    assert sorted(map(tuple, np.unique(plan.order, axis=0)))[:1] and len(np.unique(plan.order, axis=0)) == 24
    flips = A.plan_crops(np.random.default_rng(2), np.full((20000, 2), 300), 2, config).flips
    assert flips.mean() == pytest.approx(0.5, abs=0.015)
    global_blur = A.plan_colours(np.random.default_rng(3), 40000, config.global_blur_p, config)
    assert (~np.isnan(global_blur.blur_sigma)).mean() == pytest.approx(0.1, abs=0.01)


def frames_of(clips: list[dict]):
    from PIL import Image
    import io

    return [[Image.open(io.BytesIO(j)).convert("RGB") for j in clip["jpgs"]] for clip in clips]


def jpeg_bytes(array: np.ndarray) -> bytes:
    from PIL import Image
    import io

    out = io.BytesIO()
    Image.fromarray(array).save(out, "JPEG", quality=95)
    return out.getvalue()


def test_global_window_is_shared_and_locals_are_per_frame():
    """Identical frames, colour off: the T global views are equal, the local views are not."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (128, 192, 3), dtype=np.uint8)
    plain = A.MultiCropConfig(jitter_p=0, gray_p=0, global_blur_p=0, local_blur_p=0)
    views = multicrop_cpu([decode_clip([jpeg_bytes(image)] * 4)], np.random.default_rng(7), plain)
    assert all(torch.equal(views[0][0, 0], views[0][0, j]) for j in range(4))
    local = views[1][0]
    assert not all(torch.equal(local[0], local[j]) for j in range(1, 4))
    tensor_views = A.multicrop_tensor(torch.from_numpy(image).permute(2, 0, 1)[None].repeat(4, 1, 1, 1),
                                      np.array([[128, 192]]), 4, np.random.default_rng(7), plain)
    assert all(torch.equal(tensor_views[0][0, 0], tensor_views[0][0, j]) for j in range(4))


def test_cpu_and_tensor_paths_agree(gapped):
    """Same parameters, same frames: the CPU (workers) and tensor (GPU) paths give nearly the same pixels."""
    clip = all_clips(resolve("gap", gapped.root), CLIP)[0]
    images = frames_of([clip])[0]
    cpu = multicrop_cpu([decode_clip(clip["jpgs"])], np.random.default_rng(11), A.MultiCropConfig())
    frames = torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).contiguous()
    tensor = A.multicrop_tensor(frames, np.array([[images[0].height, images[0].width]]), 4,
                                np.random.default_rng(11), A.MultiCropConfig())
    assert len(cpu) == len(tensor) == 7
    for a, b in zip(cpu, tensor):
        assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
        assert (a - b).abs().mean() < 0.5 / (255 * 0.226)  # half a grey level (0.23 to 0.32 seen)


def test_cpu_path_matches_the_authors_pil_pipeline(gapped):
    """The fast CPU kernels make the same views as DINO's/DoRA's PIL pipeline from the same parameters."""
    clip = all_clips(resolve("gap", gapped.root), CLIP)[0]
    fast = multicrop_cpu([decode_clip(clip["jpgs"])], np.random.default_rng(5), A.MultiCropConfig())
    authors = multicrop_pil(frames_of([clip])[0], np.random.default_rng(5), A.MultiCropConfig())
    grey_level = 1 / (255 * 0.226)  # one uint8 step in normalised units
    for a, b in zip(fast, authors):
        assert a.shape[1:] == b.shape
        # testsrc2's saturated bars magnify PIL's hue byte and blur approximation
        assert (a[0] - b).abs().mean() < 3 * grey_level


@pytest.mark.parametrize("op, factor", [(0, 1.3), (0, 0.7), (1, 1.35), (1, 0.65), (2, 1.2), (2, 0.8),
                                        (3, 0.07), (3, -0.09), (3, 0.1), (3, -0.1), (3, 0.0)])
def test_cpu_colour_ops_are_torchvisions_formulas(gapped, op, factor):
    """Each jitter op against torchvision's float formula: within rounding, and closer than the PIL op
    the authors' pipeline uses (which truncates, and quantises the hue to a byte)."""
    from PIL import Image

    image = np.asarray(frames_of(all_clips(resolve("gap", gapped.root), CLIP)[:1])[0][0])
    exact = A._jitter_op(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255, op, torch.tensor([factor]))
    exact = exact[0].permute(1, 2, 0).numpy() * 255
    fast = image.copy()
    _CPU_OPS[op](fast, factor)
    authors = np.asarray(PIL_OPS[op](Image.fromarray(image), factor)).astype(float)
    error, authors_error = np.abs(fast - exact), np.abs(authors - exact)
    assert error.mean() <= min(0.3, authors_error.mean())
    assert error.max() <= 0.51  # the reference is float32


@pytest.mark.parametrize("sigma", [0.1, 0.7, 2.0])
def test_cpu_blur_is_a_gaussian_of_that_sigma(sigma):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
    plan = A.ColourPlan(jitter=np.array([False]), factors=np.zeros((1, 4)), order=np.zeros((1, 4), int),
                        gray=np.array([False]), blur_sigma=np.array([sigma]))
    exact = A._blur(torch.from_numpy(image).permute(0, 3, 1, 2).float(), torch.tensor([sigma]))
    colour_cpu(image, plan)
    error = np.abs(image[0].astype(float) - exact[0].permute(1, 2, 0).numpy())
    assert error.mean() <= 0.35 and error.max() <= 1.5  # OpenCV's uint8 blur has fixed-point weights


def test_batches_have_the_method_layout_and_normalisation(gapped):
    config = LoaderConfig(batch_size=3, workers=0, clip=CLIP)
    batch = next(iter(ClipDataset(resolve("gap", gapped.root), config)))
    assert [tuple(x.shape) for x in batch] == [(3, 4, 3, 224, 224)] + [(3, 4, 3, 112, 112)] * 6
    assert all(x.dtype == torch.float32 and x.is_contiguous() for x in batch)
    mean = torch.tensor(A.IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(A.IMAGENET_STD)[:, None, None]
    lo, hi = (0 - mean) / std, (1 - mean) / std
    for x in batch:
        assert (x >= lo - 1e-5).all() and (x <= hi + 1e-5).all()


def test_gpu_augmenter_runs_on_cpu_too(gapped):
    config = LoaderConfig(batch_size=2, workers=0, augment="gpu", clip=CLIP)
    raw = next(iter(ClipDataset(resolve("gap", gapped.root), config)))
    views = GpuAugmenter(config.multicrop, "cpu")(raw)
    assert [tuple(v.shape) for v in views] == [(2, 4, 3, 224, 224)] + [(2, 4, 3, 112, 112)] * 6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_augmenter_on_cuda_matches_cpu_tensor_path(gapped):
    config = LoaderConfig(batch_size=2, workers=0, augment="gpu", clip=CLIP)
    raw = next(iter(ClipDataset(resolve("gap", gapped.root), config)))
    cuda = GpuAugmenter(config.multicrop, "cuda", seed=3)(raw)
    cpu = GpuAugmenter(config.multicrop, "cpu", seed=3)(raw)
    for a, b in zip(cuda, cpu):
        assert (a.cpu() - b).abs().mean() < 0.02


def test_cpu_augmentation_without_opencv_says_what_to_install(gapped, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    monkeypatch.delitem(sys.modules, "wtours.clips.augment_cpu", raising=False)
    dataset = ClipDataset(resolve("gap", gapped.root), LoaderConfig(batch_size=2, workers=0, clip=CLIP))
    with pytest.raises(WtoursError, match="CPU augmentation") as error:
        next(iter(dataset))
    assert "opencv-python-headless" in error.value.hint
