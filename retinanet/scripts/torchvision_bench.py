"""torchvision's figures for `focal bench train-step` / `focal bench infer`, measured on
the same machine so that the ratio is side by side.

    python retinanet/scripts/torchvision_bench.py --size 512 --batch 2

`python` is any Python with torch and torchvision (pip install torch torchvision); it is
never a dependency of focal.

RetinaNet with a ResNet-18 FPN backbone (F = 256, trainable BatchNorm, random weights,
P6 from C5 as for a non-256-channel C5), 91 classes, resize fixed to the input size,
torch.set_num_threads(threads). One training step = forward with the loss, backward and an
SGD update; inference = eval-mode forward with post-processing. Medians over the steps
after one warm-up (wall time `ms`, best `min_ms`, and `cpu_ms`, the process's CPU time
per step, steadier on a shared machine); peak RSS from /proc/self/status VmHWM. Prints
one JSON line per mode.
"""
import argparse
import json
import time

import torch
from torchvision.models import resnet18
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.ops.feature_pyramid_network import LastLevelP6P7


def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=["train-step", "infer", "both"], default="both")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    backbone = _resnet_fpn_extractor(
        resnet18(), 5, returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(512, 256)
    )
    model = RetinaNet(backbone, num_classes=91, min_size=a.size, max_size=a.size)
    images = [torch.rand(3, a.size, a.size) for _ in range(a.batch)]
    g = torch.Generator().manual_seed(1)
    targets = []
    for _ in range(a.batch):
        xy = torch.rand(4, 2, generator=g) * (a.size * 0.6)
        wh = 16 + torch.rand(4, 2, generator=g) * (a.size * 0.35)
        targets.append({"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(1, 91, (4,), generator=g)})
    opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=1e-4)
    modes = ["train-step", "infer"] if a.mode == "both" else [a.mode]
    for mode in modes:
        times, cpu = [], []
        for step in range(a.steps + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            if mode == "train-step":
                model.train()
                losses = model(images, targets)
                loss = sum(losses.values())
                opt.zero_grad()
                loss.backward()
                opt.step()
            else:
                model.eval()
                with torch.no_grad():
                    model(images)
            if step > 0:
                times.append((time.perf_counter() - t0) * 1000)
                cpu.append((time.process_time() - c0) * 1000)
        times.sort()
        cpu.sort()
        print(json.dumps({
            "impl": "torchvision", "mode": mode, "size": a.size, "batch": a.batch,
            "threads": a.threads, "ms": times[len(times) // 2], "min_ms": times[0],
            "cpu_ms": cpu[len(cpu) // 2],
            "peak_rss_mb": peak_rss_mb(),
        }))


if __name__ == "__main__":
    main()
