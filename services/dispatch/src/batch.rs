//! Group commit: the small writes of many jobs in flight at once become one transaction. Each job
//! still waits for its own answer, so nothing is acknowledged before its write has committed; what
//! changes is that a commit (and its round trips) is paid once per batch instead of once per job,
//! which is what lets dispatch keep up with an SMSC window of tens of submits.
//!
//! A worker takes whatever is waiting (up to `max_batch`) as soon as it is free, so a lone job is
//! written at once, never held back to fill a batch; batches grow only when jobs arrive faster than
//! transactions commit. Several workers run, so one batch fills while another commits.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

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
}
