"""`docsam_cli.assignment.linear_sum_assignment` returns scipy's assignment, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_assignment

from docsam_cli.assignment import linear_sum_assignment


def _matrices(seed: int, count: int):
    """Random shapes; continuous values, small integers (many ties) and sparse IoU-like matrices."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        rows, columns = (int(side) for side in rng.integers(1, 14, 2))
        kind = index % 4
        if kind == 0:
            yield rng.random((rows, columns))
        elif kind == 1:
            yield rng.integers(0, 3, (rows, columns)).astype(float)
        elif kind == 2:
            yield np.round(rng.random((rows, columns)) * (rng.random((rows, columns)) < 0.3), 1)
        else:
            yield np.where(rng.random((rows, columns)) < 0.2, 0.5, 0.0)


@pytest.mark.parametrize("maximize", [False, True])
def test_same_assignment_as_scipy(maximize: bool) -> None:
    for matrix in _matrices(seed=3, count=800):
        expected_rows, expected_columns = scipy_assignment(matrix, maximize=maximize)
        rows, columns = linear_sum_assignment(matrix, maximize=maximize)
        np.testing.assert_array_equal(rows, expected_rows)
        np.testing.assert_array_equal(columns, expected_columns)


def test_a_page_sized_iou_matrix_matches_too() -> None:
    rng = np.random.default_rng(5)
    matrix = rng.random((300, 320)) * (rng.random((300, 320)) < 0.02)  # mostly disjoint masks
    expected = scipy_assignment(matrix, maximize=True)
    result = linear_sum_assignment(matrix, maximize=True)
    np.testing.assert_array_equal(result[1], expected[1])


def test_empty_and_invalid_matrices() -> None:
    rows, columns = linear_sum_assignment(np.zeros((0, 4)))
    assert rows.shape == columns.shape == (0,)
    with pytest.raises(ValueError, match="invalid numeric entries"):
        linear_sum_assignment(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="infeasible"):
        linear_sum_assignment(np.full((2, 2), np.inf))
    with pytest.raises(ValueError, match="2-D"):
        linear_sum_assignment(np.zeros(3))
