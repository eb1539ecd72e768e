"""Cost of `wtours stats --detector owlv2`: the vocabulary's text embeddings (once per run) and each frame.

The model is `Owlv2ForObjectDetection` with random weights at the architecture of OWLv2 B/16
(google/owlv2-base-patch16-ensemble: transformers' default Owlv2Config, ViT-B/16 image tower and 12-layer
text tower, at the 960x960 input of its image processor). Random weights cost what the released ones cost:
the same layers and shapes, and every query and box is scored whatever the values (only the few boxes
surviving the threshold and NMS differ). The tokenizer is a letters-only CLIP tokenizer (the real vocabulary
cannot be downloaded here); every query is padded or cut to the text model's 16 tokens either way.

Frames: random 683x512 RGB (the default shards' size), through the real processor (pad to a square, resize
to 960, normalise), the image tower, the class and box heads against LVIS v1's 1,203 queries, the threshold
and class-wise NMS: `Owlv2Detector.detect`, as `wtours stats` calls it. FLOPs per frame are counted by
torch.utils.flop_counter on one frame's model pass (eager attention, so that its matmuls are seen).

    python -m benchmarks.owlv2_bench [--device cpu|cuda] [--frames 4] [--batch-size 2]
"""

from __future__ import annotations

import argparse
import string
import time

import numpy as np
import torch

from benchmarks.common import header
from wtours.stats.owlv2 import Owlv2Detector
from wtours.stats.vocabulary import read_vocabulary

VIDEO_MINUTES = 98  # the reference: one long walk
FPS = 2.0  # the default shards' (and --from video's) sampling rate


def random_base_owlv2(device: str):
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    torch.manual_seed(0)
    config = Owlv2Config(vision_config={"image_size": 960})  # B/16 at OWLv2's 960 px input
    model = Owlv2ForObjectDetection(config).eval()
    letters = list(string.ascii_lowercase + "()-'.")
    vocab = {"!": 0, **{t: i + 1 for i, t in enumerate(letters + [c + "</w>" for c in letters])}}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessor(),
                               tokenizer=CLIPTokenizer(vocab=vocab, merges=[], pad_token="!"))
    parameters = sum(p.numel() for p in model.parameters())
    return model, processor, parameters


def model_flops(detector: Owlv2Detector, frame: np.ndarray) -> float:
    """FLOPs of one frame's model pass, counted with eager attention: torch's counter does not see inside the
    CPU kernel of scaled_dot_product_attention (it would miss the attention matmuls, 4·N²·d per layer)."""
    from torch.utils.flop_counter import FlopCounterMode

    detector.model.set_attn_implementation("eager")
    counter = FlopCounterMode(display=False)
    with counter:
        detector.scores([frame])
    detector.model.set_attn_implementation("sdpa")  # transformers' default, timed below
    return counter.get_total_flops()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--frames", type=int, default=4, help="frames timed (after one warm-up batch)")
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()
    print(header("owlv2_bench"))
    device = args.device
    model, processor, parameters = random_base_owlv2(device)
    vocabulary = read_vocabulary(None)
    print(f"model: Owlv2ForObjectDetection, random weights, {parameters / 1e6:.1f} M parameters, 960 px; "
          f"device {torch.cuda.get_device_name() if device == 'cuda' else 'cpu'}, {torch.get_num_threads()} threads")

    sync(device)
    start = time.perf_counter()
    detector = Owlv2Detector(model, processor, vocabulary, 0.1, 0.5, device)
    sync(device)
    text_s = time.perf_counter() - start
    print(f"text embeddings of {len(vocabulary.classes)} LVIS queries (once per run): {text_s:.2f} s")

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (512, 683, 3), dtype=np.uint8) for _ in range(args.frames + args.batch_size)]
    flops = model_flops(detector, frames[0])
    detector.detect(frames[:args.batch_size])  # warm-up
    sync(device)
    start = time.perf_counter()
    objects = 0
    for i in range(args.batch_size, len(frames), args.batch_size):
        objects += sum(found.objects for found in detector.detect(frames[i:i + args.batch_size]))
    sync(device)
    per_frame = (time.perf_counter() - start) / args.frames
    frames_98 = VIDEO_MINUTES * 60 * FPS
    print(f"model FLOPs per frame: {flops / 1e12:.2f} TFLOP (image tower, heads, 1,203 queries)")
    print(f"per frame: {per_frame:.2f} s at batch {args.batch_size} ({1 / per_frame:.2f} frames/s; "
          f"{flops / per_frame / 1e9:.0f} GFLOP/s sustained; {objects} boxes kept, random weights)")
    print(f"ROW owlv2 {device} batch {args.batch_size}: {per_frame * 1000:.0f} ms/frame, text {text_s:.1f} s, "
          f"{VIDEO_MINUTES}-min video at {FPS:g} fps ({frames_98:.0f} frames): {frames_98 * per_frame / 3600:.2f} h")
    for every in (1 / FPS, 2.0, 10.0):
        print(f"  --every {every:g}: {VIDEO_MINUTES * 60 / every:.0f} frames, "
              f"{VIDEO_MINUTES * 60 / every * per_frame / 3600:.2f} h on this device")


if __name__ == "__main__":
    main()
