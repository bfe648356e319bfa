//! Group commit: the small writes of many jobs in flight at once become one transaction. Each job
//! still waits for its own answer, so nothing is acknowledged before its write has committed; what
//! changes is that a commit (and its round trips) is paid once per batch instead of once per job,
//! which is what lets dispatch keep up with an SMSC window of tens of submits.
//!
//! A worker takes whatever is waiting (up to `max_batch`) as soon as it is free, so a lone job is
//! written at once, never held back to fill a batch; batches grow only when jobs arrive faster than
//! transactions commit. Several workers run, so one batch fills while another commits.
//!
//! On top of it, [`write_in_batches`] runs a [`BatchWrite`] (a kind of write that takes many items
//! in one transaction) so that one bad item costs only itself: a batch that fails for a reason one
//! item may cause is written again item by item ([`write_each_or_alone`]).

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

/// Items written per transaction at most. Big enough that a full prefetch window commits in a few
/// transactions; small enough that one batch's row locks are held briefly.
pub const MAX_BATCH: usize = 128;
/// Batches being written at once, per kind of write: one fills while others commit.
pub const BATCH_WORKERS: usize = 3;

type Request<Req, Resp> = (Req, oneshot::Sender<Resp>);

/// Sends requests to batch workers and waits for each answer.
#[derive(Debug)]
pub struct Batcher<Req, Resp> {
    requests: mpsc::Sender<Request<Req, Resp>>,
}

impl<Req, Resp> Batcher<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    /// Starts `workers` tasks that each call `run` with up to `max_batch` requests; `run` must
    /// answer every request, in order. The workers end once the batcher is dropped. Must be called
    /// inside a Tokio runtime.
    pub fn spawn<F, Fut>(max_batch: usize, workers: usize, run: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<Resp>> + Send,
    {
        let max_batch = max_batch.max(1);
        let (requests, receiver) = mpsc::channel::<Request<Req, Resp>>(max_batch * workers.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let run = Arc::new(run);
        for _ in 0..workers.max(1) {
            let receiver = receiver.clone();
            let run = run.clone();
            tokio::spawn(async move {
                loop {
                    let mut batch = Vec::new();
                    {
                        let mut receiver = receiver.lock().await;
                        let Some(first) = receiver.recv().await else {
                            return;
                        };
                        batch.push(first);
                        while batch.len() < max_batch {
                            match receiver.try_recv() {
                                Ok(next) => batch.push(next),
                                Err(_) => break,
                            }
                        }
                    }
                    let (inputs, replies): (Vec<Req>, Vec<oneshot::Sender<Resp>>) =
                        batch.into_iter().unzip();
                    let answers = run(inputs).await;
                    debug_assert_eq!(answers.len(), replies.len(), "one answer per request");
                    for (reply, answer) in replies.into_iter().zip(answers) {
                        // The caller may have given up (its task was cancelled); nothing to do.
                        let _ = reply.send(answer);
                    }
                }
            });
        }
        Batcher { requests }
    }

    /// Queues `request` for the next batch and waits for its answer. `None` only when the workers
    /// are gone (the runtime is shutting down).
    pub async fn call(&self, request: Req) -> Option<Resp> {
        let (reply, answer) = oneshot::channel();
        self.requests.send((request, reply)).await.ok()?;
        answer.await.ok()
    }
}

/// The error of a [`BatchWrite`]: what [`write_each_or_alone`] needs to know of it.
pub trait BatchError: std::fmt::Display + Sized {
    /// Whether one item of the batch may have caused it (a constraint or a value one row breaks, a
    /// deadlock with another batch), so that writing the items one by one is worth it.
    fn may_be_one_items_fault(&self) -> bool;
    /// What each other item of a batch that failed as a whole with `cause` is answered.
    fn batch_failed(cause: &Self) -> Self;
}

/// A kind of write that [`write_in_batches`] applies to many items in one transaction.
pub trait BatchWrite: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Answer: Send + 'static;
    type Error: BatchError + Send + 'static;
    /// Writes every item in one transaction and answers each, in order; all or nothing.
    fn write(
        &self,
        items: &[Self::Item],
    ) -> impl Future<Output = Result<Vec<Self::Answer>, Self::Error>> + Send;
}

/// Writes the batch in one transaction; when that fails, each item in its own, so one bad item (or
/// a deadlock with a concurrent batch sharing a redelivered job) costs only itself.
pub async fn write_each_or_alone<W: BatchWrite>(
    writer: &W,
    items: Vec<W::Item>,
) -> Vec<Result<W::Answer, W::Error>> {
    match writer.write(&items).await {
        Ok(answers) => answers.into_iter().map(Ok).collect(),
        Err(error) if items.len() == 1 => vec![Err(error)],
        // The database itself is unreachable: one by one would only wait out the pool N times.
        Err(error) if !error.may_be_one_items_fault() => {
            let others = (1..items.len()).map(|_| Err(W::Error::batch_failed(&error)));
            let mut answers: Vec<_> = others.collect();
            answers.insert(0, Err(error));
            answers
        }
        Err(error) => {
            tracing::debug!(%error, items = items.len(), "a batch write failed; writing its items one by one");
            let mut answers = Vec::with_capacity(items.len());
            for item in &items {
                let answer = writer.write(std::slice::from_ref(item)).await;
                answers.push(answer.map(|mut one| one.remove(0)));
            }
            answers
        }
    }
}

