//! Connections kept out of their pool between statements, for the hot paths.
//!
//! sqlx pings a connection each time it goes back to its pool (and, unless told not to,
//! before handing it out): on SQLite a ping is a round trip to the connection's thread,
//! on PostgreSQL one to the server, as dear as a short read itself. A lane keeps a few
//! connections taken from the pool and lends them out, so a read costs its statement
//! alone. A connection whose use failed (other than the database refusing a statement)
//! or was abandoned half-way goes back to the pool, which checks it as usual.

use parking_lot::Mutex;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

/// A few connections of `pool`, lent one at a time.
pub(super) struct Lane<DB: Database> {
    pool: Pool<DB>,
    idle: Mutex<Vec<PoolConnection<DB>>>,
    /// The most connections kept idle in the lane (out of the pool).
    width: usize,
}

impl<DB: Database> Lane<DB> {
    pub(super) fn new(pool: Pool<DB>, width: usize) -> Lane<DB> {
        Lane { pool, idle: Mutex::new(Vec::with_capacity(width)), width }
    }

    /// An idle connection of the lane, or a fresh one from the pool when all are lent.
    pub(super) async fn get(&self) -> Result<Lent<'_, DB>, sqlx::Error> {
        let idle = self.idle.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(Lent { lane: self, conn: Some(conn), keep: false })
    }
}

impl<DB: Database> std::fmt::Debug for Lane<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").field("idle", &self.idle.lock().len()).field("width", &self.width).finish()
    }
}

/// A connection lent by a [`Lane`]. Say how its use ended with [`Lent::read`] or
/// [`Lent::wrote`]; dropped without that, it goes back to the pool.
pub(super) struct Lent<'a, DB: Database> {
    lane: &'a Lane<DB>,
    conn: Option<PoolConnection<DB>>,
    keep: bool,
}

impl<DB: Database> Lent<'_, DB> {
    /// The outcome of a read: the connection stays in the lane unless the read failed
    /// for another reason than the database refusing it.
    pub(super) fn read<T>(mut self, result: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
        self.keep = matches!(result, Ok(_) | Err(sqlx::Error::Database(_) | sqlx::Error::RowNotFound));
        result
    }

    /// The outcome of a write transaction: the connection stays in the lane only if it
    /// committed (a failed one may have left a rollback for the pool's ping to flush).
    #[cfg(feature = "postgres")]
    pub(super) fn wrote<T, E>(mut self, result: Result<T, E>) -> Result<T, E> {
        self.keep = result.is_ok();
        result
    }
}

impl<DB: Database> std::ops::Deref for Lent<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        // `conn` is only taken in `drop`.
        self.conn.as_deref().unwrap_or_else(|| unreachable!("a lent connection is present until dropped"))
    }
}

impl<DB: Database> std::ops::DerefMut for Lent<'_, DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.conn.as_deref_mut().unwrap_or_else(|| unreachable!("a lent connection is present until dropped"))
    }
}

impl<DB: Database> Drop for Lent<'_, DB> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if self.keep {
            let mut idle = self.lane.idle.lock();
            if idle.len() < self.lane.width {
                idle.push(conn);
                return;
            }
        }
        // Back to the pool (pinged there), or closed by it.
        drop(conn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::sqlite::SqlitePoolOptions;

    #[tokio::test]
    async fn a_connection_is_kept_after_a_read_and_returned_after_a_failure() {
        let pool = SqlitePoolOptions::new().max_connections(3).connect("sqlite::memory:").await.expect("sqlite");
        let lane = Lane::new(pool.clone(), 1);
        let mut conn = lane.get().await.expect("lent");
        let fetched = sqlx::query_scalar("SELECT 1").fetch_one(&mut *conn).await;
        let one: i64 = conn.read(fetched).expect("read");
        assert_eq!(one, 1);
        assert_eq!(lane.idle.lock().len(), 1, "kept after a read");
        let mut conn = lane.get().await.expect("lent");
        let refused = sqlx::query("SELECT * FROM nowhere").fetch_all(&mut *conn).await;
        assert!(conn.read(refused).is_err());
        assert_eq!(lane.idle.lock().len(), 1, "a refused statement keeps the connection");
        let conn = lane.get().await.expect("lent");
        let failed: Result<(), sqlx::Error> = conn.wrote(Err(sqlx::Error::PoolTimedOut));
        assert!(failed.is_err());
        assert!(lane.idle.lock().is_empty(), "a failed write returns it to the pool");
        // Abandoned half-way: back to the pool too.
        drop(lane.get().await.expect("lent"));
        assert!(lane.idle.lock().is_empty());
    }
}
