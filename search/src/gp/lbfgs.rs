//! Unconstrained minimisation by L-BFGS with a Moré–Thuente line search, through argmin, for the
//! hyperparameter fit and the acquisition optimisation (each handles its box itself, by
//! clamping and penalties).
//!
//! ## References
//!
//! - J. Nocedal, S. J. Wright, *Numerical Optimization*, Springer, 2006 (L-BFGS).
//! - J. J. Moré, D. J. Thuente, "Line search algorithms with guaranteed sufficient decrease",
//!   ACM TOMS 20(3), 1994.

use std::cell::RefCell;

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;

/// L-BFGS history length.
const LBFGS_MEMORY: usize = 6;
/// What a non-finite cost is replaced by, so that a line search backs off rather than fails.
pub(super) const HUGE_COST: f64 = 1e12;

/// Evaluations a [`Problem`] remembers.
const EVALUATION_CACHE: usize = 4;

/// A point with its cost and gradient.
type Evaluation = (Vec<f64>, f64, Vec<f64>);

/// A cost-and-gradient function as an argmin problem. The line search asks for the cost and
/// then the gradient at a point, and L-BFGS asks again for the gradient at the point the line
/// search settled on, so the last few evaluations are remembered.
struct Problem<F> {
    function: F,
    recent: RefCell<Vec<Evaluation>>,
}

impl<F: Fn(&[f64]) -> (f64, Vec<f64>)> Problem<F> {
    fn evaluate(&self, param: &[f64]) -> (f64, Vec<f64>) {
        if let Some((_, cost, gradient)) = self.recent.borrow().iter().find(|(at, _, _)| at.as_slice() == param) {
            return (*cost, gradient.clone());
        }
        let (cost, mut gradient) = (self.function)(param);
        let cost = if cost.is_finite() { cost } else { HUGE_COST };
        for g in &mut gradient {
            if !g.is_finite() {
                *g = 0.0;
            }
        }
        let mut recent = self.recent.borrow_mut();
        if recent.len() == EVALUATION_CACHE {
            recent.remove(0);
        }
        recent.push((param.to_vec(), cost, gradient.clone()));
        (cost, gradient)
    }
}

impl<F: Fn(&[f64]) -> (f64, Vec<f64>)> CostFunction for Problem<F> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, param: &Vec<f64>) -> std::result::Result<f64, argmin::core::Error> {
        Ok(self.evaluate(param).0)
    }
}

impl<F: Fn(&[f64]) -> (f64, Vec<f64>)> Gradient for Problem<F> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;

    fn gradient(&self, param: &Vec<f64>) -> std::result::Result<Vec<f64>, argmin::core::Error> {
        Ok(self.evaluate(param).1)
    }
}

/// Minimises `function` from `start` with L-BFGS (Moré–Thuente line search) for at most
/// `iterations` iterations or until the gradient norm or the change in cost falls below
/// `tolerance`; the best point seen and its cost (the start if argmin fails).
pub(super) fn minimize(
    function: impl Fn(&[f64]) -> (f64, Vec<f64>),
    start: Vec<f64>,
    iterations: u64,
    tolerance: (f64, f64),
) -> (Vec<f64>, f64) {
    let problem = Problem {
        function,
        recent: RefCell::new(Vec::with_capacity(EVALUATION_CACHE)),
    };
    let start_cost = problem.evaluate(&start).0;
    let line_search: MoreThuenteLineSearch<Vec<f64>, Vec<f64>, f64> = MoreThuenteLineSearch::new();
    let Ok(solver) = LBFGS::new(line_search, LBFGS_MEMORY)
        .with_tolerance_grad(tolerance.0)
        .and_then(|solver| solver.with_tolerance_cost(tolerance.1))
    else {
        return (start, start_cost);
    };
    let outcome = Executor::new(problem, solver)
        .configure(|state| state.param(start.clone()).max_iters(iterations))
        .timer(false)
        .run();
    match outcome {
        Ok(result) => {
            let state = result.state();
            match state.get_best_param() {
                Some(best) if state.get_best_cost() <= start_cost => (best.clone(), state.get_best_cost()),
                _ => (start, start_cost),
            }
        }
        Err(_) => (start, start_cost),
    }
}
