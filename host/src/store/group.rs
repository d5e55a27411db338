//! Group commit for SQLite's single writer. Write transactions that arrive while one is
//! committing run together in the next transaction, each inside a savepoint of its own,
//! so a burst of small transactions (a consumer's batch, a relay round, a claim, an
//! order placed) costs one commit and one WAL sync instead of one each, and pages they
//! share are written once. Alone, a transaction runs at once: grouping adds no wait.
//!
//! Each transaction keeps its own outcome: one that fails rolls back to its savepoint
//! and returns its error; the others commit. A commit that fails fails them all, and
//! none of them happened.
//!
//! Savepoints cost two statements per transaction, and almost every transaction
//! succeeds: a group first runs without them, and only when one of its transactions
//! fails is the whole group rolled back and run again, each in a savepoint. A work is
//! therefore a function of the connection that may run twice.

use super::StoreError;
use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Acquire, Pool, Sqlite, SqliteConnection};
use std::any::Any;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The most transactions one commit carries.
const MAX_GROUP: usize = 256;

type Outcome = Result<Box<dyn Any + Send>, StoreError>;
type Work = Box<dyn for<'c> Fn(&'c mut SqliteConnection) -> BoxFuture<'c, Outcome> + Send + Sync>;
type Job = (Work, oneshot::Sender<Outcome>);

/// Sends write transactions to the task that owns the writer connection's commits.
#[derive(Debug, Clone)]
pub struct GroupWriter {
    jobs: mpsc::UnboundedSender<Job>,
}

/// Called after any rollback, of a whole group or of one of its transactions.
type OnRollback = Arc<dyn Fn() + Send + Sync>;

impl GroupWriter {
    /// Start committing for `pool` (the writer pool of one connection), calling
    /// `rolled_back` after any rollback (what was read in the transaction may no longer
    /// hold). The task ends when the last `GroupWriter` is dropped.
    pub fn start(pool: Pool<Sqlite>, rolled_back: impl Fn() + Send + Sync + 'static) -> GroupWriter {
        let (jobs, queue) = mpsc::unbounded_channel();
        tokio::spawn(run(pool, queue, Arc::new(rolled_back)));
        GroupWriter { jobs }
    }

