//! [`ConsumerStore`] on SQL Server: inbox, state, pins, overrides, a batch's commit.

use super::*;

#[async_trait]
impl ConsumerStore for MssqlStore {
    async fn handled(&self, consumer: &str, event_ids: &[String]) -> Result<HashSet<String>, StoreError> {
        if event_ids.is_empty() {
            return Ok(HashSet::new());
        }
        let found = rows(&mut *self.conn().await?, sql::SELECT_HANDLED, &[&consumer, &json_list(event_ids)]).await?;
        found.iter().map(|r| text(r, 0)).collect()
    }

    async fn state_get(&self, step: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_STATE, &[&step, &key]).await?;
        found
            .first()
            .map(|r| {
                let value = r.try_get::<&[u8], _>(0).map_err(query_error)?.unwrap_or_default().to_vec();
                Ok(Versioned { value, version: int(r, 1)? })
            })
            .transpose()
    }

    async fn commit_batch(&self, batch: &BatchCommit) -> Result<(), StoreError> {
        let now_ms = crate::event::now_ms();
        in_tx!(self, |conn| {
            let others = batch.also_handled.iter().map(|(c, e, v)| (c, e, v));
            for (consumer, event_id, version) in batch.inbox.iter().map(|(e, v)| (&batch.consumer, e, v)).chain(others)
            {
                if insert_guarded(conn, sql::INSERT_INBOX, &[consumer, event_id, version, &now_ms]).await? == 0 {
                    return Err(StoreError::Conflict(format!("{consumer} already handled {event_id}")));
                }
            }
            apply_state(conn, batch).await?;
            for event in &batch.outbox {
                insert_event(conn, event).await?;
            }
            for timer in &batch.timers {
                let e = &timer.event;
                let attempt = i64::from(e.attempt);
                let trace = or_empty(e.trace.as_deref());
                let params: [&dyn ToSql; 10] = [
                    &e.id,
                    &e.kind,
                    &e.order_id,
                    &e.payload,
                    &e.step,
                    &e.step_version,
                    &e.occurred_at_ms,
                    &attempt,
                    &trace,
                    &timer.delay_ms,
                ];
                exec(conn, sql::INSERT_TIMER, &params).await?;
            }
            for transition in &batch.transitions {
                apply_transition(conn, transition).await?;
            }
            for level in &batch.stock {
                upsert(
                    conn,
                    sql::UPSERT_STOCK,
                    &[&level.sku, &level.available, &level.reserved, &level.sold, &level.seq],
                )
                .await?;
            }
            for dead in &batch.dead_letters {
                exec(
                    conn,
                    sql::INSERT_DEAD_LETTER,
                    &[
                        &dead.id,
                        &dead.consumer,
                        &dead.event_id,
                        &dead.event,
                        &dead.error,
                        &dead.attempts,
                        &dead.dead_lettered_at_ms,
                        &or_empty(dead.recording.as_deref()),
                    ],
                )
                .await?;
            }
            for (order_id, digest) in &batch.pins {
                insert_guarded(conn, sql::INSERT_PIN, &[&batch.consumer, order_id, digest, &now_ms]).await?;
            }
            if !batch.overrides_used.is_empty() {
                exec(conn, sql::DELETE_OVERRIDES, &[&batch.consumer, &json_list(&batch.overrides_used)]).await?;
            }
            for r in &batch.recordings {
                exec(
                    conn,
                    sql::INSERT_RECORDING,
                    &[&r.id, &r.step, &r.event_id, &r.version, &r.outcome, &r.recorded_at_ms, &r.recording],
                )
                .await?;
            }
            if !batch.settled.is_empty() {
                exec(conn, sql::DELETE_DELIVERIES, &[&json_list(&batch.settled)]).await?;
            }
            Ok(())
        })
    }

    async fn pins(&self, step: &str, order_ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
        if order_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let found = rows(&mut *self.conn().await?, sql::SELECT_PINS, &[&step, &json_list(order_ids)]).await?;
        found.iter().map(|r| Ok((text(r, 0)?, text(r, 1)?))).collect()
    }

    async fn overrides(&self, consumer: &str, event_ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
        if event_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let found = rows(&mut *self.conn().await?, sql::SELECT_OVERRIDES, &[&consumer, &json_list(event_ids)]).await?;
        found.iter().map(|r| Ok((text(r, 0)?, text(r, 1)?))).collect()
    }

    async fn set_override(&self, consumer: &str, event_id: &str, digest: &str) -> Result<(), StoreError> {
        upsert(&mut *self.conn().await?, sql::SET_OVERRIDE, &[&consumer, &event_id, &digest]).await
    }

    async fn recordings(&self, step: &str, limit: u32) -> Result<Vec<RecordingRow>, StoreError> {
        let limit = i64::from(limit);
        let found = rows(&mut *self.conn().await?, sql::SELECT_RECORDINGS, &[&step, &limit]).await?;
        all(&found)
    }
}

/// Step state with optimistic concurrency. A key the batch read and writes is written
/// only if it still has the version read (checked in the statement itself); a key it saw
/// absent is inserted only if still absent; a key it read and does not write, present or
/// absent, is checked under update locks held to the commit (`HOLDLOCK`: for an absent key,
/// a lock on its range, so a batch creating it meanwhile waits, and one that created it
/// first is seen).
async fn apply_state(conn: &mut Connection, batch: &BatchCommit) -> Result<(), StoreError> {
    let step = &batch.consumer;
    let seen: std::collections::BTreeMap<&str, Option<i64>> =
        batch.state_reads.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let written: HashSet<&str> = batch.state.iter().map(|(k, _)| k.as_str()).collect();
    let read_only: Vec<&str> = seen.iter().filter(|(k, _)| !written.contains(**k)).map(|(k, _)| *k).collect();
    if !read_only.is_empty() {
        let found = rows(conn, sql::LOCK_STATE_VERSIONS, &[step, &json_list(&read_only)]).await?;
        let mut versions = std::collections::BTreeMap::new();
        for row in &found {
            versions.insert(text(row, 0)?, int(row, 1)?);
        }
        for key in &read_only {
            if versions.get(*key).copied() != seen.get(key).copied().flatten() {
                return Err(StoreError::Conflict(format!("state key {key:?} of {step} changed")));
            }
        }
    }
    let version: i64 = rand::random::<i64>() & i64::MAX;
    let changed = |key: &str| StoreError::Conflict(format!("state key {key:?} of {step} changed"));
    for (key, value) in &batch.state {
        match (value, seen.get(key.as_str()).copied()) {
            (Some(value), Some(None)) => {
                if insert_guarded(conn, sql::INSERT_STATE_IF_ABSENT, &[step, key, &value.as_slice(), &version]).await?
                    == 0
                {
                    return Err(StoreError::Conflict(format!("state key {key:?} of {step} was created meanwhile")));
                }
            }
            (Some(value), Some(Some(seen))) => {
                let params: [&dyn ToSql; 5] = [step, key, &value.as_slice(), &version, &seen];
                if exec(conn, sql::UPDATE_STATE_IF_VERSION, &params).await? != 1 {
                    return Err(changed(key));
                }
            }
            (Some(value), None) => upsert(conn, sql::UPSERT_STATE, &[step, key, &value.as_slice(), &version]).await?,
            (None, Some(Some(seen))) => {
                if exec(conn, sql::DELETE_STATE_IF_VERSION, &[step, key, &seen]).await? != 1 {
                    return Err(changed(key));
                }
            }
            (None, _) => {
                exec(conn, sql::DELETE_STATE, &[step, key]).await?;
            }
        }
    }
    Ok(())
}
