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

/// Products given a vector at most: the most viewed, when a site numbers more. The
/// learning keeps 2.3 KB a product (two sets of the iterated directions), so this bounds
/// that part near 230 MB whatever keys events name.
pub const MAX_VECTOR_PRODUCTS: usize = 100_000;

/// The latest distinct products of a session that count as shared with one another: a
/// session's pairs grow with the square of its length, and a long one says little more
/// of each pair.
const MAX_PAIRED_ITEMS: usize = 30;

/// Pairs counted at most (each session charged the square of its length, or of
/// [`MAX_PAIRED_ITEMS`] if shorter): the latest sessions within it are read. It bounds the pair
/// counts (near 400 MB if every pair were new) and the iteration's time; Diginetica's
/// 186,670 training sessions are charged 6.8 million.
const MAX_PAIR_CHARGE: usize = 20_000_000;

/// Threads a learning beside the serving takes: half the cores, so that requests keep
/// the rest.
pub fn background_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// Every core, for a learning nothing else waits beside (an evaluation).
pub fn all_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Rows of products without a vector.
const NO_ROW: u32 = u32::MAX;

/// Products' vectors, by item number; an item numbered after the build has none.
#[derive(Debug, Default)]
pub struct ItemEmbeddings {
    dimensions: usize,
    /// By item number: its row of `vectors`, or [`NO_ROW`].
    rows: Vec<u32>,
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
    /// `items` products, on `threads` threads.
    pub fn learn<'s>(
        sessions: impl Iterator<Item = &'s [ItemId]>,
        items: usize,
        dimensions: usize,
        threads: usize,
    ) -> ItemEmbeddings {
        let sessions = latest_within_charge(sessions, MAX_PAIR_CHARGE);
        let (mut rows, row_count) =
            choose_rows(sessions.iter().copied(), items, MAX_VECTOR_PRODUCTS);
        let pmi = positive_pmi(sessions.iter().copied(), &rows, row_count);
        let items = row_count;
        let width = (dimensions + OVERSAMPLE).min(items);
        let mut basis = random_basis(items, width);
        for _ in 0..ROUNDS {
            basis = multiply(&pmi, &basis, threads);
            orthonormalise(&mut basis);
        }
        let image = multiply(&pmi, &basis, threads);
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
        // A product that shares no session with another more than chance says has a
        // vector of zeros: no evidence either way, so none.
        for slot in rows.iter_mut().filter(|row| **row != NO_ROW) {
            let from = *slot as usize * kept;
            if flat[from..from + kept].iter().all(|x| *x == 0.0) {
                *slot = NO_ROW;
            }
        }
        ItemEmbeddings {
            dimensions: kept,
            rows,
            vectors: flat,
        }
    }

    /// Products with a vector.
    pub fn products(&self) -> usize {
        self.rows.iter().filter(|row| **row != NO_ROW).count()
    }

    /// The vector of `item`, when it had sessions at the build.
    fn of(&self, item: ItemId) -> Option<&[f32]> {
        let row = *self.rows.get(item as usize)?;
        let from = (row != NO_ROW).then_some(row as usize * self.dimensions)?;
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

    /// How close `item` is to a session's vector; `None` for an item without one.
    pub fn closeness(&self, session: &[f32], item: ItemId) -> Option<f32> {
        let vector = self.of(item)?;
        Some(vector.iter().zip(session).map(|(a, b)| a * b).sum())
    }
}

/// The latest of `sessions` (oldest first) whose pairs' charge stays within `charge`,
/// oldest first.
fn latest_within_charge<'s>(
    sessions: impl Iterator<Item = &'s [ItemId]>,
    charge: usize,
) -> Vec<&'s [ItemId]> {
    let mut all: Vec<&[ItemId]> = sessions.collect();
    let mut charged = 0usize;
    let start = all
        .iter()
        .rposition(|session| {
            charged += session.len().min(MAX_PAIRED_ITEMS).pow(2);
            charged > charge
        })
        .map_or(0, |over| over + 1);
    all.split_off(start)
}

/// Each item's row (or [`NO_ROW`]) and the number of rows: every item, or the `most`
/// viewed (in item order; of equally viewed, the older).
fn choose_rows<'s>(
    sessions: impl Iterator<Item = &'s [ItemId]>,
    items: usize,
    most: usize,
) -> (Vec<u32>, usize) {
    if items <= most {
        return ((0..items as u32).collect(), items);
    }
    let mut views = vec![0u32; items];
    for session in sessions {
        for &item in session {
            if let Some(count) = views.get_mut(item as usize) {
                *count = count.saturating_add(1);
            }
        }
    }
    let mut kept: Vec<u32> = (0..items as u32).collect();
    kept.select_nth_unstable_by(most.saturating_sub(1), |a, b| {
        views[*b as usize].cmp(&views[*a as usize]).then(a.cmp(b))
    });
    kept.truncate(most);
    kept.sort_unstable();
    let mut rows = vec![NO_ROW; items];
    for (row, item) in kept.iter().enumerate() {
        rows[*item as usize] = row as u32;
    }
    (rows, kept.len())
}

