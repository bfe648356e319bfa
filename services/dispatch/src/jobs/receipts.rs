//! Delivery receipts: an SMSC sends one per part, as fast as it accepts submits, and waits for
//! each answer; the connector answers it only once the receipt is recorded here, so a receipt is
//! never acknowledged and then lost. A part keeps its first final receipt (a duplicate, or a late
//! "enroute", changes nothing), and a job completes once every part has a final one
//! ([`super::transitions::receipt_change`]): which statuses are final is
//! [`ReceiptStatus::is_final`], and the SQL is given that list rather than spelling it again.
//!
//! A receipt may beat its submit response (the SMSC sends it before our side recorded the
//! message id): it waits in `unmatched_delivery_receipts` until the acceptance is recorded, which
//! matches it under the same lock ([`lock_message_ids`]): every form of a provider id is locked
//! in sorted order before any job row, by receipts and acceptances alike, so the two never miss
//! each other and never deadlock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::JobError;
use super::state::JobState;
use super::store::{apply_changes, column, lock_message_ids, lock_state};
use super::transitions::{JobChange, PartReceipt, receipt_change};
use crate::batch::{BATCH_WORKERS, BatchWrite, MAX_BATCH, write_in_batches};
use crate::connector::{DeliveryReceipt, ReceiptStatus};
use crate::metrics::{Announced, ReceiptMatch, metrics};

/// The receipt statuses after which a part's outcome is known for good, as stored: what the SQL
/// compares with, so that it and [`ReceiptStatus::is_final`] cannot disagree.
fn final_receipt_statuses() -> Vec<&'static str> {
    ReceiptStatus::ALL
        .into_iter()
        .filter(|status| status.is_final())
        .map(ReceiptStatus::as_str)
        .collect()
}

/// Records delivery receipts, a batch per transaction: an SMSC sends one per part, as fast as it
/// accepts submits, and waits for each answer.
struct RecordReceipts {
    pool: PgPool,
}

impl BatchWrite for RecordReceipts {
    type Item = DeliveryReceipt;
    type Answer = ();
    type Error = JobError;

    async fn write(&self, receipts: &[DeliveryReceipt]) -> Result<Vec<()>, JobError> {
        let mut tx = self.pool.begin().await?;
        // Every id of the batch is locked before any job row, in one sorted pass per connector.
        let mut connectors: Vec<&str> = receipts.iter().map(|r| r.connector.as_str()).collect();
        connectors.sort_unstable();
        connectors.dedup();
        for connector in connectors {
            let ids: Vec<&str> = receipts
                .iter()
                .filter(|r| r.connector == connector)
                .map(|r| r.provider_message_id.as_str())
                .collect();
            lock_message_ids(&mut tx, connector, &ids).await?;
        }
        let parts = find_parts(&mut tx, receipts).await?;
        let mut announced = Announced::default();
        let mut seen = HashSet::new();
        let repeats_a_part = parts
            .iter()
            .zip(receipts)
            .filter_map(|(part, receipt)| Some((receipt.connector.as_str(), part.as_deref()?)))
            .any(|key| !seen.insert(key));
        if repeats_a_part {
            // Two receipts for one part (say "enroute", then "delivered") apply in their order;
            // their jobs are locked first, in id order like every other batch locks them.
            let (connectors, matched): (Vec<&str>, Vec<&str>) = parts
                .iter()
                .zip(receipts)
                .filter_map(|(part, receipt)| Some((receipt.connector.as_str(), part.as_deref()?)))
                .unzip();
            sqlx::query(
                "SELECT job_id FROM sms_jobs
                 WHERE job_id IN (SELECT job_id FROM sms_job_parts
                                  WHERE (connector, provider_message_id) IN
                                        (SELECT * FROM UNNEST($1::text[], $2::text[])))
                 ORDER BY job_id FOR UPDATE",
            )
            .persistent(false)
            .bind(&connectors)
            .bind(&matched)
            .execute(&mut *tx)
            .await?;
            for (receipt, part) in receipts.iter().zip(&parts) {
                match part {
                    Some(part) => announced.add(apply_receipt(&mut tx, receipt, part).await?),
                    None => keep_unmatched(&mut tx, &[receipt]).await?,
                }
            }
        } else {
            announced = apply_receipts(&mut tx, receipts, &parts).await?;
        }
        tx.commit().await?;
        announced.committed();
        for (receipt, part) in receipts.iter().zip(&parts) {
            let result = match part {
                Some(_) => ReceiptMatch::Matched,
                None => ReceiptMatch::Unmatched,
            };
            metrics().receipt(result, &receipt.connector);
        }
        Ok(receipts.iter().map(|_| ()).collect())
    }
}

