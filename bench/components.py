"""Connected components of near-duplicate edges: scipy (what pipeline/text.py uses) against the former numpy code.

    python bench/components.py            # 200k nodes
    python bench/components.py --smoke

The edges ``near_duplicate_groups`` verifies are joined into groups labelled by their smallest row. Graphs:
random pairs (mostly small groups), one chain linked in index order, reversed, and shuffled (a chain of
near-duplicates whose rows are scattered through the file: what a gradually edited template gives). Both
implementations must give the same labels; the former one is skipped on the shuffled chain above
``--former-max-chain`` nodes (it needs a round per few links: 498 s at 200k nodes on 2026-12-01).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from pipeline.text import connected_components  # noqa: E402

connected_components(2, np.array([0]), np.array([1]))  # scipy imported before anything is timed


def former(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """pipeline/text.py before 2026-12-01: min-label propagation with pointer jumping, in numpy."""
    labels = np.arange(n)
    if len(a) == 0:
        return labels
    while True:
        m = np.minimum(labels[a], labels[b])
        new = labels.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]
        if np.array_equal(new, labels):
            return labels
        labels = new


def graphs(n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    order = rng.permutation(n)
    return {
        "random pairs (n/2 edges)": (rng.integers(0, n, n // 2), rng.integers(0, n, n // 2)),
        "one chain, index order": (np.arange(n - 1), np.arange(1, n)),
        "one chain, reversed": (np.arange(1, n)[::-1], np.arange(n - 1)[::-1]),
        "one chain, shuffled": (order[:-1], order[1:]),
    }


def timed(f, *args) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    out = f(*args)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=200_000)
    ap.add_argument("--former-max-chain", type=int, default=20_000,
                    help="run the former code on a shuffled chain only up to this many nodes (it is quadratic)")
    ap.add_argument("--smoke", action="store_true", help="2,000 nodes (checks the bench runs)")
    args = ap.parse_args()
    if args.smoke:
        args.nodes = 2_000
    print(f"{args.nodes:,} nodes")
    print("| graph | scipy (pipeline/text.py) | former numpy | same labels |")
    print("|---|---|---|---|")
    for name, (a, b) in graphs(args.nodes).items():
        t_new, new = timed(connected_components, args.nodes, a, b)
        if "shuffled" in name and args.nodes > args.former_max_chain:
            k = args.former_max_chain  # the same kind of graph, smaller
            order = np.random.default_rng(0).permutation(k)
            t_old, old = timed(former, k, order[:-1], order[1:])
            same = np.array_equal(old, connected_components(k, order[:-1], order[1:]))
            print(f"| {name} | {t_new:.3f} s | {t_old:.1f} s at {k:,} nodes | {'yes' if same else 'NO'} |")
            continue
        t_old, old = timed(former, args.nodes, a, b)
        print(f"| {name} | {t_new:.3f} s | {t_old:.3f} s | {'yes' if np.array_equal(old, new) else 'NO'} |")


if __name__ == "__main__":
    main()
