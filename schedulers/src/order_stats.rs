//! Order statistics of a growing multiset: insert, k-th smallest and numpy-compatible
//! percentiles in logarithmic time.
//!
//! ASHA compares every result that reaches a rung with a percentile of all the scores already
//! recorded at that rung. A rung of a long sweep holds many thousands of scores, so a sorted
//! `Vec` (O(n) per insert) or a sort per decision (O(n log n)) would make each decision slower
//! as the sweep goes on. [`OrderStatistics`] keeps the keys in sorted blocks of at most
//! [`MAX_BLOCK_LEN`] keys, with the blocks' maxima for finding where a key goes and a Fenwick
//! tree over the block lengths for finding the block that holds the k-th key:
//!
//! | operation                           | cost, n keys, B = [`MAX_BLOCK_LEN`]         |
//! |-------------------------------------|---------------------------------------------|
//! | [`OrderStatistics::insert`]         | O(log n + B), plus O(n/B²) amortised splits |
//! | [`OrderStatistics::kth_smallest`]   | O(log(n/B))                                 |
//! | [`OrderStatistics::count_below`]    | O(log n)                                    |
//! | [`ScoreMultiset::percentile`]       | two k-th queries                            |
//!
//! The insert that fills a block to B keys splits it and rebuilds the O(n/B) index; each half
//! takes B/2 more inserts to split again, so splits add O(n/B²) per insert on average. With
//! B = 512 a decision at a rung of 10⁶ scores takes on the order of a microsecond (`benches/asha.rs`),
//! dominated by cache misses in the block it lands in.
//!
//! Nothing is ever removed: a rung's record only grows.
//!
//! Scores are `f64`s ordered by [`f64::total_cmp`] (see [`TotalOrder`]), so even a NaN that
//! slipped in cannot break the order; callers are expected to pass `-inf` for NaN scores.
//!
//! ```
//! use tune_schedulers::order_stats::ScoreMultiset;
//!
//! let mut scores = ScoreMultiset::new();
//! for score in [4.0, 1.0, 3.0, 2.0] {
//!     scores.insert(score);
//! }
//! assert_eq!(scores.kth_smallest(0), Some(1.0));
//! assert_eq!(scores.percentile(50.0), Some(2.5)); // numpy.percentile([1, 2, 3, 4], 50)
//! ```
//!
//! ## References
//!
//! - Li, Jamieson, Rostamizadeh, Gonina, Ben-tzur, Hardt, Recht and Talwalkar, "A System for
//!   Massively Parallel Hyperparameter Tuning", MLSys 2020 (the rung cutoffs this serves).
//! - Fenwick, "A New Data Structure for Cumulative Frequency Tables", Software: Practice and
//!   Experience 24(3), 1994 (the block-length index).
//! - numpy's `percentile` with its default `method="linear"` (type 7 of Hyndman and Fan,
//!   "Sample Quantiles in Statistical Packages", The American Statistician, 1996).

use std::cmp::Ordering;

/// The most keys a block holds before it is split in two.
pub const MAX_BLOCK_LEN: usize = 512;

/// An `f64` ordered by [`f64::total_cmp`]: `-NaN < -inf < … < -0.0 < 0.0 < … < inf < NaN`.
#[derive(Debug, Clone, Copy)]
pub struct TotalOrder(pub f64);

impl PartialEq for TotalOrder {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for TotalOrder {}

impl PartialOrd for TotalOrder {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TotalOrder {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// A multiset of ordered keys that answers rank queries: which key is the k-th smallest, how
/// many keys lie below a given one.
///
/// ```
/// use tune_schedulers::order_stats::OrderStatistics;
///
/// let mut keys = OrderStatistics::new();
/// for key in [30, 10, 20, 10] {
///     keys.insert(key);
/// }
/// assert_eq!(keys.len(), 4);
/// assert_eq!(keys.kth_smallest(1), Some(10));
/// assert_eq!(keys.kth_smallest(3), Some(30));
/// assert_eq!(keys.kth_smallest(4), None);
/// assert_eq!(keys.count_below(&20), 2);
/// ```
#[derive(Debug, Clone)]
pub struct OrderStatistics<K> {
    /// Sorted, non-empty blocks; every key of a block is ≤ every key of the next one.
    blocks: Vec<Vec<K>>,
    /// The largest key of each block.
    maxes: Vec<K>,
    /// Prefix sums of the block lengths.
    block_lengths: Fenwick,
    len: usize,
    max_block_len: usize,
}

impl<K: Ord + Copy> Default for OrderStatistics<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Ord + Copy> OrderStatistics<K> {
    /// An empty multiset.
    pub fn new() -> Self {
        Self::with_max_block_len(MAX_BLOCK_LEN)
    }

