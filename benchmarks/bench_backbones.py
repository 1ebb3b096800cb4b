"""Training throughput of the ci/demo backbones: images per second, forward + backward, batch 64.

    python benchmarks/bench_backbones.py [--sizes 128x64 96x48] [--iters 3] [--names resnet_small ...]
                                         [--channels-last] [--amp]

Prints one Markdown row per (backbone, size), best of `--iters` timed steps after one warm-up step;
compare with the budget table in docs/design.md (measured on an otherwise idle machine). With
`--channels-last` a cell adds channels-last weights, with `--amp` bfloat16 autocast (on top of
channels-last when both are given), each as "rate (ratio to the plain float32 rate of the same run)": the
ratios behind `train.channels_last` (default on) and `train.amp` (on where it pays off).
"""

from __future__ import annotations

import argparse
import time

import torch

from reidlib.models import backbone_kind, build_backbone

# (label, registry name, kwargs)
DEFAULT = [
    ("resnet_tiny", "resnet_tiny", {}),
    ("resnet_small d10", "resnet_small", {"depth": 10}),
    # docs/design.md's reference (timm default stem width 64): 282 img/s at 128x64, 542 at 96x48, idle machine
    ("resnet_small d10 stem64 (DESIGN ref)", "resnet_small", {"depth": 10, "stem_width": 64}),
    ("resnet_small d18", "resnet_small", {"depth": 18}),
    ("resnet_small d10 IBN-a", "resnet_small", {"depth": 10, "ibn": True}),
    ("mobilenetv2", "mobilenetv2", {}),  # last stride 1
    ("vit_tiny_ci s16", "vit_tiny_ci", {}),
    ("vit_small_demo s16", "vit_small_demo", {}),  # convolutional stem (its default)
    ("vit_small_demo s16 hybrid", "vit_small_demo", {"stem": "hybrid"}),  # MobileNetV2 to stride 16
    ("vit_small_demo s16 patchify", "vit_small_demo", {"stem": "patchify"}),
    ("vit_small_demo s12 patchify", "vit_small_demo", {"stride": 12, "stem": "patchify"}),
    ("clip_tiny_ci", "clip_tiny_ci", {}),
    ("clip_small", "clip_small", {}),
    ("clip_small hybrid", "clip_small", {"stem": "hybrid"}),
]


def scalar_output(model, images: torch.Tensor, camids: torch.Tensor) -> torch.Tensor:
    kind = backbone_kind(model)
    if kind == "cnn":
        return model(images).mean()
    if kind == "vit":
        return model(images, camids).mean()
    cls, tokens = model.encode_image_tokens(images, camids)
    return cls.mean() + tokens.mean()


def images_per_second(name: str, kwargs: dict, size: tuple[int, int], batch: int, iters: int,
                      channels_last: bool = False, amp: bool = False) -> float:
    extra = {} if name.startswith(("resnet", "mobilenet")) else {"img_size": size}
    model = build_backbone(name, **kwargs, **extra).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    images = torch.randn(batch, 3, *size)
    camids = torch.zeros(batch, dtype=torch.long)
    times = []
    for i in range(iters + 1):  # first iteration warms up allocators and kernels
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = scalar_output(model, images, camids)
        out.backward()
        model.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - start)
    return batch / min(times)  # best of N: on a shared machine the fastest run is the least disturbed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["128x64", "96x48"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--names", nargs="*", help="labels to run (default: all)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--channels-last", action="store_true", help="also time channels-last weights")
    parser.add_argument("--amp", action="store_true", help="also time bfloat16 autocast")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, fwd+bwd")
    print("| backbone | " + " | ".join(args.sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for label, name, kwargs in DEFAULT:
        if args.names and label not in args.names and name not in args.names:
            continue
        variants = [{"channels_last": True}] if args.channels_last else []
        if args.amp:
            variants.append({"channels_last": args.channels_last, "amp": True})
        cells = []
        for size in sizes:
            rate = images_per_second(name, kwargs, size, args.batch, args.iters)
            cells.append(f"{rate:.0f}")
            for variant in variants:
                fast = images_per_second(name, kwargs, size, args.batch, args.iters, **variant)
                cells[-1] += f" / {fast:.0f} ({fast / rate:.2f}x)"
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
