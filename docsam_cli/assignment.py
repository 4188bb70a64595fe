"""The linear sum assignment of `scipy.optimize.linear_sum_assignment`, in NumPy.

`evaluate`'s mAF matches predictions to ground truth one-to-one by maximal IoU, as the reference does with
scipy. This is the same algorithm (shortest augmenting paths, Crouse 2016, as scipy implements it: same
column order, same tie-breaking, same floating-point operations), so it returns the same assignment,
ties included, while `evaluate` stays free of scipy (a large import the rest of the command does not
need). The inner loop over columns is vectorised; IoU matrices of a page are small.
"""

from __future__ import annotations

import numpy as np


def linear_sum_assignment(cost: np.ndarray, maximize: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the assignment of least (or, with `maximize`, greatest) total cost.

    As in scipy: every row of a wide matrix (every column of a tall one) is assigned, rows come out
    sorted. Raises ValueError for NaN or -inf entries (+inf, with `maximize` -inf, means "not allowed").
    """
    matrix = np.asarray(cost, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"expected a matrix (2-D array), got a {matrix.ndim}-D array")
    if 0 in matrix.shape:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    transpose = matrix.shape[1] < matrix.shape[0]
    if transpose:
        matrix = matrix.T
    if maximize:
        matrix = -matrix
    if np.isnan(matrix).any() or np.isneginf(matrix).any():
        raise ValueError("matrix contains invalid numeric entries")
    col4row = _solve(np.ascontiguousarray(matrix))
    if transpose:
        order = np.argsort(col4row, kind="stable")
        return col4row[order], order.astype(np.int64)
    return np.arange(len(col4row), dtype=np.int64), col4row


def _solve(cost: np.ndarray) -> np.ndarray:
    """Column of each row for a matrix with no more rows than columns."""
    rows, columns = cost.shape
    u = np.zeros(rows)
    v = np.zeros(columns)
    path = np.full(columns, -1, dtype=np.int64)
    col4row = np.full(rows, -1, dtype=np.int64)
    row4col = np.full(columns, -1, dtype=np.int64)
    for current in range(rows):
        sink, min_value, shortest, visited_rows, visited_columns = _augmenting_path(
            cost, u, v, path, row4col, current
        )
        u[current] += min_value
        others = visited_rows.copy()
        others[current] = False
        u[others] += min_value - shortest[col4row[others]]
        v[visited_columns] -= min_value - shortest[visited_columns]
        column = sink
        while True:
            row = path[column]
            row4col[column] = row
            col4row[row], column = column, col4row[row]
            if row == current:
                break
    return col4row


def _augmenting_path(
    cost: np.ndarray, u: np.ndarray, v: np.ndarray, path: np.ndarray, row4col: np.ndarray, row: int
) -> tuple[int, float, np.ndarray, np.ndarray, np.ndarray]:
    """Dijkstra over reduced costs from `row` to a free column: (sink, its cost, path costs, rows and
    columns visited). `path` is updated in place."""
    columns = cost.shape[1]
    remaining = np.arange(columns - 1, -1, -1, dtype=np.int64)  # reversed: a constant matrix gives 0..n-1
    count = columns
    shortest = np.full(columns, np.inf)
    visited_rows = np.zeros(cost.shape[0], dtype=bool)
    visited_columns = np.zeros(columns, dtype=bool)
    min_value = 0.0
    while True:
        visited_rows[row] = True
        candidates = remaining[:count]
        reduced = min_value + cost[row, candidates] - u[row] - v[candidates]
        better = reduced < shortest[candidates]
        path[candidates[better]] = row
        shortest[candidates[better]] = reduced[better]
        costs = shortest[candidates]
        lowest = costs.min()
        if lowest == np.inf:
            raise ValueError("cost matrix is infeasible")
        ties = costs == lowest
        free = ties & (row4col[candidates] == -1)
        # scipy scans in order and keeps the first lowest column, or the last free one among the lowest
        index = int(np.flatnonzero(free)[-1]) if free.any() else int(np.flatnonzero(ties)[0])
        min_value = float(lowest)
        column = int(candidates[index])
        visited_columns[column] = True
        count -= 1
        remaining[index] = remaining[count]
        if row4col[column] == -1:
            return column, min_value, shortest, visited_rows, visited_columns
        row = int(row4col[column])