/// The products' positive PMI as sparse rows, over `rows` of the items.
fn positive_pmi<'s>(
    sessions: impl Iterator<Item = &'s [ItemId]>,
    rows: &[u32],
    row_count: usize,
) -> Vec<Vec<(u32, f32)>> {
    let mut together: Vec<FxHashMap<u32, u32>> = vec![FxHashMap::default(); row_count];
    let mut alone = vec![0f64; row_count];
    let mut count = 0usize;
    let mut distinct: Vec<u32> = Vec::new();
    for session in sessions {
        count += 1;
        distinct.clear();
        for item in session.iter().rev() {
            let row = rows.get(*item as usize).copied().unwrap_or(NO_ROW);
            if row != NO_ROW && !distinct.contains(&row) {
                distinct.push(row);
                if distinct.len() == MAX_PAIRED_ITEMS {
                    break;
                }
            }
        }
        // In a fixed order, so the same sessions sum in the same order on every node.
        distinct.sort_unstable();
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
/// among `threads` threads.
fn multiply(rows: &[Vec<(u32, f32)>], columns: &[Vec<f64>], threads: usize) -> Vec<Vec<f64>> {
    let chunk = columns.len().div_ceil(threads.max(1)).max(1);
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
        let learned = ItemEmbeddings::learn(sessions.iter().map(Vec::as_slice), 16, 8, 2);
        let near = learned.session_vector(&[0]);
        let close = |item| learned.closeness(&near, item).unwrap_or(0.0);
        let (to_4, to_12) = (close(4), close(12));
        assert!(to_4 > 0.9 && to_12.abs() < 0.1, "4: {to_4}, 12: {to_12}");
        // No sessions, no vector.
        assert_eq!(learned.closeness(&near, 7), None);
        assert_eq!(learned.closeness(&near, 99), None);
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
        let learned = ItemEmbeddings::learn(sessions.iter().map(Vec::as_slice), 60, 4, 1);
        // Products of a world seen in fewer sessions share them more than chance says
        // by more: the four quietest worlds (0..4) hold the four leading directions.
        let near = learned.session_vector(&[0]);
        assert!(
            learned.closeness(&near, 2).unwrap() > 0.5,
            "{}",
            learned.closeness(&near, 2).unwrap()
        );
        assert!(
            learned.closeness(&near, 42).unwrap().abs() < 0.2,
            "{}",
            learned.closeness(&near, 42).unwrap()
        );
    }

    #[test]
    fn a_site_of_more_products_than_the_bound_gives_vectors_to_the_most_viewed() {
        let sessions: Vec<Vec<ItemId>> = vec![vec![0, 3, 5], vec![3, 5], vec![5, 1], vec![2]];
        let (rows, count) = choose_rows(sessions.iter().map(Vec::as_slice), 6, 3);
        // 5 (3 views), 3 (2), then 0 before 1 and 2 (one each): in item order.
        assert_eq!(count, 3);
        assert_eq!(rows, [0, NO_ROW, NO_ROW, 1, NO_ROW, 2]);
        let (all, count) = choose_rows(sessions.iter().map(Vec::as_slice), 6, 6);
        assert_eq!((all, count), ((0..6).collect(), 6));
    }

    #[test]
    fn the_latest_sessions_within_the_charge_are_read() {
        let sessions: Vec<Vec<ItemId>> = vec![vec![1, 2, 3], vec![4, 5], vec![6, 7]];
        let latest = |charge| latest_within_charge(sessions.iter().map(Vec::as_slice), charge);
        assert_eq!(latest(100).len(), 3);
        assert_eq!(latest(8), [&[4, 5][..], &[6, 7]]);
        assert_eq!(latest(7), [&[6, 7][..]]);
        assert!(latest(3).is_empty());
    }

    #[test]
    fn a_product_without_company_has_no_vector() {
        // 7 is only ever viewed alone.
        let mut sessions: Vec<Vec<ItemId>> = vec![vec![7]; 5];
        sessions.extend(std::iter::repeat_n(vec![0, 1], 5));
        sessions.extend(std::iter::repeat_n(vec![2, 3], 5));
        let learned = ItemEmbeddings::learn(sessions.iter().map(Vec::as_slice), 8, 4, 1);
        let near = learned.session_vector(&[0]);
        assert_eq!(learned.closeness(&near, 7), None);
        assert!(learned.closeness(&near, 1).is_some());
        assert_eq!(learned.products(), 4);
    }

    #[test]
    fn a_long_session_pairs_only_its_latest_products() {
        let long: Vec<ItemId> = (0..40).collect();
        let rows: Vec<u32> = (0..40).collect();
        let pmi = positive_pmi([long.as_slice(), &[0, 1]].into_iter(), &rows, 40);
        assert!(pmi[0].iter().any(|(b, _)| *b == 1), "0 and 1 met again");
        assert!(
            pmi[0].iter().all(|(b, _)| *b < 2),
            "0 is too early in the long one"
        );
        assert_eq!(pmi[39].len(), MAX_PAIRED_ITEMS - 1);
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
