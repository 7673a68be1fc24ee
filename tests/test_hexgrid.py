"""dyps_jax.envs.hexgrid: the offset hexagonal grid of the ride-hailing scenarios.

The parity rule (docs/scenarios.md, "Ride-hailing"):

    even j: (i-1, j), (i, j+1), (i+1, j+1), (i+1, j), (i+1, j-1), (i, j-1)
    odd j:  (i-1, j), (i-1, j+1), (i, j+1), (i+1, j), (i, j-1), (i-1, j-1)

is restated here on its own (not imported), and distances are checked against breadth-first search.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from dyps_jax.envs.hexgrid import HexGrid

EVEN = ((-1, 0), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))
ODD = ((-1, 0), (-1, 1), (0, 1), (1, 0), (0, -1), (-1, -1))
SHAPES = [(6, 6), (10, 10), (5, 8), (1, 5), (7, 3)]


def rule_neighbours(rows: int, cols: int, cell: int) -> list[int]:
    """The six neighbours of `cell` by the parity rule of docs/scenarios.md, -1 outside the grid."""
    i, j = divmod(cell, cols)
    out = []
    for di, dj in EVEN if j % 2 == 0 else ODD:
        ni, nj = i + di, j + dj
        out.append(ni * cols + nj if 0 <= ni < rows and 0 <= nj < cols else -1)
    return out


def own_bfs(rows: int, cols: int, source: int) -> np.ndarray:
    """Breadth-first hop counts on the truncated grid, from the rule above (independent of HexGrid)."""
    dist = np.full(rows * cols, -1)
    dist[source] = 0
    queue = deque([source])
    while queue:
        cell = queue.popleft()
        for nb in rule_neighbours(rows, cols, cell):
            if nb >= 0 and dist[nb] < 0:
                dist[nb] = dist[cell] + 1
                queue.append(nb)
    return dist


# Hand-derived on a 6x6 grid (cell id = i * 6 + j), in the rule's order.
HAND_PICKED_6X6 = {
    0: [-1, 1, 7, 6, -1, -1],  # (0, 0): top-left corner, even column
    1: [-1, -1, 2, 7, 0, -1],  # (0, 1): top edge, odd column
    5: [-1, -1, -1, 11, 4, -1],  # (0, 5): top-right corner, odd column
    14: [8, 15, 21, 20, 19, 13],  # (2, 2): interior, even column
    15: [9, 10, 16, 21, 14, 8],  # (2, 3): interior, odd column
    18: [12, 19, 25, 24, -1, -1],  # (3, 0): left edge, even column
    30: [24, 31, -1, -1, -1, -1],  # (5, 0): bottom-left corner, even column
    33: [27, 28, 34, -1, 32, 26],  # (5, 3): bottom edge, odd column
    35: [29, -1, -1, -1, 34, 28],  # (5, 5): bottom-right corner, odd column
}


@pytest.mark.parametrize("cell", sorted(HAND_PICKED_6X6))
def test_neighbours_of_hand_picked_cells(cell):
    grid = HexGrid(6, 6)
    assert grid.neighbours.shape == (36, 6)
    assert grid.neighbours.dtype == np.int32
    assert grid.neighbours[cell].tolist() == HAND_PICKED_6X6[cell]


@pytest.mark.parametrize("rows,cols", SHAPES)
def test_neighbours_follow_the_parity_rule_everywhere(rows, cols):
    grid = HexGrid(rows, cols)
    want = [rule_neighbours(rows, cols, c) for c in range(rows * cols)]
    assert grid.neighbours.tolist() == want


@pytest.mark.parametrize("rows,cols", SHAPES)
def test_neighbours_are_symmetric_and_distinct(rows, cols):
    nbrs = HexGrid(rows, cols).neighbours
    for cell in range(rows * cols):
        real = [int(n) for n in nbrs[cell] if n >= 0]
        assert len(real) == len(set(real)), f"cell {cell}: repeated neighbour {real}"
        assert cell not in real
        for n in real:
            assert cell in nbrs[n].tolist(), f"{n} is a neighbour of {cell} but not vice versa"
    # An interior cell has exactly six neighbours.
    if rows >= 3 and cols >= 3:
        assert (nbrs[1 * cols + 1] >= 0).sum() == 6


@pytest.mark.parametrize("rows,cols", SHAPES)
def test_distance_equals_bfs_for_every_source(rows, cols):
    grid = HexGrid(rows, cols)
    n = grid.num_cells
    all_pairs = grid.distance(np.arange(n)[:, None], np.arange(n)[None, :])
    assert all_pairs.shape == (n, n)
    for source in range(n):
        bfs = grid.bfs_distances(source)
        assert bfs.min() == 0  # the grid is connected
        np.testing.assert_array_equal(bfs, own_bfs(rows, cols, source))
        np.testing.assert_array_equal(all_pairs[source], bfs, err_msg=f"source {source}")
    np.testing.assert_array_equal(all_pairs, all_pairs.T)


def test_distance_known_values():
    grid = HexGrid(6, 6)
    # 5 steps east (those leaving an even column also go one row down: 3 rows), then 2 rows south
    assert int(grid.distance(0, 35)) == 7
    assert int(grid.distance(14, 14)) == 0
    assert int(grid.distance(14, 21)) == 1
    assert int(grid.distance(0, 5)) == 5  # along the top row


@pytest.mark.parametrize("rows,cols", SHAPES)
@pytest.mark.parametrize("radius", [1, 3, 5])
def test_ring_table_lists_rings_nearest_first(rows, cols, radius):
    grid = HexGrid(rows, cols)
    cells, within = grid.ring_table(radius)
    n = grid.num_cells
    assert cells.shape == (n, 3 * radius * (radius + 1))
    assert within.shape == (n, radius)
    for g in range(n):
        bfs = own_bfs(rows, cols, g)
        for d in range(1, radius + 1):
            count = int(within[g, d - 1])
            want = set(np.flatnonzero((bfs >= 1) & (bfs <= d)).tolist())
            assert count == len(want), f"cell {g}, d {d}"
            got = cells[g, :count].tolist()
            assert len(got) == len(set(got))
            assert set(got) == want, f"cell {g}, d {d}: {sorted(got)} != {sorted(want)}"
        # Nearest first, and the padding past the last ring is the cell itself.
        count = int(within[g, -1])
        assert np.all(np.diff(bfs[cells[g, :count]]) >= 0)
        assert np.all(cells[g, count:] == g)


def test_ring_table_full_rings_in_a_large_grid():
    cells, within = HexGrid(15, 15).ring_table(3)
    centre = 7 * 15 + 7
    assert within[centre].tolist() == [6, 18, 36]  # 3 d (d + 1) cells within d
    assert cells.shape[1] == 36


@pytest.mark.parametrize("rows,cols,field", [
    (0, 3, "grid.rows"), (-2, 3, "grid.rows"), (3, 0, "grid.cols"),
    (2.5, 3, "grid.rows"), (3, "4", "grid.cols"), (3, 4.0, "grid.cols"),
])
def test_bad_shape_names_the_field(rows, cols, field):
    with pytest.raises(ValueError, match=field):
        HexGrid(rows, cols)