/// The recorded part each receipt is for (its id as given first, then under its other forms), if
/// any.
async fn find_parts(
    conn: &mut PgConnection,
    receipts: &[DeliveryReceipt],
) -> Result<Vec<Option<String>>, JobError> {
    let candidates: Vec<Vec<String>> = receipts
        .iter()
        .map(|r| {
            let given = crate::connector::receipt::normalise_message_id(&r.provider_message_id);
            let mut forms = r.id_forms.of(&given);
            forms.retain(|form| *form != given);
            forms.insert(0, given);
            forms
        })
        .collect();
    let mut known = HashSet::new();
    let mut connectors: Vec<&str> = receipts.iter().map(|r| r.connector.as_str()).collect();
    connectors.sort_unstable();
    connectors.dedup();
    for connector in connectors {
        let wanted: Vec<&str> = receipts
            .iter()
            .zip(&candidates)
            .filter(|(r, _)| r.connector == connector)
            .flat_map(|(_, c)| c.iter().map(String::as_str))
            .collect();
        let found: Vec<String> = sqlx::query_scalar(
            "SELECT provider_message_id FROM sms_job_parts
             WHERE connector = $1 AND provider_message_id = ANY($2)",
        )
        .persistent(false)
        .bind(connector)
        .bind(&wanted)
        .fetch_all(&mut *conn)
        .await?;
        known.extend(found.into_iter().map(|id| (connector.to_owned(), id)));
    }
    Ok(receipts
        .iter()
        .zip(candidates)
        .map(|(receipt, candidates)| {
            candidates
                .into_iter()
                .find(|c| known.contains(&(receipt.connector.clone(), c.clone())))
        })
        .collect())
}

/// Keeps receipts whose part is not recorded yet, until its submit response is.
async fn keep_unmatched(
    conn: &mut PgConnection,
    receipts: &[&DeliveryReceipt],
) -> Result<(), JobError> {
    if receipts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO unmatched_delivery_receipts
             (connector, provider_message_id, status, error_code, raw)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])",
    )
    .bind(column(receipts, |r| r.connector.as_str()))
    .bind(column(receipts, |r| r.provider_message_id.as_str()))
    .bind(column(receipts, |r| r.status.as_str()))
    .bind(column(receipts, |r| r.error_code.as_deref()))
    .bind(column(receipts, |r| r.raw.as_str()))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies receipts for distinct parts in a few statements however many there are: the parts, the
/// jobs every part of which now has a final receipt, and the receipts still waiting for their part.
async fn apply_receipts(
    conn: &mut PgConnection,
    receipts: &[DeliveryReceipt],
    parts: &[Option<String>],
) -> Result<Announced, JobError> {
    let unmatched: Vec<&DeliveryReceipt> = receipts
        .iter()
        .zip(parts)
        .filter(|(_, part)| part.is_none())
        .map(|(r, _)| r)
        .collect();
    keep_unmatched(conn, &unmatched).await?;
    let matched: Vec<(&DeliveryReceipt, &str)> = receipts
        .iter()
        .zip(parts)
        .filter_map(|(r, part)| Some((r, part.as_deref()?)))
        .collect();
    if matched.is_empty() {
        return Ok(Announced::default());
    }
    // A part whose receipt was final already keeps it (a duplicate receipt changes nothing).
    let updated: Vec<(Uuid, String, String)> = sqlx::query_as(
        "UPDATE sms_job_parts p
         SET receipt_status = r.status, receipt_error_code = r.error_code, receipt_at = now()
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
              AS r(connector, provider_message_id, status, error_code)
         WHERE p.connector = r.connector AND p.provider_message_id = r.provider_message_id
           AND (p.receipt_status IS NULL
                OR p.receipt_status <> ALL($5::text[]))
         RETURNING p.job_id, p.connector, p.provider_message_id",
    )
    .persistent(false)
    .bind(column(&matched, |(r, _)| r.connector.as_str()))
    .bind(column(&matched, |(_, part)| *part))
    .bind(column(&matched, |(r, _)| r.status.as_str()))
    .bind(column(&matched, |(r, _)| r.error_code.as_deref()))
    .bind(final_receipt_statuses())
    .fetch_all(&mut *conn)
    .await?;
    // The receipt that last touched each job speaks for it.
    let by_part: HashMap<(&str, &str), &DeliveryReceipt> = matched
        .iter()
        .map(|(r, part)| ((r.connector.as_str(), *part), *r))
        .collect();
    let mut last: BTreeMap<Uuid, &DeliveryReceipt> = Default::default();
    for (job_id, connector, part) in &updated {
        if let Some(receipt) = by_part.get(&(connector.as_str(), part.as_str())) {
            last.insert(*job_id, receipt);
        }
    }
    let job_ids: Vec<Uuid> = last.keys().copied().collect();
    let states: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT job_id, state FROM sms_jobs WHERE job_id = ANY($1) ORDER BY job_id FOR UPDATE",
    )
    .persistent(false)
    .bind(&job_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut statuses: HashMap<Uuid, Vec<PartReceipt>> = Default::default();
    let rows: Vec<(Uuid, i32, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT job_id, part_number, receipt_status, receipt_error_code FROM sms_job_parts
         WHERE job_id = ANY($1) ORDER BY job_id, part_number",
    )
    .persistent(false)
    .bind(&job_ids)
    .fetch_all(&mut *conn)
    .await?;
    for (job_id, part_number, status, error_code) in rows {
        statuses.entry(job_id).or_default().push(PartReceipt {
            part_number,
            status: status.as_deref().and_then(ReceiptStatus::from_db),
            error_code,
        });
    }
    let changes: Vec<JobChange> = states
        .into_iter()
        .filter_map(|(job_id, state)| {
            let from = JobState::parse(&state).unwrap_or(JobState::Submitted);
            receipt_change(
                job_id,
                from,
                statuses.get(&job_id)?,
                &last.get(&job_id)?.raw,
            )
        })
        .collect();
    apply_changes(conn, &changes).await
}

