"""Where the time goes: a clock that sums wall seconds per named stage, nested stages counted once.

    clock = StageClock()
    with clock("write"):            # a stage that pulls from a generator whose own stages are timed...
        write(rows())               # ...gets only its exclusive time: read, network, ... are not in "write"

A stage's seconds exclude the stages that ran inside it, so the stages sum to at most the wall time
and "other" (wall − sum) is what no stage covers. `sync` (e.g. torch.cuda.synchronize) runs at the
end of each stage, so asynchronous device work is charged to the stage that queued it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager


class StageClock:
    def __init__(self, sync=None):
        self.seconds: dict[str, float] = {}
        self._sync = sync
        self._inner: list[float] = []  # per open stage: seconds spent in stages nested inside it

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        self._inner.append(0.0)
        try:
            yield
        finally:
            if self._sync is not None:
                self._sync()
            elapsed = time.perf_counter() - t0
            inner = self._inner.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed - inner
            if self._inner:
                self._inner[-1] += elapsed

    def summary(self, wall: float) -> dict[str, float]:
        """Stage seconds (rounded), plus "other": the wall time no stage covers."""
        out = {k: round(v, 4) for k, v in self.seconds.items()}
        out["other"] = round(max(0.0, wall - sum(self.seconds.values())), 4)
        return out