    /// An empty multiset whose blocks split at `max_block_len` keys (small blocks exercise the
    /// splits in tests).
    fn with_max_block_len(max_block_len: usize) -> Self {
        debug_assert!(max_block_len >= 2, "a block must be able to split");
        Self {
            blocks: Vec::new(),
            maxes: Vec::new(),
            block_lengths: Fenwick::default(),
            len: 0,
            max_block_len,
        }
    }

    /// The number of keys, counting repeats.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds one key (repeats are kept).
    pub fn insert(&mut self, key: K) {
        self.len += 1;
        let Some(last) = self.blocks.len().checked_sub(1) else {
            self.blocks.push(vec![key]);
            self.maxes.push(key);
            self.block_lengths = Fenwick::from_lengths([1]);
            return;
        };
        // The first block whose maximum is not below the key; past the end, the last block.
        let index = self.maxes.partition_point(|max| *max < key).min(last);
        let block = &mut self.blocks[index];
        let position = block.partition_point(|existing| *existing <= key);
        block.insert(position, key);
        if position + 1 == block.len() {
            self.maxes[index] = key;
        }
        self.block_lengths.add(index, 1);
        if block.len() >= self.max_block_len {
            self.split(index);
        }
        debug_assert_eq!(self.block_lengths.total(), self.len);
    }

    /// Splits a full block in two halves and rebuilds the block-length index.
    fn split(&mut self, index: usize) {
        let block = &mut self.blocks[index];
        let upper = block.split_off(block.len() / 2);
        self.maxes[index] = *block.last().expect("the lower half of a full block is not empty");
        self.maxes.insert(
            index + 1,
            *upper.last().expect("the upper half of a full block is not empty"),
        );
        self.blocks.insert(index + 1, upper);
        self.block_lengths = Fenwick::from_lengths(self.blocks.iter().map(Vec::len));
    }

    /// The k-th smallest key, counting from 0, or `None` when `k >= len()`.
    pub fn kth_smallest(&self, k: usize) -> Option<K> {
        if k >= self.len {
            return None;
        }
        let (block, offset) = self.block_lengths.locate(k);
        Some(self.blocks[block][offset])
    }

    /// How many keys are strictly smaller than `key`.
    pub fn count_below(&self, key: &K) -> usize {
        let index = self.maxes.partition_point(|max| max < key);
        if index == self.blocks.len() {
            return self.len;
        }
        self.block_lengths.prefix(index) + self.blocks[index].partition_point(|existing| existing < key)
    }

    /// Every key, smallest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = K> + '_ {
        self.blocks.iter().flatten().copied()
    }
}

/// A multiset of scores with numpy-compatible percentiles: what an ASHA rung records.
///
/// Scores are ordered by [`f64::total_cmp`]; a NaN never panics but sorts above `+inf` (or
/// below `-inf` when its sign bit is set), so callers pass `-inf` for scores that should rank
/// worst.
#[derive(Debug, Clone, Default)]
pub struct ScoreMultiset {
    scores: OrderStatistics<TotalOrder>,
}

impl ScoreMultiset {
    /// An empty multiset.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of scores, counting repeats.
    pub fn len(&self) -> usize {
        self.scores.len()
    }

    /// Whether there are no scores.
    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// Adds one score.
    pub fn insert(&mut self, score: f64) {
        self.scores.insert(TotalOrder(score));
    }

    /// The k-th smallest score, counting from 0, or `None` when `k >= len()`.
    pub fn kth_smallest(&self, k: usize) -> Option<f64> {
        self.scores.kth_smallest(k).map(|score| score.0)
    }

