"""Peak resident memory and wall time of a block of code, sampled from /proc (standard library only, so that it runs
in every environment: ours and the peers')."""

import os
import threading
import time


def rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Peak:
    """``with Peak() as m: ...`` then ``m.seconds`` and ``m.mib``: peak resident memory above the start, sampled
    every 2 ms while the block runs."""

    def __enter__(self):
        self.start, self.peak, self.stop = rss(), 0, False

        def watch():
            while not self.stop:
                self.peak = max(self.peak, rss())
                time.sleep(0.002)

        self.thread = threading.Thread(target=watch, daemon=True)
        self.thread.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.stop = True
        self.thread.join()
        self.peak = max(self.peak, rss())
        self.mib = (self.peak - self.start) / 2**20
