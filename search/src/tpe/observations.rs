//! The observations a TPE suggestion is built from: every trial seen, by slot, with its model
//! coordinates and score, and the orderings a suggestion needs — the finished slots ranked by
//! score, and per numeric node the slots where it is present sorted by value — kept up to date
//! as trials are suggested and finish, so that a suggestion never sorts them.

use std::collections::BTreeMap;

/// Univariate estimators of more observations than this use a systematic sample of them.
const THIN_CAP: usize = 1024;

/// A slot's class in a split: left out (a running trial without the constant liar).
pub(super) const SKIP: u8 = 0;
/// A slot's class in a split: among the good results.
pub(super) const GOOD: u8 = 1;
/// A slot's class in a split: among the bad results (or running, with the constant liar).
pub(super) const BAD: u8 = 2;

/// Every trial seen, by slot, with the orderings a suggestion needs kept up to date.
pub(super) struct Observations {
    /// Per node: `Some(options)` for a categorical, `None` for a numeric node.
    options: Vec<Option<usize>>,
    /// Slot-major model coordinates, `options.len()` per slot; NaN where a node is absent.
    values: Vec<f64>,
    /// The trial id of each slot.
    pub(super) trials: Vec<u64>,
    /// Each slot's score (higher is better; `-inf` for the worst and for a running trial).
    scores: Vec<f64>,
    /// Whether each slot's trial has finished.
    pub(super) completed: Vec<bool>,
    slot_of: BTreeMap<u64, usize>,
    /// Slots suggested and not finished.
    pub(super) running: Vec<usize>,
    /// Finished slots, best score first (ties: earlier slot first).
    pub(super) ranked: Vec<u32>,
    /// Finished slots with a finite score.
    pub(super) finite: usize,
    /// Per numeric node, the slots where it is present sorted by value.
    pub(super) columns: Vec<Column>,
    /// Per categorical node, how many finished slots took each option.
    pub(super) counts: Vec<Vec<f64>>,
}

/// One numeric node's values over the slots where it is present, ascending, with their slots.
#[derive(Debug, Default)]
pub(super) struct Column {
    /// The values, ascending.
    pub(super) values: Vec<f64>,
    /// The slot of each value.
    pub(super) slots: Vec<u32>,
}

impl Observations {
    /// No observations yet, of nodes with `options` (see [`ModelSpace::options`](super::space::ModelSpace::options)).
    pub(super) fn new(options: Vec<Option<usize>>) -> Observations {
        let columns = options.iter().map(|_| Column::default()).collect();
        let counts = options.iter().map(|options| vec![0.0; options.unwrap_or(0)]).collect();
        Observations {
            options,
            values: Vec::new(),
            trials: Vec::new(),
            scores: Vec::new(),
            completed: Vec::new(),
            slot_of: BTreeMap::new(),
            running: Vec::new(),
            ranked: Vec::new(),
            finite: 0,
            columns,
            counts,
        }
    }

    fn width(&self) -> usize {
        self.options.len()
    }

    /// The model coordinates of `slot`, one per node.
    pub(super) fn row(&self, slot: usize) -> &[f64] {
        &self.values[slot * self.width()..(slot + 1) * self.width()]
    }

    /// The slot of `trial`, made (running, with no values) if new.
    pub(super) fn slot(&mut self, trial: u64) -> usize {
        if let Some(&slot) = self.slot_of.get(&trial) {
            return slot;
        }
        let slot = self.trials.len();
        self.slot_of.insert(trial, slot);
        self.trials.push(trial);
        self.scores.push(f64::NEG_INFINITY);
        self.completed.push(false);
        self.running.push(slot);
        self.values.extend(std::iter::repeat_n(f64::NAN, self.width()));
        slot
    }

    /// Adds `sign` times the slot's options to the per-option counts.
    fn count(&mut self, slot: usize, sign: f64) {
        let width = self.width();
        for (node, counts) in self.counts.iter_mut().enumerate() {
            let value = self.values[slot * width + node];
            if !counts.is_empty() && !value.is_nan() {
                counts[value as usize] += sign;
            }
        }
    }

    /// Sets the model coordinates of `slot`, keeping the columns and counts in step.
    pub(super) fn set_row(&mut self, slot: usize, row: &[f64]) {
        debug_assert_eq!(row.len(), self.width());
        let width = self.width();
        if self.completed[slot] {
            self.count(slot, -1.0);
        }
        for (node, &new) in row.iter().enumerate() {
            let old = self.values[slot * width + node];
            if old.to_bits() == new.to_bits() {
                continue;
            }
            self.values[slot * width + node] = new;
            if self.options[node].is_some() {
                continue;
            }
            let column = &mut self.columns[node];
            if !old.is_nan() {
                let start = column.values.partition_point(|&v| v < old);
                let end = column.values.partition_point(|&v| v <= old);
                if let Some(offset) = column.slots[start..end].iter().position(|&s| s as usize == slot) {
                    column.values.remove(start + offset);
                    column.slots.remove(start + offset);
                }
            }
            if !new.is_nan() {
                let at = column.values.partition_point(|&v| v <= new);
                column.values.insert(at, new);
                column.slots.insert(at, slot as u32);
            }
        }
        if self.completed[slot] {
            self.count(slot, 1.0);
        }
    }

    /// Marks `slot` finished with `score` (or re-scores it), keeping the ranking in step.
    pub(super) fn complete(&mut self, slot: usize, score: f64) {
        debug_assert!(!score.is_nan());
        if self.completed[slot] {
            if let Some(at) = self.ranked.iter().position(|&s| s as usize == slot) {
                self.ranked.remove(at);
            }
            if self.scores[slot].is_finite() {
                self.finite -= 1;
            }
        } else {
            self.completed[slot] = true;
            self.running.retain(|&s| s != slot);
            self.count(slot, 1.0);
        }
        self.scores[slot] = score;
        if score.is_finite() {
            self.finite += 1;
        }
        let scores = &self.scores;
        let at = self.ranked.partition_point(|&s| {
            let other = scores[s as usize];
            other > score || (other == score && (s as usize) < slot)
        });
        self.ranked.insert(at, slot as u32);
    }
}

/// The values of the entries of `column` in class `wanted`, of which there are `count`, in
/// order; above [`THIN_CAP`] of them, a systematic sample (every k-th entry of the column, kept
/// if in the class) of about [`THIN_CAP`]. Returns the values and how many observations each
/// stands for.
pub(super) fn gather(column: &Column, class: &[u8], wanted: u8, count: usize) -> (Vec<f64>, f64) {
    let len = column.values.len();
    if count <= THIN_CAP {
        let values = column
            .values
            .iter()
            .zip(&column.slots)
            .filter(|&(_, &slot)| class[slot as usize] == wanted)
            .map(|(&value, _)| value)
            .collect();
        return (values, 1.0);
    }
    let picks = (THIN_CAP * len).div_ceil(count).min(len);
    let values: Vec<f64> = (0..picks)
        .map(|i| (2 * i + 1) * len / (2 * picks))
        .filter(|&at| class[column.slots[at] as usize] == wanted)
        .map(|at| column.values[at])
        .collect();
    let unit = count as f64 / values.len().max(1) as f64;
    (values, unit)
}
