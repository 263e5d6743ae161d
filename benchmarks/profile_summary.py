"""Where a process spent its time: the busiest frames of a py-spy raw profile.

``benchmarks/load_test.py --profile DIR`` records every process with py-spy (raw
collapsed stacks, all threads, idle ones included). This keeps the samples of threads
that were working (their innermost frame is not a wait: a thread pool's queue, the
event loop's selector, a lock or condition) and prints the frames under which most of
them fell (inclusive) and the frames that were running (self), as shares of the busy
samples.

Run: .venv/bin/python benchmarks/profile_summary.py DIR/clients-1000/coordinator.txt [--top 40]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

IDLE_FRAMES = (
    "_worker (concurrent/futures/thread.py:81)",
    "EpollSelector.select",
    "select (selectors",
    "Condition.wait",
    "Event.wait",
    "_wait_for_tstate_lock",
)
"""Innermost frames of a thread that is waiting, not working."""


def summarize(path: Path) -> tuple[int, int, Counter[str], Counter[str]]:
    """All samples, busy samples, and busy samples per frame (inclusive, self)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = busy = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        if frames[-1].startswith(IDLE_FRAMES):
            continue
        busy += count
        own[frames[-1]] += count
        for frame in set(frames[1:]):  # frames[0] names the thread
            inclusive[frame] += count
    return total, busy, inclusive, own


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("profile", type=Path, help="a py-spy --format raw output file")
    parser.add_argument("--top", type=int, default=40, help="frames to list")
    args = parser.parse_args()
    total, busy, inclusive, own = summarize(args.profile)
    print(f"{args.profile}: {total} samples, {busy} busy")
    for title, counts in (("inclusive", inclusive), ("self", own)):
        print(f"--- {title}, share of busy samples")
        for frame, count in counts.most_common(args.top):
            print(f"{count:7d} {100 * count / max(busy, 1):5.1f}% {frame[:140]}")


if __name__ == "__main__":
    main()
