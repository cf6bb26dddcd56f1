//! Item vectors learned from the sessions, for a voice that generalises where the
//! neighbourhood voices only count: two products never viewed in one session are still
//! close when the sessions around them are alike.
//!
//! The vectors are the leading eigenvectors of the products' positive pointwise mutual
//! information (how much more often two products share a session than their
//! popularity predicts), scaled by the square root of their eigenvalues: the
//! factorisation that word-embedding methods approximate, here computed exactly enough by
//! subspace iteration over the sparse matrix, in seconds for tens of thousands of
//! products. Each vector is of unit length, so that a dot product is a cosine.

use rustc_hash::FxHashMap;

use crate::items::ItemId;

/// Dimensions of a product's vector.
pub const DIMENSIONS: usize = 128;

/// Extra directions iterated beside the kept ones (so that the kept ones converge), and
/// rounds of the iteration.
const OVERSAMPLE: usize = 16;
const ROUNDS: usize = 6;

/// Products' vectors, by item number; an item numbered after the build has none.
#[derive(Debug, Default)]
pub struct ItemEmbeddings {
    dimensions: usize,
    vectors: Vec<f32>,
}

/// A session's vector weighs its products less by 1/e a position back: the latest
/// product says most of where the visitor is going.
const SESSION_DECAY: f32 = 1.0;

/// Products of a session that its vector reads, latest first: beyond them the weight is
/// below 1e-27 of the latest's.
const SESSION_READ: usize = 64;

impl ItemEmbeddings {
    /// Learns vectors of `dimensions` from `sessions` (each a session's items) over
    /// `items` products.
    pub fn learn<'s>(
        sessions: impl Iterator<Item = &'s [ItemId]>,
        items: usize,
        dimensions: usize,
    ) -> ItemEmbeddings {
        let pmi = positive_pmi(sessions, items);
        let width = (dimensions + OVERSAMPLE).min(items);
        let mut basis = random_basis(items, width);
        for _ in 0..ROUNDS {
            basis = multiply(&pmi, &basis);
            orthonormalise(&mut basis);
        }
        let image = multiply(&pmi, &basis);
        let mut projected: Vec<Vec<f64>> = basis
            .iter()
            .map(|row_vector| image.iter().map(|column| dot(row_vector, column)).collect())
            .collect();
        let (values, vectors) = symmetric_eigen(&mut projected);
        let mut order: Vec<usize> = (0..width).collect();
        order.sort_by(|a, b| values[*b].total_cmp(&values[*a]));
        order.truncate(dimensions.min(width));
        let kept = order.len();
        let mut flat = vec![0f32; items * kept];
        for item in 0..items {
            let row = &mut flat[item * kept..(item + 1) * kept];
            for (slot, &direction) in row.iter_mut().zip(&order) {
                let coordinate: f64 = (0..width)
                    .map(|i| basis[i][item] * vectors[i][direction])
                    .sum();
                *slot = (coordinate * values[direction].max(0.0).sqrt()) as f32;
            }
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                row.iter_mut().for_each(|x| *x /= norm);
            }
        }
        ItemEmbeddings {
            dimensions: kept,
            vectors: flat,
        }
    }

    /// The vector of `item`, when it had sessions at the build.
    fn of(&self, item: ItemId) -> Option<&[f32]> {
        let from = item as usize * self.dimensions;
        self.vectors.get(from..from + self.dimensions)
    }

    /// The sum of the vectors of `s`'s items (most recent last), each weaker by
    /// [`SESSION_DECAY`] a position back.
    pub fn session_vector(&self, s: &[ItemId]) -> Vec<f32> {
        let mut sum = vec![0f32; self.dimensions];
        for (age, item) in s.iter().rev().enumerate().take(SESSION_READ) {
            if let Some(vector) = self.of(*item) {
                let weight = (-(age as f32) / SESSION_DECAY).exp();
                for (total, x) in sum.iter_mut().zip(vector) {
                    *total += weight * x;
                }
            }
        }
        sum
    }

    /// How close `item` is to a session's vector (0 for an item without one).
    pub fn closeness(&self, session: &[f32], item: ItemId) -> f32 {
        self.of(item).map_or(0.0, |vector| {
            vector.iter().zip(session).map(|(a, b)| a * b).sum()
        })
    }
}

/// The products' positive PMI as sparse rows.
fn positive_pmi<'s>(
    sessions: impl Iterator<Item = &'s [ItemId]>,
    items: usize,
) -> Vec<Vec<(u32, f32)>> {
    let mut together: Vec<FxHashMap<ItemId, u32>> = vec![FxHashMap::default(); items];
    let mut alone = vec![0f64; items];
    let mut count = 0usize;
    let mut distinct: Vec<ItemId> = Vec::new();
    for session in sessions {
        count += 1;
        distinct.clear();
        distinct.extend(session.iter().filter(|i| (**i as usize) < items));
        distinct.sort_unstable();
        distinct.dedup();
        for &a in &distinct {
            alone[a as usize] += 1.0;
            for &b in &distinct {
                if a != b {
                    *together[a as usize].entry(b).or_default() += 1;
                }
            }
        }
    }
    let total = count as f64;
    together
        .into_iter()
        .enumerate()
        .map(|(a, row)| {
            row.into_iter()
                .filter_map(|(b, both)| {
                    let pmi = (f64::from(both) * total / (alone[a] * alone[b as usize])).ln();
                    (pmi > 0.0).then_some((b, pmi as f32))
                })
                .collect()
        })
        .collect()
}

