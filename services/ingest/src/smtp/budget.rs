//! The bytes of message content buffered across all sessions, bounded by one budget
//! (`EMAIL2SMS_INGEST_BUFFER_BUDGET`), so memory stays bounded however many sessions send big
//! messages at once: two 24 MB messages used to take 390 MB with six sessions, and nothing
//! stopped 2,000 sessions from each holding 25 MB.
//!
//! A session reserves the message's declared SIZE (or [`MIN_RESERVATION`]) at DATA and answers
//! 452 4.3.1 when even that is not available; while the message arrives, its reservation grows with
//! the buffer it needs, and when the budget cannot cover that, the rest is read and dropped and the
//! message gets 452 4.3.1 after its end. Both are temporary: the relay keeps the mail and retries.
//! The reservation is held until the handler has finished with the message.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// What a message without a SIZE parameter reserves at DATA: most mail is a few KiB, and this is
/// a few reads (16 KiB each) of headroom before the reservation must grow.
pub const MIN_RESERVATION: usize = 64 * 1024;

/// The shared budget: one semaphore permit per byte.
#[derive(Debug)]
pub struct BufferBudget {
    semaphore: Arc<Semaphore>,
    total: usize,
}

impl BufferBudget {
    pub fn new(total: usize) -> Arc<BufferBudget> {
        let total = total.min(Semaphore::MAX_PERMITS);
        Arc::new(BufferBudget {
            semaphore: Arc::new(Semaphore::new(total)),
            total,
        })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes not reserved by any session now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Reserves `bytes` now, or nothing when they are not available.
    pub fn reserve(&self, bytes: usize) -> Option<Reservation> {
        let mut reservation = Reservation {
            semaphore: self.semaphore.clone(),
            permit: None,
        };
        reservation.grow_to(bytes).then_some(reservation)
    }
}

/// Bytes of the budget held by one message; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    semaphore: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    /// Bytes held.
    pub fn held(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Holds at least `bytes` in all; false (holding what it held) when the budget cannot.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        let more = bytes.saturating_sub(self.held());
        if more == 0 {
            return true;
        }
        let Ok(more) = u32::try_from(more) else {
            return false;
        };
        match self.semaphore.clone().try_acquire_many_owned(more) {
            Ok(permit) => {
                match &mut self.permit {
                    Some(held) => held.merge(permit),
                    None => self.permit = Some(permit),
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Gives back what is held beyond `bytes`.
    pub fn shrink_to(&mut self, bytes: usize) {
        let extra = self.held().saturating_sub(bytes);
        if extra > 0
            && let Some(held) = &mut self.permit
        {
            // Splitting off and dropping returns the permits.
            drop(held.split(extra));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back() {
        let budget = BufferBudget::new(1000);
        let mut a = budget.reserve(600).unwrap();
        assert!(budget.reserve(500).is_none());
        let b = budget.reserve(400).unwrap();
        assert_eq!(budget.available(), 0);
        assert!(!a.grow_to(601));
        assert_eq!(a.held(), 600);
        drop(b);
        assert!(a.grow_to(900));
        assert_eq!(budget.available(), 100);
        a.shrink_to(100);
        assert_eq!((a.held(), budget.available()), (100, 900));
        drop(a);
        assert_eq!(budget.available(), 1000);
        let empty = budget.reserve(0).unwrap();
        assert_eq!(empty.held(), 0);
    }
}
