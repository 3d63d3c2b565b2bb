"""Per-scene measurements of an inference actor, taken one scene ahead in a background thread.

A checkpoint with a per-scene rule (`norm=scene`, `norm=otsu`) or an Otsu gate needs one decimated read of
each scene (`rrsis.data.normalize.measure_scene`: it decodes every block of a file without overviews, 1.5 s
for an 8192^2 scene here) before any of that scene's tiles can run. Taken when the scene's first tile
arrives, that read stalls the model. `SceneMeasurer` knows the run's scene order: it starts the first
scene's read when the actor starts (beside the model load) and the next scene's read as soon as a scene's
first tile arrives, in one background thread. GDAL decodes with the GIL released, so on a CPU actor the
read runs on another core while the model computes; the model waits only if a scene's tiles outrun its read.
One read per scene and actor, whatever the tile order; a scene missing from the order is read on demand.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from rrsis.data.normalize import SceneMeasures, measure_scene

SceneKey = tuple[str, str]  # (scene URI, bands "1,2") as in the tile rows


class SceneMeasurer:
    """`get(key)` -> the scene's `SceneMeasures`; reads run in one background thread, the next scene of
    `order` ahead of the current one. Needs nothing (no thread) when the checkpoint has no per-scene rule."""

    def __init__(
        self,
        stats: bool,
        thresholds: bool,
        order: Sequence[SceneKey] = (),
        thread_init: Callable[[], None] | None = None,
    ) -> None:
        """`thread_init` runs first in the read thread (an inference actor moves it off its model's cores)."""
        self.stats, self.thresholds = stats, thresholds
        self.order = [(str(uri), str(bands)) for uri, bands in order]
        self.next_of = {key: self.order[i + 1] for i, key in enumerate(self.order[:-1])}
        self.futures: dict[SceneKey, Future[SceneMeasures]] = {}
        self.pool = None
        if self.needed:
            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rrsis-scene", initializer=thread_init)
        if self.order and self.needed:
            self._start(self.order[0])

    @property
    def needed(self) -> bool:
        return self.stats or self.thresholds

    def get(self, key: SceneKey) -> SceneMeasures:
        """The measurements of scene `key` (waits for its read); starts the read of the scene after it."""
        if not self.needed:
            return SceneMeasures()
        future = self._start(key)
        if key in self.next_of:
            self._start(self.next_of[key])
        return future.result()

    def _start(self, key: SceneKey) -> Future[SceneMeasures]:
        if key not in self.futures and self.pool is not None:
            uri, bands = key
            band_list = [int(b) for b in bands.split(",")]
            self.futures[key] = self.pool.submit(
                measure_scene, uri, band_list, stats=self.stats, thresholds=self.thresholds
            )
        return self.futures[key]
