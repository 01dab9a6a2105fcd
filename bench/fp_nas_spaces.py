"""What each FP-NAS space costs to set up (run by hand): its shape, entropy and the supernet's build time and memory.

    python bench/fp_nas_spaces.py                       # all three spaces at their default resolution
    python bench/fp_nas_spaces.py fbnetv2-f++

Each space is measured in a fresh process (so peak RSS is that space's alone): layers, choices per variable, joint
choices per layer, distribution parameters factorized vs joint, the uniform distribution's entropy H0 in nats,
the supernet's templates (one meta-device zoo module per input width and candidate), its build time and the
process's peak RSS, and the exact mult-adds range (`smallest_blocks` / `largest_blocks`) with its time.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time


def measure(name: str) -> dict:
    import resource

    import torch

    from fpnas_zoo import spec_from_dict
    from search.cost import MultAddsCost
    from search.probabilistic.algorithm import network_distribution
    from search.probabilistic.space import build_space
    from search.space import PROBE_METADATA
    from search.supernet import Supernet

    space = build_space(name)
    sizes = space.sizes()
    networks = [len(c) for c in space.candidates()]  # distinct blocks per layer: the joint form's logits
    with torch.no_grad():
        h0 = float(network_distribution(space, joint=False).entropy())
    base = spec_from_dict(space.spec_dict(space.default_blocks(), "probe", (0.5,) * 3, (0.5,) * 3,
                                          dict(PROBE_METADATA)))
    started = time.perf_counter()
    net = Supernet(base, space.candidates())
    build_s = time.perf_counter() - started
    started = time.perf_counter()
    cost = MultAddsCost(base)
    low, high = cost.cost(space.smallest_blocks()), cost.cost(space.largest_blocks())
    return {
        "space": name, "layers": len(sizes), "px": space.input_size[1],
        "choices": sorted({str(s) for s in sizes}), "joint_per_layer": sorted(set(networks)),
        "factorized": sum(map(sum, sizes)), "joint": sum(networks),
        "h0_nats": round(h0, 2),
        "templates": sum(len(b) for b in net._bound), "build_s": round(build_s, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "mult_adds_m": [round(low / 1e6, 1), round(high / 1e6, 1)],
        "extremes_s": round(time.perf_counter() - started, 1),
    }


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(measure(sys.argv[2])))
        return 0
    names = sys.argv[1:] or ["fbnetv2-f", "fbnetv2-f++", "fp-nas-l"]
    print("| space | layers @px | choices per layer | joint per layer | factorized vs joint parameters | H0 (nats) | "
          "templates | build | peak RSS | mult-adds range (extremes time) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        done = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True)
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {r['space']} | {r['layers']} @{r['px']} | {' / '.join(r['choices'])} | "
              f"{' / '.join(map(str, r['joint_per_layer']))} | {r['factorized']:,} vs {r['joint']:,} | "
              f"{r['h0_nats']} | "
              f"{r['templates']:,} | {r['build_s']} s | {r['peak_rss_gb']} GB | {r['mult_adds_m'][0]}M–"
              f"{r['mult_adds_m'][1]}M ({r['extremes_s']} s) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