    /// Run `work` in a write transaction (possibly shared with others) and return its
    /// result once that transaction committed. `work` may run twice (the first run
    /// rolled back), so it must not change anything but the database.
    pub async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send + Sync + 'static,
    {
        let work: Work = Box::new(move |conn| {
            let run = work(conn);
            Box::pin(async move { run.await.map(|value| Box::new(value) as Box<dyn Any + Send>) })
        });
        let (done, outcome) = oneshot::channel();
        self.jobs.send((work, done)).map_err(|_| closed())?;
        let value = outcome.await.map_err(|_| closed())??;
        value
            .downcast::<T>()
            .map(|value| *value)
            .map_err(|_| StoreError::Query("a write returned the wrong type".into()))
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("the SQLite writer has stopped".into())
}

/// Groups in a row that keep the writer connection. Handing it back to the pool costs a
/// ping (a round trip to its thread); the store's other writes wait in the pool meanwhile,
/// so it goes back when no group waits, or after this many.
const KEEP_FOR: usize = 16;

async fn run(pool: Pool<Sqlite>, mut queue: mpsc::UnboundedReceiver<Job>, rolled_back: OnRollback) {
    let mut held: Option<PoolConnection<Sqlite>> = None;
    let mut kept = 0;
    loop {
        let first = match queue.try_recv() {
            Ok(job) => job,
            Err(_) => {
                held = None;
                match queue.recv().await {
                    Some(job) => job,
                    None => break,
                }
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("wasaga_sqlite_group_size").record(group.len() as f64);
        let (works, senders): (Vec<Work>, Vec<oneshot::Sender<Outcome>>) = group.into_iter().unzip();
        let conn = match held.take() {
            Some(conn) => Ok(conn),
            None => {
                kept = 0;
                pool.acquire().await.map_err(StoreError::from)
            }
        };
        let committed = match conn {
            Ok(mut conn) => {
                let committed = commit(&mut conn, works, &rolled_back).await;
                if committed.is_ok() && kept < KEEP_FOR {
                    kept += 1;
                    held = Some(conn);
                }
                committed
            }
            Err(error) => Err(error),
        };
        match committed {
            Ok(outcomes) => {
                for (sender, outcome) in senders.into_iter().zip(outcomes) {
                    let _ = sender.send(outcome);
                }
            }
            Err(error) => {
                for sender in senders {
                    let _ = sender.send(Err(error.clone()));
                }
            }
        }
    }
}

/// One transaction for `works`: together, or each in a savepoint once one failed.
///
/// A work's own failure is its outcome. A failure of the transaction's own statements
/// (begin, savepoint, rollback, commit) fails the whole group as an outage: SQLite may
/// have rolled the whole transaction back (a full disk, an I/O error), and the
/// connection is closed rather than reused with a transaction state sqlx no longer knows.
async fn commit(
    conn: &mut PoolConnection<Sqlite>,
    works: Vec<Work>,
    rolled_back: &OnRollback,
) -> Result<Vec<Outcome>, StoreError> {
    let result = if works.len() > 1 {
        match together(conn, &works).await {
            Ok(Some(outcomes)) => Ok(outcomes),
            Ok(None) => {
                rolled_back();
                run_group(conn, works).await
            }
            Err(error) => Err(error),
        }
    } else {
        run_group(conn, works).await
    };
    // A group that failed, or a transaction of it that failed alone, was rolled back.
    if !result.as_ref().is_ok_and(|outcomes| outcomes.iter().all(Result::is_ok)) {
        rolled_back();
    }
    if result.is_err() {
        conn.close_on_drop();
    }
    result
}

fn control(what: &str, error: sqlx::Error, cause: Option<&StoreError>) -> StoreError {
    let cause = cause.map(|c| format!(" (after: {c})")).unwrap_or_default();
    StoreError::Unavailable(format!("SQLite {what} failed: {error}{cause}"))
}

/// Run `works` in one transaction without savepoints. `None` when one of them failed:
/// the transaction is rolled back, and the group runs again with savepoints.
async fn together(conn: &mut SqliteConnection, works: &[Work]) -> Result<Option<Vec<Outcome>>, StoreError> {
    let mut tx = conn.begin().await.map_err(|e| control("begin", e, None))?;
    let mut outcomes = Vec::with_capacity(works.len());
    for work in works {
        let outcome = guarded(work(&mut tx)).await;
        if let Err(error) = &outcome {
            tx.rollback().await.map_err(|e| control("rollback", e, Some(error)))?;
            metrics::counter!("wasaga_sqlite_group_reruns_total").increment(1);
            return Ok(None);
        }
        outcomes.push(outcome);
    }
    tx.commit().await.map_err(|e| control("commit", e, None))?;
    Ok(Some(outcomes))
}

/// Run `works` in one transaction, each in a savepoint when there are several.
async fn run_group(conn: &mut SqliteConnection, works: Vec<Work>) -> Result<Vec<Outcome>, StoreError> {
    let mut tx = conn.begin().await.map_err(|e| control("begin", e, None))?;
    let mut outcomes = Vec::with_capacity(works.len());
    let single = works.len() == 1;
    for work in works {
        if single {
            let outcome = guarded(work(&mut tx)).await;
            if let Err(error) = &outcome {
                tx.rollback().await.map_err(|e| control("rollback", e, Some(error)))?;
                return Ok(vec![outcome]);
            }
            outcomes.push(outcome);
            continue;
        }
        let mut savepoint = tx.begin().await.map_err(|e| control("savepoint", e, None))?;
        let outcome = guarded(work(&mut savepoint)).await;
        match &outcome {
            Ok(_) => savepoint.commit().await.map_err(|e| control("release", e, None))?,
            Err(error) => savepoint.rollback().await.map_err(|e| control("rollback to savepoint", e, Some(error)))?,
        }
        outcomes.push(outcome);
    }
    tx.commit().await.map_err(|e| control("commit", e, None))?;
    Ok(outcomes)
}

/// A work that panics fails alone instead of stopping the writer.
async fn guarded(work: BoxFuture<'_, Outcome>) -> Outcome {
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(StoreError::Query("a store write panicked".into())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqlitePoolOptions;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_write_keeps_its_own_outcome_in_a_shared_commit() {
        let pool = SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.expect("sqlite");
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY)").execute(&pool).await.expect("table");
        let writer = GroupWriter::start(pool.clone(), || ());
        let writes = (0..60).map(|k: i64| {
            let writer = writer.clone();
            tokio::spawn(async move {
                writer
                    .write(move |conn| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO t (k) VALUES ($1)").bind(k).execute(&mut *conn).await?;
                            // Every fifth write fails after its insert: only its insert is undone.
                            if k % 5 == 0 {
                                return Err(StoreError::Conflict(format!("{k}")));
                            }
                            Ok(k * 10)
                        })
                    })
                    .await
            })
        });
        let outcomes = futures::future::join_all(writes).await;
        for (k, outcome) in (0..60).zip(outcomes) {
            match outcome.expect("task") {
                Ok(value) => assert!(k % 5 != 0 && value == k * 10, "{k}: {value}"),
                Err(StoreError::Conflict(which)) => assert!(k % 5 == 0 && which == k.to_string()),
                Err(other) => panic!("{k}: {other}"),
            }
        }
        let kept: Vec<i64> = sqlx::query_scalar("SELECT k FROM t ORDER BY k").fetch_all(&pool).await.expect("rows");
        assert_eq!(kept, (0..60).filter(|k| k % 5 != 0).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn only_a_rollback_is_reported() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let pool = SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await.expect("sqlite");
        sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY)").execute(&pool).await.expect("table");
        let rollbacks = Arc::new(AtomicUsize::new(0));
        let counted = rollbacks.clone();
        let writer = GroupWriter::start(pool.clone(), move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let insert = |k: i64| {
            let writer = writer.clone();
            async move {
                writer
                    .write(move |conn| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO t (k) VALUES ($1)").bind(k).execute(&mut *conn).await?;
                            Ok(())
                        })
                    })
                    .await
            }
        };
        insert(1).await.expect("alone");
        futures::future::join_all((2..40).map(insert)).await.into_iter().for_each(|r| r.expect("together"));
        assert_eq!(rollbacks.load(Ordering::SeqCst), 0, "nothing failed, nothing rolled back");
        // A duplicate key fails its write: rolled back, and said so.
        assert!(insert(1).await.is_err());
        assert!(rollbacks.load(Ordering::SeqCst) >= 1);
    }
}
