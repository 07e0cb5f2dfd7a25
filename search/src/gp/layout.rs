//! Where each dimension of the space lies in a GP input: one column per numeric dimension, a
//! one-hot block per categorical one, with the dimensions a configuration does not use set to
//! a neutral value.

use crate::unit::{DimKind, UnitSpace};

/// Where each dimension of the space lies in a GP input: one column per numeric dimension, a
/// one-hot block per categorical one.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// First column of each dimension.
    offsets: Vec<usize>,
    /// Columns of each dimension (1, or the number of options).
    widths: Vec<usize>,
    /// The dimension each column belongs to.
    pub(super) owner: Vec<usize>,
    /// Each dimension's condition, as in [`crate::unit::UnitDim::condition`].
    conditions: Vec<Option<(usize, usize)>>,
    /// Whether each dimension is a choice (a one-hot block).
    categorical: Vec<bool>,
    /// Total number of columns.
    pub(super) features: usize,
}

impl Layout {
    /// The layout of `unit`'s dimensions.
    pub(super) fn new(unit: &UnitSpace) -> Self {
        let mut layout = Layout {
            offsets: Vec::new(),
            widths: Vec::new(),
            owner: Vec::new(),
            conditions: Vec::new(),
            categorical: Vec::new(),
            features: 0,
        };
        for (index, dim) in unit.dims().iter().enumerate() {
            let (width, categorical) = match dim.kind {
                DimKind::Categorical { options } => (options.max(1), true),
                DimKind::Continuous { .. } | DimKind::Integer { .. } => (1, false),
            };
            layout.categorical.push(categorical);
            layout.offsets.push(layout.features);
            layout.widths.push(width);
            layout.owner.extend(std::iter::repeat_n(index, width));
            layout.conditions.push(dim.condition);
            layout.features += width;
        }
        layout
    }

    /// The number of dimensions of the space (not of columns).
    pub(super) fn dims(&self) -> usize {
        self.widths.len()
    }

    fn is_categorical(&self, dim: usize) -> bool {
        self.categorical[dim]
    }

    /// The GP input of a unit-cube encoding.
    pub(super) fn point(&self, u: &[f64], active: &[bool]) -> Vec<f64> {
        let mut point = vec![0.0; self.features];
        for dim in 0..self.dims() {
            let offset = self.offsets[dim];
            if self.is_categorical(dim) {
                if active[dim] {
                    let width = self.widths[dim];
                    let option = ((u[dim] * width as f64).floor().max(0.0) as usize).min(width - 1);
                    point[offset + option] = 1.0;
                }
            } else {
                point[offset] = if active[dim] { u[dim] } else { 0.5 };
            }
        }
        point
    }

    /// The option a (relaxed) one-hot block takes: its largest entry, the first on ties.
    fn option(&self, dim: usize, z: &[f64]) -> usize {
        let block = &z[self.offsets[dim]..self.offsets[dim] + self.widths[dim]];
        let mut best = 0;
        for (index, value) in block.iter().enumerate() {
            if *value > block[best] {
                best = index;
            }
        }
        best
    }

    /// Which dimensions a relaxed point uses.
    fn active(&self, z: &[f64]) -> Vec<bool> {
        let mut active = vec![false; self.dims()];
        for dim in 0..self.dims() {
            active[dim] = match self.conditions[dim] {
                None => true,
                Some((controller, option)) => active[controller] && self.option(controller, z) == option,
            };
        }
        active
    }

    /// A relaxed point with unused dimensions set to their neutral value, and which columns
    /// stay free (belong to a used dimension).
    pub(super) fn canonical(&self, z: &[f64]) -> (Vec<f64>, Vec<bool>) {
        let active = self.active(z);
        let mut point = z.to_vec();
        let mut free = vec![true; self.features];
        for (dim, _) in active.iter().enumerate().filter(|(_, used)| !**used) {
            let neutral = if self.is_categorical(dim) { 0.0 } else { 0.5 };
            for column in self.offsets[dim]..self.offsets[dim] + self.widths[dim] {
                point[column] = neutral;
                free[column] = false;
            }
        }
        (point, free)
    }

    /// The unit-cube point a relaxed point decodes from.
    pub(super) fn to_unit(&self, z: &[f64]) -> Vec<f64> {
        (0..self.dims())
            .map(|dim| {
                if self.is_categorical(dim) {
                    (self.option(dim, z) as f64 + 0.5) / self.widths[dim] as f64
                } else {
                    z[self.offsets[dim]].clamp(0.0, 1.0)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tune_core::space::Space;

    use super::*;

    #[test]
    fn layout_one_hots_choices_and_neutralises_unused_dimensions() {
        let space = Space::from_json(&json!({
            "opt": {"choice": [{"name": "sgd", "momentum": {"uniform": [0, 1]}}, {"name": "adam"}]},
            "x": {"randint": [0, 4]}
        }))
        .unwrap();
        let unit = UnitSpace::new(&space);
        let layout = Layout::new(&unit);
        // Columns: opt (one-hot of 2), momentum, x.
        assert_eq!(layout.features, 4);
        let config = unit.decode(&[0.2, 0.7, 0.6]);
        let (u, active) = unit.encode(&config);
        assert_eq!(layout.point(&u, &active), [1.0, 0.0, 0.7, 0.625]);
        let config = unit.decode(&[0.8, 0.7, 0.6]);
        let (u, active) = unit.encode(&config);
        assert_eq!(layout.point(&u, &active), [0.0, 1.0, 0.5, 0.625]);
        // A relaxed point: adam's entry is the largest, so momentum is unused.
        let (point, free) = layout.canonical(&[0.4, 0.6, 0.9, 0.3]);
        assert_eq!(point, [0.4, 0.6, 0.5, 0.3]);
        assert_eq!(free, [true, true, false, true]);
        assert_eq!(layout.to_unit(&[0.4, 0.6, 0.9, 0.3]), [0.75, 0.9, 0.3]);
        assert_eq!(
            unit.decode(&layout.to_unit(&[0.4, 0.6, 0.9, 0.3])).get("opt.name"),
            Some(&json!("adam"))
        );
    }
}
