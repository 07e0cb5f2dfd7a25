//! The bounded queue between the driver's hook and the tracking thread, and the diverting of
//! trials whose updates no longer fit (they are read back from the store later).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tune_core::trial::TrialId;

use crate::convert::Update;

/// The queue between the driver's hook and the tracking thread.
#[derive(Debug)]
pub(crate) struct Queue {
    /// The updates, each with its sequence number.
    pub(crate) items: VecDeque<(u64, Update)>,
    /// Sum of the items' weights.
    pub(crate) weight: usize,
    capacity: usize,
    /// The sequence number of the next update queued.
    pub(crate) next_seq: u64,
    /// Trials whose updates are not queued but read back from the store later, with the
    /// sequence number from which on they were diverted.
    pub(crate) diverted: BTreeMap<TrialId, u64>,
    /// Updates diverted so far.
    pub(crate) diverted_updates: u64,
    /// `finish()` was called: send everything, then end, by this deadline.
    pub(crate) closing: Option<Instant>,
    /// Tracking gave up (MLflow refused the sweep's run): updates are not kept.
    pub(crate) disabled: bool,
    /// What the worker still held, as it last said.
    pub(crate) worker_pending: usize,
}

impl Queue {
    /// An empty queue that holds updates of `capacity` weight in all.
    fn new(capacity: usize) -> Self {
        Queue {
            items: VecDeque::new(),
            weight: 0,
            capacity,
            next_seq: 0,
            diverted: BTreeMap::new(),
            diverted_updates: 0,
            closing: None,
            disabled: false,
            worker_pending: 0,
        }
    }

    /// Queues an update, or diverts its trial when the queue is full. The end of the sweep is
    /// always queued.
    pub(crate) fn push(&mut self, update: Update) {
        if let Some(trial) = update.trial() {
            if self.diverted.contains_key(&trial) {
                self.diverted_updates += 1;
                return;
            }
            if self.weight + update.weight() > self.capacity {
                self.diverted.insert(trial, self.next_seq);
                self.diverted_updates += 1;
                return;
            }
        }
        self.weight += update.weight();
        self.items.push_back((self.next_seq, update));
        self.next_seq += 1;
    }

    /// Takes up to `most` updates from the front, each with its sequence number.
    pub(crate) fn take(&mut self, most: usize) -> Vec<(u64, Update)> {
        let count = most.min(self.items.len());
        let taken: Vec<_> = self.items.drain(..count).collect();
        self.weight -= taken.iter().map(|(_, update)| update.weight()).sum::<usize>();
        taken
    }
}

/// The queue and the condition variable that wakes the tracking thread, shared by the hook, the
/// [`crate::Tracker`] and the thread.
#[derive(Debug)]
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    pub(crate) wake: Condvar,
}

impl Shared {
    /// An empty queue of `capacity` (at least 1).
    pub(crate) fn new(capacity: usize) -> Self {
        Shared {
            queue: Mutex::new(Queue::new(capacity.max(1))),
            wake: Condvar::new(),
        }
    }

    /// The queue, even when a thread panicked while it held it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use tune_core::controller::EndCause;
    use tune_core::trial::Metrics;

    use super::*;

    #[test]
    fn the_queue_is_bounded_and_diverts_whole_trials() {
        let mut queue = Queue::new(10);
        let report = |trial: u64, step: u64| Update::Report {
            trial: TrialId(trial),
            step,
            metrics: Metrics::from([("loss".to_owned(), 0.0), ("acc".to_owned(), 1.0)]),
            at_ms: 0,
        };
        for step in 0..5 {
            queue.push(report(1, step));
        }
        assert_eq!((queue.items.len(), queue.weight), (5, 10));
        queue.push(report(2, 0));
        queue.push(Update::Finished {
            cause: EndCause::AllTrialsDone,
            at_ms: 0,
        });
        assert_eq!(queue.items.len(), 6, "the end of the sweep is always queued");
        assert_eq!(queue.diverted.get(&TrialId(2)), Some(&5));
        let taken = queue.take(3);
        assert_eq!(taken.len(), 3);
        queue.push(report(2, 1));
        assert_eq!(
            queue.items.len(),
            3,
            "a diverted trial stays diverted until it is read back"
        );
        queue.push(report(1, 5));
        assert_eq!(queue.items.len(), 4);
        assert_eq!(queue.diverted_updates, 2);
    }
}
