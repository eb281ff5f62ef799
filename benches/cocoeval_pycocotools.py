"""pycocotools' side of benches/cocoeval.rs: times COCOeval (bbox) on the same files.

    cargo bench --bench cocoeval                               # writes the files first
    python benches/cocoeval_pycocotools.py [target/cocoeval-bench]

`python` is any Python with pycocotools and NumPy (pip install pycocotools numpy).

Times loading (COCO() + loadRes) separately from evaluate + accumulate + summarize, and
compares the 12 numbers with the ones focal wrote to focal_stats.json.
"""

import contextlib
import io
import json
import os
import sys
import time

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "cocoeval-bench")
quiet = contextlib.redirect_stdout(io.StringIO())

t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    gt = COCO(os.path.join(folder, "gt.json"))
    dt = gt.loadRes(os.path.join(folder, "dt.json"))
print(f"  load both files (pycocotools):       {time.perf_counter() - t:8.3f} s")

t = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
printed = io.StringIO()
with contextlib.redirect_stdout(printed):
    ev.summarize()
print(f"  evaluate+accumulate+summarize (pycocotools): {time.perf_counter() - t:8.3f} s")
print(printed.getvalue(), end="")

focal_path = os.path.join(folder, "focal_stats.json")
if os.path.exists(focal_path):
    with open(focal_path) as f:
        focal = json.load(f)
    diff = max(abs(a - float(b)) for a, b in zip(focal, ev.stats))
    same = all(a == float(b) for a, b in zip(focal, ev.stats))
    print(f"  max |focal - pycocotools| over the 12 numbers: {diff:.3g} (bit-identical: {same})")
