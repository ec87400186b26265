"""Time ``[images.remove_background]`` per image: the tiny test model and a real-size u2net.

Needs kohya's Python stack (torch to export the u2net-shaped model, onnx, onnxruntime, numpy)::

    python bench/bench_cutout.py                 # 16 images of 512x768, both models
    python bench/bench_cutout.py --images 32 --side 1024

The real-size model is U^2-Net's architecture (Qin et al. 2020, the ``u2net.onnx`` rembg ships:
RSU-7/6/5/4/4F encoder and decoder, 44 M parameters, input ``[1, 3, 320, 320]``, seven
``[1, 1, 320, 320]`` outputs) with random weights, exported once with ``torch.onnx.export`` to
``.bench/u2net-random.onnx`` (176 MB; never committed). Random weights cost what trained ones
cost. Each model is timed cold (the model runs for every image: the segmentation script's start,
the model load and the inference, then the cut-outs rendered) and warm-rendered (a new threshold:
the cached masks re-rendered, no model run), through :func:`lorabuild.build.cutout.cut_out`.
The CPU time of the children (the script's process) is printed beside the wall time.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lorabuild.build import cutout  # noqa: E402
from lorabuild.recipe.schema import ImagesSection, RemoveBackground  # noqa: E402
from tests.tiny_segmenter import busy_dataset, write_segmenter  # noqa: E402

BENCH = REPO / ".bench" / "cutout"


def u2net_model(path: Path) -> Path:
    """Export a random-weight U^2-Net (rembg's u2net.onnx signature) once."""
    if path.is_file():
        return path
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ConvBnRelu(nn.Module):
        def __init__(self, cin: int, cout: int, dilation: int = 1) -> None:
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation)
            self.bn = nn.BatchNorm2d(cout)

        def forward(self, x: Any) -> Any:
            return F.relu(self.bn(self.conv(x)))

    class RSU(nn.Module):
        """A residual U-block of ``depth`` levels (RSU-7 ... RSU-4); ``dilated``: RSU-4F."""

        def __init__(self, depth: int, cin: int, mid: int, cout: int, dilated: bool = False) -> None:
            super().__init__()
            self.dilated = dilated
            self.inp = ConvBnRelu(cin, cout)
            dil = [1, 2, 4, 8] if dilated else [1] * (depth - 1) + [2]
            self.enc = nn.ModuleList(
                [ConvBnRelu(cout, mid, dil[0])] + [ConvBnRelu(mid, mid, d) for d in dil[1:]]
            )
            dec = [4, 2] if dilated else [1] * (depth - 2)
            self.dec = nn.ModuleList([ConvBnRelu(mid * 2, mid, d) for d in dec] + [ConvBnRelu(mid * 2, cout)])

        def forward(self, x: Any) -> Any:
            hin = self.inp(x)
            skips, h = [], hin
            for n, layer in enumerate(self.enc):
                h = layer(h)
                skips.append(h)
                if not self.dilated and n < len(self.enc) - 2:
                    h = F.max_pool2d(h, 2, ceil_mode=True)
            h = skips.pop()
            for layer in self.dec:
                skip = skips.pop()
                if h.shape[-2:] != skip.shape[-2:]:
                    h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear")
                h = layer(torch.cat([h, skip], 1))
            return h + hin

    class U2Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stages = nn.ModuleList(
                [
                    RSU(7, 3, 32, 64),
                    RSU(6, 64, 32, 128),
                    RSU(5, 128, 64, 256),
                    RSU(4, 256, 128, 512),
                    RSU(4, 512, 256, 512, True),
                    RSU(4, 512, 256, 512, True),
                ]
            )
            self.decoders = nn.ModuleList(
                [
                    RSU(4, 1024, 256, 512, True),
                    RSU(4, 1024, 128, 256),
                    RSU(5, 512, 64, 128),
                    RSU(6, 256, 32, 64),
                    RSU(7, 128, 16, 64),
                ]
            )
            self.sides = nn.ModuleList([nn.Conv2d(c, 1, 3, padding=1) for c in (64, 64, 128, 256, 512, 512)])
            self.out = nn.Conv2d(6, 1, 1)

        def forward(self, x: Any) -> Any:
            encoded, h = [], x
            for n, stage in enumerate(self.stages):
                h = stage(h)
                encoded.append(h)
                if n < len(self.stages) - 1:
                    h = F.max_pool2d(h, 2, ceil_mode=True)
            decoded = [encoded[-1]]
            h = encoded[-1]
            for stage, skip in zip(self.decoders, reversed(encoded[:-1]), strict=True):
                h = F.interpolate(h, size=skip.shape[-2:], mode="bilinear")
                h = stage(torch.cat([h, skip], 1))
                decoded.append(h)
            size = x.shape[-2:]
            sides = [
                F.interpolate(side(d), size=size, mode="bilinear")
                for side, d in zip(self.sides, reversed(decoded), strict=True)
            ]
            d0 = self.out(torch.cat(sides, 1))
            return tuple(torch.sigmoid(d) for d in [d0, *sides])

    torch.manual_seed(0)
    model = U2Net().eval()
    params = sum(p.numel() for p in model.parameters())
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 320, 320),),
            str(path),
            input_names=["input.1"],
            output_names=[f"d{n}" for n in range(7)],
            opset_version=17,
            dynamo=False,
        )
    size = path.stat().st_size / 1e6
    print(f"exported a random-weight U^2-Net: {params / 1e6:.1f} M parameters, {size:.0f} MB")
    return path


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cold(model: Path, jobs: list[cutout.CutoutJob], work: Path) -> tuple[float, float]:
    """Wall and child CPU seconds of a cut-out run that runs the model for every job."""
    settings = RemoveBackground(model=model, threshold=0.5)
    shutil.rmtree(work, ignore_errors=True)
    cpu, start = child_cpu(), time.perf_counter()
    run = cutout.cut_out(jobs, settings, ImagesSection(background="white"), work, on_line=lambda line: None)
    assert run.segmented == len(jobs) and run.rendered == len(jobs)
    return time.perf_counter() - start, child_cpu() - cpu