/// Applies one receipt to its recorded `part` (its id locked by the caller) and moves the job on
/// when that completes it.
pub(super) async fn apply_receipt(
    conn: &mut PgConnection,
    receipt: &DeliveryReceipt,
    part: &str,
) -> Result<Announced, JobError> {
    let job_id: Option<Uuid> = sqlx::query_scalar(
        "UPDATE sms_job_parts SET receipt_status = $3, receipt_error_code = $4, receipt_at = now()
         WHERE connector = $1 AND provider_message_id = $2
           AND (receipt_status IS NULL
                OR receipt_status <> ALL($5::text[]))
         RETURNING job_id",
    )
    .persistent(false)
    .bind(&receipt.connector)
    .bind(part)
    .bind(receipt.status.as_str())
    .bind(&receipt.error_code)
    .bind(final_receipt_statuses())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(job_id) = job_id else {
        // A duplicate receipt for a part already final: nothing changes.
        return Ok(Announced::default());
    };
    // The part's job exists (a foreign key says so).
    let from = lock_state(conn, job_id, JobState::Submitted)
        .await?
        .ok_or(JobError::Database(sqlx::Error::RowNotFound))?;
    let statuses: Vec<PartReceipt> = sqlx::query_as::<_, (i32, Option<String>, Option<String>)>(
        "SELECT part_number, receipt_status, receipt_error_code FROM sms_job_parts
         WHERE job_id = $1 ORDER BY part_number",
    )
    .persistent(false)
    .bind(job_id)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|(part_number, status, error_code)| PartReceipt {
        part_number,
        status: status.as_deref().and_then(ReceiptStatus::from_db),
        error_code,
    })
    .collect();
    match receipt_change(job_id, from, &statuses, &receipt.raw) {
        Some(change) => apply_changes(conn, &[change]).await,
        None => Ok(Announced::default()),
    }
}

/// Deletes receipts that never matched a part and are older than `older_than` (a receipt for a
/// message another system sent on the same account, or one whose job was never recorded).
pub async fn purge_unmatched_receipts(
    pool: &PgPool,
    older_than: std::time::Duration,
) -> Result<u64, JobError> {
    let seconds = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
    Ok(sqlx::query(
        "DELETE FROM unmatched_delivery_receipts
         WHERE received_at < now() - make_interval(secs => $1::double precision)",
    )
    .bind(seconds as f64)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Consumes receipts from the connectors and records them; answers each on its channel.
pub async fn run_receipt_recorder(
    pool: PgPool,
    mut receipts: tokio::sync::mpsc::Receiver<crate::connector::ReceiptDelivery>,
) {
    let writer = write_in_batches(RecordReceipts { pool });
    // Enough receipts in progress to fill every batch worker; the bounded channel behind it slows
    // the connector (and so the SMSC) down when the database falls behind.
    let in_progress = Arc::new(tokio::sync::Semaphore::new(MAX_BATCH * BATCH_WORKERS));
    while let Some(delivery) = receipts.recv().await {
        let Ok(permit) = in_progress.clone().acquire_owned().await else {
            return;
        };
        let writer = writer.clone();
        tokio::spawn(async move {
            let id = delivery.receipt.provider_message_id.clone();
            let recorded = match writer.call(delivery.receipt).await {
                Some(Ok(())) => true,
                Some(Err(error)) => {
                    tracing::warn!(%error, id, "cannot record a delivery receipt");
                    false
                }
                None => false,
            };
            let _ = delivery.recorded.send(recorded);
            drop(permit);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_keeps_a_parts_receipt_once_it_is_delivered_expired_deleted_undeliverable_rejected_or_skipped()
     {
        assert_eq!(
            final_receipt_statuses(),
            [
                "delivered",
                "expired",
                "deleted",
                "undeliverable",
                "rejected",
                "skipped"
            ]
        );
    }
}