/// `width` columns of `rows` pseudo-random numbers (a fixed seed: the same sessions give
/// the same vectors on every node), orthonormalised.
fn random_basis(rows: usize, width: usize) -> Vec<Vec<f64>> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
    };
    let mut basis: Vec<Vec<f64>> = (0..width)
        .map(|_| (0..rows).map(|_| next()).collect())
        .collect();
    orthonormalise(&mut basis);
    basis
}

/// The sparse symmetric matrix `rows` times each column of `columns`, the columns shared
/// among the machine's cores.
fn multiply(rows: &[Vec<(u32, f32)>], columns: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = columns.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = columns
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|column| {
                            rows.iter()
                                .map(|row| {
                                    row.iter()
                                        .map(|&(c, v)| f64::from(v) * column[c as usize])
                                        .sum()
                                })
                                .collect()
                        })
                        .collect::<Vec<Vec<f64>>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().expect("an embedding thread panicked"))
            .collect()
    })
}

/// Gram-Schmidt, twice over for the rounding of long columns.
fn orthonormalise(columns: &mut [Vec<f64>]) {
    for j in 0..columns.len() {
        let (done, rest) = columns.split_at_mut(j);
        let column = &mut rest[0];
        for _pass in 0..2 {
            for earlier in done.iter() {
                let overlap = dot(earlier, column);
                column
                    .iter_mut()
                    .zip(earlier)
                    .for_each(|(x, e)| *x -= overlap * e);
            }
        }
        let norm = dot(column, column).sqrt();
        if norm > 1e-12 {
            column.iter_mut().for_each(|x| *x /= norm);
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Eigenvalues and eigenvectors (as columns) of a small symmetric matrix, by cyclic
/// Jacobi rotations; `matrix` is left diagonalised.
fn symmetric_eigen(matrix: &mut [Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = matrix.len();
    let mut vectors: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| f64::from(u8::from(i == j))).collect())
        .collect();
    for _sweep in 0..60 {
        let off: f64 = (0..n)
            .flat_map(|p| (p + 1..n).map(move |q| (p, q)))
            .map(|(p, q)| matrix[p][q] * matrix[p][q])
            .sum();
        if off < 1e-20 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if matrix[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (matrix[q][q] - matrix[p][p]) / (2.0 * matrix[p][q]);
                let t = if theta == 0.0 {
                    1.0
                } else {
                    theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in matrix.iter_mut() {
                    let (kp, kq) = (row[p], row[q]);
                    row[p] = c * kp - s * kq;
                    row[q] = s * kp + c * kq;
                }
                let (upper, lower) = matrix.split_at_mut(q);
                for (pk, qk) in upper[p].iter_mut().zip(lower[0].iter_mut()) {
                    (*pk, *qk) = (c * *pk - s * *qk, s * *pk + c * *qk);
                }
                for row in vectors.iter_mut() {
                    let (kp, kq) = (row[p], row[q]);
                    row[p] = c * kp - s * kq;
                    row[q] = s * kp + c * kq;
                }
            }
        }
    }
    ((0..n).map(|i| matrix[i][i]).collect(), vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_of_alike_sessions_are_close_though_never_seen_together() {
        // 0 and 4 never share a session, but each comes with 1 and 2; 10..13 are a world
        // of their own.
        let mut sessions: Vec<Vec<ItemId>> = Vec::new();
        for _ in 0..20 {
            sessions.extend([
                vec![0, 1, 2],
                vec![4, 1, 2],
                vec![3, 1, 2],
                vec![10, 11, 12],
            ]);
        }
        let learned = ItemEmbeddings::learn(sessions.iter().map(Vec::as_slice), 16, 8);
        let near = learned.session_vector(&[0]);
        let (to_4, to_12) = (learned.closeness(&near, 4), learned.closeness(&near, 12));
        assert!(to_4 > 0.9 && to_12.abs() < 0.1, "4: {to_4}, 12: {to_12}");
        // No sessions, no vector.
        assert_eq!(learned.closeness(&near, 7), 0.0);
        assert_eq!(learned.closeness(&near, 99), 0.0);
    }

    #[test]
    fn more_products_than_directions_keep_the_leading_ones() {
        // Twelve worlds of five products each (60 products, 4 + 16 directions iterated):
        // the kept directions still tell a product's world from the others.
        let mut sessions: Vec<Vec<ItemId>> = Vec::new();
        for world in 0..12u32 {
            let base = world * 5;
            for round in 0..(10 + world * 3) {
                sessions.push(vec![
                    base + round % 5,
                    base + (round + 1) % 5,
                    base + (round + 2) % 5,
                ]);
            }
        }
        let learned = ItemEmbeddings::learn(sessions.iter().map(Vec::as_slice), 60, 4);
        // Products of a world seen in fewer sessions share them more than chance says
        // by more: the four quietest worlds (0..4) hold the four leading directions.
        let near = learned.session_vector(&[0]);
        assert!(
            learned.closeness(&near, 2) > 0.5,
            "{}",
            learned.closeness(&near, 2)
        );
        assert!(
            learned.closeness(&near, 42).abs() < 0.2,
            "{}",
            learned.closeness(&near, 42)
        );
    }

    #[test]
    fn the_eigen_decomposition_of_a_small_matrix_by_hand() {
        let mut m = vec![vec![2.0, 1.0], vec![1.0, 2.0]];
        let (values, vectors) = symmetric_eigen(&mut m);
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        assert!((sorted[0] - 1.0).abs() < 1e-12 && (sorted[1] - 3.0).abs() < 1e-12);
        let big = if values[0] > values[1] { 0 } else { 1 };
        assert!((vectors[0][big].abs() - 0.5f64.sqrt()).abs() < 1e-9);
    }
}