def bench(name: str, model: Path, images: list[Path], work: Path) -> None:
    """One image, then all: the difference is the per-image cost, the rest the script's start."""
    jobs = [cutout.CutoutJob(p, 1) for p in images]
    one, _ = cold(model, jobs[:1], work)
    wall, cpu = cold(model, jobs, work)
    n = len(jobs)
    per_image = (wall - one) / (n - 1)
    start = time.perf_counter()
    settings = RemoveBackground(model=model, threshold=0.6)
    run = cutout.cut_out(jobs, settings, ImagesSection(background="white"), work, on_line=lambda line: None)
    warm = time.perf_counter() - start
    assert run.segmented == 0
    print(
        f"{name:<30} {n} images cold {wall:6.2f} s (script CPU {cpu:6.2f} s): {1000 * per_image:7.1f} ms/image "
        f"+ {one - per_image:4.2f} s start (python, onnxruntime, model load); "
        f"new threshold from cached masks: {1000 * warm / n:5.1f} ms/image"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--side", type=int, default=512, help="the images' shorter side (the longer is 1.5x)")
    args = parser.parse_args()
    data = BENCH / f"data-{args.images}-{args.side}"
    if not data.is_dir():
        busy_dataset(data, args.images, (args.side, args.side * 3 // 2), seed=random.randrange(1000))
    images = sorted(p for p in data.iterdir() if p.suffix in (".png", ".jpg"))
    tiny = write_segmenter(BENCH / "tiny-u2net.onnx", 320, "u2net")
    real = u2net_model(BENCH / "u2net-random.onnx")
    print(f"{os.cpu_count()} cores; images {args.side}x{args.side * 3 // 2}")
    bench("tiny u2net-shaped (1x1 conv)", tiny, images, BENCH / "work-tiny")
    bench("U^2-Net random weights", real, images, BENCH / "work-u2net")


if __name__ == "__main__":
    main()
