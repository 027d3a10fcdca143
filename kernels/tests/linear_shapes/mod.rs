//! `(rows, in_dim, out_dim)` shapes every `linear` test (float and int8 weights) runs.

/// GEMV (1..=8 rows: full and partial lanes, leftover output rows/columns) and GEMM (> 8 rows).
pub const EDGE: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 5),
    (1, 15, 17),
    (1, 16, 4),
    (1, 17, 65),
    (1, 63, 3),
    (1, 64, 64),
    (1, 65, 130),
    (2, 17, 33),
    (3, 65, 7),
    (4, 16, 16),
    (5, 33, 67),
    (7, 1, 9),
    (8, 63, 65),
    (9, 17, 15),
    (16, 65, 33),
    (33, 7, 1),
];

/// Empty along one dimension (or several).
pub const EMPTY: &[(usize, usize, usize)] = &[(0, 4, 4), (2, 0, 3), (3, 5, 0), (12, 0, 2)];

/// Big enough to split over threads (GEMV) and to cross the GEMM's packing panels.
pub const PARALLEL: &[(usize, usize, usize)] = &[(1, 1000, 300), (3, 300, 1029), (8, 513, 257), (24, 300, 520)];