    /// The `q`-th percentile (`q` in `[0, 100]`, clamped into it) as numpy's `percentile`
    /// computes it by default: the position `q/100 · (n − 1)` in the sorted scores, linearly
    /// interpolated between the order statistics on either side of it. `None` when there are
    /// no scores or `q` is NaN.
    ///
    /// The interpolation follows numpy's formula term for term, so the result agrees with it to
    /// the last bit on finite scores; where numpy would compute `-inf + inf` (an infinite score
    /// on one side only) the infinite side is returned instead of NaN.
    ///
    /// ```
    /// use tune_schedulers::order_stats::ScoreMultiset;
    ///
    /// let mut scores = ScoreMultiset::new();
    /// for score in [0.0, 10.0, 20.0, 30.0] {
    ///     scores.insert(score);
    /// }
    /// assert_eq!(scores.percentile(75.0), Some(22.5)); // position 2.25
    /// assert_eq!(scores.percentile(100.0), Some(30.0));
    /// ```
    pub fn percentile(&self, q: f64) -> Option<f64> {
        if q.is_nan() || self.is_empty() {
            return None;
        }
        let last = self.len() - 1;
        // numpy divides the percentile by 100 first, then multiplies by n - 1.
        let fraction = (q / 100.0).clamp(0.0, 1.0);
        let position = last as f64 * fraction;
        let below = (position.floor() as usize).min(last);
        let above = (below + 1).min(last);
        let weight = position - below as f64;
        let low = self.kth_smallest(below).expect("below < len");
        let high = self.kth_smallest(above).expect("above < len");
        Some(numpy_lerp(low, high, weight))
    }

    /// Every score, smallest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = f64> + '_ {
        self.scores.iter().map(|score| score.0)
    }
}

/// numpy's `_lerp(a, b, t)`: `a + (b − a)·t`, computed from `b` when `t ≥ 0.5`; with `a ≤ b`.
fn numpy_lerp(low: f64, high: f64, weight: f64) -> f64 {
    if weight == 0.0 || low == high {
        return low;
    }
    // 0 < weight < 1: the interpolation of an infinite end is that end.
    if low == f64::NEG_INFINITY || high == f64::INFINITY {
        return if low == f64::NEG_INFINITY { low } else { high };
    }
    let difference = high - low;
    if weight >= 0.5 {
        high - difference * (1.0 - weight)
    } else {
        low + difference * weight
    }
}

/// A Fenwick (binary indexed) tree over block lengths: prefix sums and "which block holds the
/// k-th key" in O(log blocks).
#[derive(Debug, Clone, Default)]
struct Fenwick {
    /// 1-based: `tree[i]` sums the lengths of blocks `(i − lowbit(i), i]`; `tree[0]` is unused.
    tree: Vec<usize>,
}

impl Fenwick {
    /// Builds the tree in O(blocks).
    fn from_lengths(lengths: impl IntoIterator<Item = usize>) -> Self {
        let mut tree = vec![0];
        tree.extend(lengths);
        let size = tree.len() - 1;
        for index in 1..=size {
            let parent = index + lowest_bit(index);
            if parent <= size {
                tree[parent] += tree[index];
            }
        }
        Self { tree }
    }

    fn size(&self) -> usize {
        self.tree.len().saturating_sub(1)
    }

    /// Adds `delta` to the length of block `block` (0-based).
    fn add(&mut self, block: usize, delta: usize) {
        let mut index = block + 1;
        while index <= self.size() {
            self.tree[index] += delta;
            index += lowest_bit(index);
        }
    }

    /// The total length of the first `blocks` blocks.
    fn prefix(&self, blocks: usize) -> usize {
        let mut index = blocks.min(self.size());
        let mut sum = 0;
        while index > 0 {
            sum += self.tree[index];
            index &= index - 1;
        }
        sum
    }

    /// The total length of all blocks.
    fn total(&self) -> usize {
        self.prefix(self.size())
    }