/// Where a kind of write is sent to be batched.
pub type BatchWriter<W> = Arc<
    Batcher<<W as BatchWrite>::Item, Result<<W as BatchWrite>::Answer, <W as BatchWrite>::Error>>,
>;

/// Starts [`BATCH_WORKERS`] workers writing batches of up to [`MAX_BATCH`] items with `writer`.
/// Must be called inside a Tokio runtime.
pub fn write_in_batches<W: BatchWrite>(writer: W) -> BatchWriter<W> {
    let writer = Arc::new(writer);
    Arc::new(Batcher::spawn(MAX_BATCH, BATCH_WORKERS, move |items| {
        let writer = writer.clone();
        async move { write_each_or_alone(&*writer, items).await }
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn every_caller_gets_its_own_answer_and_concurrent_calls_share_batches() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let batcher = Arc::new(Batcher::spawn(16, 1, move |inputs: Vec<u32>| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inputs.into_iter().map(|n| n * 10).collect::<Vec<_>>()
            }
        }));
        let calls = (0..64u32).map(|n| {
            let batcher = batcher.clone();
            tokio::spawn(async move { (n, batcher.call(n).await) })
        });
        for call in futures::future::join_all(calls).await {
            let (n, answer) = call.unwrap();
            assert_eq!(answer, Some(n * 10));
        }
        let batches = batches.load(Ordering::SeqCst);
        assert!(
            batches < 64,
            "64 concurrent calls should have shared batches, took {batches}"
        );
    }

    #[tokio::test]
    async fn a_lone_call_is_not_held_back_to_fill_a_batch() {
        let batcher = Batcher::spawn(1000, 2, |inputs: Vec<u8>| async move { inputs });
        // Nothing else ever arrives: a batcher that waited to fill the batch would hang here.
        assert_eq!(batcher.call(7).await, Some(7));
    }

    /// A test write: items above 100 are refused (an item's own fault); `down` refuses every
    /// write as the database being away. Counts the transactions.
    struct Refusing {
        down: bool,
        transactions: AtomicUsize,
    }

    #[derive(Debug, PartialEq, Eq)]
    enum TestError {
        Refused(u32),
        Down,
        WithTheBatch(String),
    }

    impl std::fmt::Display for TestError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl BatchError for TestError {
        fn may_be_one_items_fault(&self) -> bool {
            matches!(self, TestError::Refused(_))
        }
        fn batch_failed(cause: &Self) -> Self {
            TestError::WithTheBatch(cause.to_string())
        }
    }

    impl BatchWrite for Refusing {
        type Item = u32;
        type Answer = u32;
        type Error = TestError;

        async fn write(&self, items: &[u32]) -> Result<Vec<u32>, TestError> {
            self.transactions.fetch_add(1, Ordering::SeqCst);
            if self.down {
                return Err(TestError::Down);
            }
            match items.iter().find(|n| **n > 100) {
                Some(bad) => Err(TestError::Refused(*bad)),
                None => Ok(items.iter().map(|n| n + 1).collect()),
            }
        }
    }

    fn refusing(down: bool) -> Refusing {
        Refusing {
            down,
            transactions: AtomicUsize::new(0),
        }
    }

    #[tokio::test]
    async fn one_refused_item_costs_only_itself_when_its_batch_is_written_again_one_by_one() {
        let writer = refusing(false);
        let answers = write_each_or_alone(&writer, vec![1, 200, 3]).await;
        assert_eq!(answers, [Ok(2), Err(TestError::Refused(200)), Ok(4)]);
        assert_eq!(
            writer.transactions.load(Ordering::SeqCst),
            4,
            "the batch, then each"
        );
        let whole = write_each_or_alone(&writer, vec![5, 6]).await;
        assert_eq!(whole, [Ok(6), Ok(7)]);
    }

    #[tokio::test]
    async fn a_database_that_is_away_fails_the_batch_once_not_once_per_item() {
        let writer = refusing(true);
        let answers = write_each_or_alone(&writer, vec![1, 2, 3]).await;
        assert_eq!(writer.transactions.load(Ordering::SeqCst), 1);
        assert_eq!(
            answers,
            [
                Err(TestError::Down),
                Err(TestError::WithTheBatch("Down".into())),
                Err(TestError::WithTheBatch("Down".into())),
            ]
        );
    }

    #[tokio::test]
    async fn batched_writes_answer_each_caller() {
        let writer = write_in_batches(refusing(false));
        let calls = (0..20u32).map(|n| {
            let writer = writer.clone();
            async move { writer.call(n).await }
        });
        let answers = futures::future::join_all(calls).await;
        let expected: Vec<_> = (0..20u32).map(|n| Some(Ok(n + 1))).collect();
        assert_eq!(answers, expected);
    }
}
