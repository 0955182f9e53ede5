"""How long fmnist-resnet's first segment takes at batch 1 depending on what ran before it.

    taskset -c 1 .venv/bin/python benchmarks/stage_context.py

Back to back on the same input (what an isolated profile measures), right after a batch of
another size, after 3 ms of sleep, after 3 ms of spinning, and on a fresh input each time.
One torch thread, pinned to the last allowed core. Prints the median and p90 (ms).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from offramp.profiling.job import ProfileJob, load_model


def main() -> None:
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    torch.set_num_threads(1)
    model, example, _ = load_model(ProfileJob(model="fmnist-resnet", output="unused"))
    seg = model.segments[0]
    rng = np.random.default_rng(0)
    xs = {b: example(b) for b in range(1, 9)}

    def timed(x) -> float:
        t0 = time.perf_counter_ns()
        with torch.inference_mode():
            seg(x)
        return (time.perf_counter_ns() - t0) / 1e6

    for _ in range(50):
        timed(xs[1])
    cases = {"back to back": [timed(xs[1]) for _ in range(400)]}
    mixed = []
    for _ in range(400):
        timed(xs[int(rng.integers(2, 9))])
        mixed.append(timed(xs[1]))
    cases["after another size"] = mixed
    slept = []
    for _ in range(200):
        time.sleep(0.003)
        slept.append(timed(xs[1]))
    cases["after 3 ms sleep"] = slept
    spun = []
    for _ in range(200):
        end = time.perf_counter() + 0.003
        while time.perf_counter() < end:
            pass
        spun.append(timed(xs[1]))
    cases["after 3 ms spin"] = spun
    cases["fresh input"] = [timed(torch.from_numpy(rng.random((1, 1, 28, 28), dtype=np.float32)))
                            for _ in range(200)]
    for name, v in cases.items():
        print(f"{name:20} median {np.median(v):.3f} ms  p90 {np.percentile(v, 90):.3f} ms")


if __name__ == "__main__":
    main()