    /// The block holding the k-th key (0-based) and the key's offset in it; `k < total()`.
    fn locate(&self, k: usize) -> (usize, usize) {
        let size = self.size();
        let mut position = 0;
        let mut remaining = k;
        let mut step = if size == 0 { 0 } else { 1 << size.ilog2() };
        while step > 0 {
            let next = position + step;
            if next <= size && self.tree[next] <= remaining {
                position = next;
                remaining -= self.tree[next];
            }
            step >>= 1;
        }
        debug_assert!(position < size, "k-th key past the end");
        (position, remaining)
    }
}

fn lowest_bit(index: usize) -> usize {
    index & index.wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// numpy's linear percentile over a sorted slice, written out independently.
    fn reference_percentile(sorted: &[f64], q: f64) -> f64 {
        let position = (sorted.len() - 1) as f64 * (q / 100.0);
        let below = position.floor() as usize;
        let above = (below + 1).min(sorted.len() - 1);
        let t = position - below as f64;
        let (a, b) = (sorted[below], sorted[above]);
        if t >= 0.5 {
            b - (b - a) * (1.0 - t)
        } else {
            a + (b - a) * t
        }
    }

    #[test]
    fn empty_answers_nothing() {
        let scores = ScoreMultiset::new();
        assert!(scores.is_empty());
        assert_eq!(scores.kth_smallest(0), None);
        assert_eq!(scores.percentile(50.0), None);
        assert_eq!(OrderStatistics::<u32>::new().count_below(&7), 0);
    }

    #[test]
    fn percentiles_match_numpy() {
        let mut scores = ScoreMultiset::new();
        for score in [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0] {
            scores.insert(score);
        }
        // numpy.percentile([3, 1, 4, 1, 5, 9, 2, 6], q) for these q:
        assert_eq!(scores.percentile(0.0), Some(1.0));
        assert_eq!(scores.percentile(50.0), Some(3.5));
        assert_eq!(scores.percentile(75.0), Some(5.25));
        assert_eq!(scores.percentile(90.0), Some(6.8999999999999995));
        assert_eq!(scores.percentile(100.0), Some(9.0));
        assert_eq!(scores.percentile(250.0), Some(9.0));
        assert_eq!(scores.percentile(f64::NAN), None);
        // Ray's cutoff for reduction factor 3: (1 - 1/3) * 100.
        assert_eq!(scores.percentile((1.0 - 1.0 / 3.0) * 100.0), Some(4.666666666666667));
    }

    /// Values printed by numpy 2.4 `np.percentile(scores, q)` for Ray's cutoffs with reduction
    /// factors 3, 4, 2 and 2.5 (`(1 - 1/rf) * 100`): equal to the last bit.
    #[test]
    fn cutoffs_match_numpy_to_the_bit() {
        let cases: [(&[f64], [f64; 4]); 6] = [
            (&[0.001], [0.001, 0.001, 0.001, 0.001]),
            (
                &[0.299, -0.274],
                [0.10800000000000004, 0.15575, 0.012500000000000011, 0.0698],
            ),
            (
                &[-0.891, -0.455, -0.992],
                [-0.7456666666666666, -0.673, -0.891, -0.8038000000000001],
            ),
            (
                &[0.06, 1.34, -0.492, -0.62, 0.49],
                [0.3466666666666668, 0.49, 0.06, 0.23199999999999996],
            ),
            (
                &[
                    0.357, 0.105, -0.93, -0.029, 0.695, -1.344, -0.458, -1.901, -1.29, -1.842,
                ],
                [-0.028999999999999884, 0.0715, -0.6940000000000001, -0.2864000000000002],
            ),
            (
                &[
                    -0.235, -1.267, 0.271, 0.157, -0.187, -2.517, -0.539, -0.049, 0.113, -1.53, -0.478, -0.979, -0.809,
                    1.061, -0.808, -0.033, 0.884, -0.584, -0.112, 0.11, 0.064, -1.225, 0.076, 1.359, -1.547, 0.859,
                    0.119, -0.641, 2.0, 0.762, -1.199, 0.075, 0.577, -0.189, 0.683, -0.067, 0.667,
                ],
                [0.11300000000000003, 0.271, -0.049, 0.0756],
            ),
        ];
        for (values, expected) in cases {
            let mut scores = ScoreMultiset::new();
            for &value in values {
                scores.insert(value);
            }
            for (reduction_factor, numpy) in [3.0, 4.0, 2.0, 2.5].into_iter().zip(expected) {
                let q = (1.0 - 1.0 / reduction_factor) * 100.0;
                assert_eq!(scores.percentile(q), Some(numpy), "{values:?} at rf {reduction_factor}");
            }
        }
    }

    #[test]
    fn infinite_scores_interpolate_to_their_end() {
        let mut scores = ScoreMultiset::new();
        scores.insert(f64::NEG_INFINITY);
        scores.insert(5.0);
        assert_eq!(scores.percentile(25.0), Some(f64::NEG_INFINITY));
        assert_eq!(scores.percentile(75.0), Some(f64::NEG_INFINITY));
        assert_eq!(scores.percentile(100.0), Some(5.0));
        scores.insert(f64::INFINITY);
        assert_eq!(scores.percentile(75.0), Some(f64::INFINITY));
        assert_eq!(scores.percentile(50.0), Some(5.0));
    }

    #[test]
    fn nan_keeps_a_total_order() {
        let mut scores = ScoreMultiset::new();
        for score in [1.0, f64::NAN, f64::NEG_INFINITY, -f64::NAN, 0.0] {
            scores.insert(score);
        }
        let sorted: Vec<f64> = scores.iter().collect();
        assert!(sorted[0].is_nan() && sorted[0].is_sign_negative());
        assert_eq!(&sorted[1..4], &[f64::NEG_INFINITY, 0.0, 1.0]);
        assert!(sorted[4].is_nan());
        let _ = scores.percentile(50.0);
    }

    #[test]
    fn many_inserts_split_blocks() {
        let mut keys = OrderStatistics::new();
        // Descending inserts all land in the first block; ascending ones in the last.
        for key in (0..5_000u32).rev().chain(10_000..15_000) {
            keys.insert(key);
        }
        assert!(keys.blocks.len() > 8);
        assert!(
            keys.blocks
                .iter()
                .all(|block| !block.is_empty() && block.len() < MAX_BLOCK_LEN)
        );
        assert_eq!(keys.kth_smallest(4_999), Some(4_999));
        assert_eq!(keys.kth_smallest(5_000), Some(10_000));
        assert_eq!(keys.count_below(&10_000), 5_000);
        assert_eq!(keys.iter().count(), 10_000);
    }

    proptest! {
        #[test]
        fn kth_and_rank_match_a_sorted_vec(
            keys in prop::collection::vec(-50i32..50, 0..400),
            max_block_len in 2usize..16,
        ) {
            let mut stats = OrderStatistics::with_max_block_len(max_block_len);
            let mut reference = Vec::new();
            for key in keys {
                stats.insert(key);
                reference.push(key);
                reference.sort();
                prop_assert_eq!(stats.len(), reference.len());
                let k = (key.unsigned_abs() as usize * 7) % reference.len();
                prop_assert_eq!(stats.kth_smallest(k), Some(reference[k]));
                prop_assert_eq!(stats.kth_smallest(reference.len()), None);
                prop_assert_eq!(stats.count_below(&key), reference.partition_point(|x| *x < key));
            }
            prop_assert_eq!(stats.iter().collect::<Vec<_>>(), reference);
        }

        #[test]
        fn percentiles_match_the_reference(
            scores in prop::collection::vec(-1e6f64..1e6, 1..300),
            q in 0.0f64..=100.0,
            max_block_len in 2usize..32,
        ) {
            let mut multiset = ScoreMultiset { scores: OrderStatistics::with_max_block_len(max_block_len) };
            for &score in &scores {
                multiset.insert(score);
            }
            let mut sorted = scores.clone();
            sorted.sort_by(f64::total_cmp);
            for (k, expected) in sorted.iter().enumerate() {
                prop_assert_eq!(multiset.kth_smallest(k), Some(*expected));
            }
            let expected = reference_percentile(&sorted, q);
            prop_assert_eq!(multiset.percentile(q), Some(expected));
            let (min, max) = (sorted[0], sorted[sorted.len() - 1]);
            prop_assert!((min..=max).contains(&expected));
        }

        #[test]
        fn any_floats_never_panic(scores in prop::collection::vec(any::<f64>(), 0..200), q in any::<f64>()) {
            let mut multiset = ScoreMultiset::new();
            for score in scores {
                multiset.insert(score);
                let _ = multiset.percentile(q);
            }
            let sorted: Vec<f64> = multiset.iter().collect();
            prop_assert!(sorted.windows(2).all(|pair| pair[0].total_cmp(&pair[1]).is_le()));
        }
    }
}
