"""Offset hexagonal grid of the ride-hailing scenarios (docs/scenarios.md, "Ride-hailing").

Cell `(i, j)` (row i, column j) has id `i * cols + j`. Its six neighbours depend on the column
parity::

    even j: (i-1, j), (i, j+1), (i+1, j+1), (i+1, j), (i+1, j-1), (i, j-1)
    odd j:  (i-1, j), (i-1, j+1), (i, j+1), (i+1, j), (i, j-1), (i-1, j-1)

Distances are breadth-first-search hops on the grid truncated to `rows x cols`. On this layout they
equal the cube-coordinate hex distance (axial q = j, r = i - (j + 1) // 2), which is what
`ring_table` computes in closed form, so grids of 10,000 cells need no all-pairs search; the tests
check the two agree.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import deque

import numpy as np

_EVEN = ((-1, 0), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
_ODD = ((-1, 0), (-1, 1), (0, 1), (1, 0), (0, -1), (-1, -1))


@dataclasses.dataclass(frozen=True)
class HexGrid:
    rows: int
    cols: int

    def __post_init__(self):
        for name in ("rows", "cols"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"grid.{name}: must be an integer >= 1, got {value!r}")

    @property
    def num_cells(self) -> int:
        return self.rows * self.cols

    @functools.cached_property
    def neighbours(self) -> np.ndarray:
        """int32[N, 6], neighbour ids in the order above, -1 outside the grid."""
        i, j = np.divmod(np.arange(self.num_cells), self.cols)
        offsets = np.where((j % 2 == 0)[:, None, None], np.array(_EVEN), np.array(_ODD))
        ni, nj = i[:, None] + offsets[..., 0], j[:, None] + offsets[..., 1]
        inside = (ni >= 0) & (ni < self.rows) & (nj >= 0) & (nj < self.cols)
        return np.where(inside, ni * self.cols + nj, -1).astype(np.int32)

    def axial(self) -> np.ndarray:
        """int64[N, 2], axial coordinates (q, r) of every cell."""
        i, j = np.divmod(np.arange(self.num_cells), self.cols)
        return np.stack([j, i - (j + 1) // 2], axis=-1)

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Hex distance (BFS hops) between cell ids `a` and `b` (broadcast)."""
        axial = self.axial()
        delta = axial[np.asarray(a)] - axial[np.asarray(b)]
        dq, dr = delta[..., 0], delta[..., 1]
        return (np.abs(dq) + np.abs(dr) + np.abs(dq + dr)) // 2

    def bfs_distances(self, source: int) -> np.ndarray:
        """int32[N], BFS hop counts from `source` (the definition; used to check `distance`)."""
        dist = np.full(self.num_cells, -1, np.int32)
        dist[source] = 0
        queue = deque([source])
        while queue:
            cell = queue.popleft()
            for nb in self.neighbours[cell]:
                if nb >= 0 and dist[nb] < 0:
                    dist[nb] = dist[cell] + 1
                    queue.append(nb)
        return dist

    def ring_table(self, max_radius: int) -> tuple[np.ndarray, np.ndarray]:
        """Cells at distance 1..max_radius of every cell, nearest first.

        Returns:
          cells: int32[N, 3 R (R + 1)], padded with the cell itself;
          within: int32[N, R], `within[g, d-1]` = number of cells at distance 1..d of g, so the
            first `within[g, d-1]` entries of `cells[g]` are rings 1..d.
        """
        radius = int(max_radius)
        grid_i, grid_j = np.meshgrid(np.arange(-2 * radius, 2 * radius + 1),
                                     np.arange(-radius, radius + 1), indexing="ij")
        di, dj = grid_i.ravel(), grid_j.ravel()
        i, j = np.divmod(np.arange(self.num_cells), self.cols)
        ni, nj = i[:, None] + di, j[:, None] + dj
        inside = (ni >= 0) & (ni < self.rows) & (nj >= 0) & (nj < self.cols)
        other = np.where(inside, ni * self.cols + nj, 0)
        dist = np.where(inside, self.distance(np.arange(self.num_cells)[:, None], other), -1)
        keep = (dist >= 1) & (dist <= radius)
        # Nearest first, then by id: a stable order that does not depend on the window layout.
        order = np.lexsort((np.where(keep, other, np.iinfo(np.int64).max),
                            np.where(keep, dist, radius + 1)), axis=-1)
        width = 3 * radius * (radius + 1)
        cells = np.take_along_axis(other, order, axis=-1)[:, :width]
        kept = np.take_along_axis(keep, order, axis=-1)[:, :width]
        cells = np.where(kept, cells, np.arange(self.num_cells)[:, None])
        within = np.stack([((dist >= 1) & (dist <= d)).sum(-1) for d in range(1, radius + 1)], -1)
        return cells.astype(np.int32), within.astype(np.int32)
