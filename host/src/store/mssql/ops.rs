//! The [`Store`] operations on SQL Server.

use super::*;

#[async_trait]
impl Store for MssqlStore {
    fn backend(&self) -> &'static str {
        "mssql"
    }

    async fn create_order(
        &self,
        order: &NewOrder,
        idempotency: Option<(&str, &str)>,
        placed: &StoredEvent,
        // Never given: this store does not queue with a commit (`queues_with_commit`).
        _queued: Option<&[Queued]>,
    ) -> Result<Created, StoreError> {
        in_tx!(self, |conn| {
            if let Some((key, hash)) = idempotency {
                let inserted =
                    insert_guarded(conn, sql::INSERT_IDEMPOTENCY, &[&key, &hash, &order.id, &order.created_at_ms])
                        .await?;
                if inserted == 0 {
                    let found = rows(conn, sql::SELECT_IDEMPOTENCY, &[&key]).await?;
                    let row = found.first().ok_or_else(|| StoreError::Query("idempotency key vanished".into()))?;
                    return Ok(Created::Existing { order_id: text(row, 0)?, body_hash: text(row, 1)? });
                }
            }
            exec(
                conn,
                sql::INSERT_ORDER,
                &[&order.id, &order.customer_id, &order.total_cents, &order.items, &order.created_at_ms],
            )
            .await?;
            insert_event(conn, placed).await?;
            Ok(Created::New)
        })
    }

    async fn order(&self, id: &str) -> Result<Option<OrderRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_ORDER, &[&id]).await?;
        found.first().map(order_row).transpose()
    }

    async fn orders(
        &self,
        status: Option<&str>,
        limit: u32,
        before_seq: Option<i64>,
    ) -> Result<Vec<OrderRow>, StoreError> {
        let limit = i64::from(limit);
        let status = or_empty(status);
        let found = rows(&mut *self.conn().await?, sql::SELECT_ORDERS, &[&limit, &status, &before_seq]).await?;
        found.iter().map(order_row).collect()
    }

    async fn timeline(&self, order_id: &str) -> Result<Vec<TimelineRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_TIMELINE, &[&order_id]).await?;
        found
            .iter()
            .map(|r| {
                Ok(TimelineRow {
                    event_id: text(r, 0)?,
                    kind: text(r, 1)?,
                    at_ms: int(r, 2)?,
                    step: text(r, 3)?,
                    step_version: text(r, 4)?,
                    attempt: opt_int(r, 5)?,
                })
            })
            .collect()
    }

    async fn transition(&self, transition: &OrderTransition) -> Result<bool, StoreError> {
        in_tx!(self, |conn| { apply_transition(conn, transition).await })
    }

    async fn emit(&self, event: &StoredEvent) -> Result<(), StoreError> {
        insert_event(&mut *self.conn().await?, event).await
    }

    async fn stock(&self, sku: &str) -> Result<Option<StockRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_STOCK, &[&sku]).await?;
        found
            .first()
            .map(|r| {
                Ok(StockRow {
                    sku: text(r, 0)?,
                    available: int(r, 1)?,
                    reserved: int(r, 2)?,
                    sold: int(r, 3)?,
                    seq: int(r, 4)?,
                })
            })
            .transpose()
    }

    async fn unrelayed(&self, channel: Channel, limit: u32) -> Result<Vec<(i64, StoredEvent)>, StoreError> {
        let limit = i64::from(limit);
        let statement = match channel {
            Channel::Transport => sql::SELECT_UNRELAYED,
            Channel::Stream => sql::SELECT_UNSTREAMED,
        };
        let found = rows(&mut *self.conn().await?, statement, &[&limit]).await?;
        found
            .iter()
            .map(|r| {
                Ok((
                    int(r, 0)?,
                    StoredEvent {
                        id: text(r, 1)?,
                        kind: text(r, 2)?,
                        order_id: text(r, 3)?,
                        payload: text(r, 4)?,
                        step: text(r, 5)?,
                        step_version: text(r, 6)?,
                        occurred_at_ms: int(r, 7)?,
                        attempt: u32::try_from(opt_int(r, 8)?.unwrap_or(1)).unwrap_or(1),
                        trace: opt_text(r, 9)?,
                    },
                ))
            })
            .collect()
    }

    async fn mark_relayed(&self, channel: Channel, seqs: &[i64], now_ms: i64) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        exec(&mut *self.conn().await?, mark_statement(channel), &[&now_ms, &json_list(seqs)]).await.map(|_| ())
    }

    async fn outbox_lag(&self, channel: Channel) -> Result<OutboxLag, StoreError> {
        let statement = match channel {
            Channel::Transport => sql::OUTBOX_LAG,
            Channel::Stream => sql::STREAM_LAG,
        };
        let found = rows(&mut *self.conn().await?, statement, &[]).await?;
        let row = found.first().ok_or_else(|| StoreError::Query("no row".into()))?;
        Ok(OutboxLag { pending: int(row, 0)?, oldest_at_ms: opt_int(row, 1)? })
    }

    async fn enqueue(
        &self,
        deliveries: &[(String, String, String)],
        now_ms: i64,
        relayed: Option<(Channel, &[i64])>,
    ) -> Result<(), StoreError> {
        if deliveries.is_empty() && relayed.is_none_or(|(_, seqs)| seqs.is_empty()) {
            return Ok(());
        }
        in_tx!(self, |conn| {
            for (consumer, event_id, event) in deliveries {
                insert_guarded(conn, sql::ENQUEUE, &[consumer, event_id, event, &now_ms]).await?;
            }
            if let Some((channel, seqs)) = relayed
                && !seqs.is_empty()
            {
                exec(conn, mark_statement(channel), &[&now_ms, &json_list(seqs)]).await?;
            }
            Ok(())
        })
    }

    async fn set_subscriptions(&self, consumer: &str, patterns: &[String]) -> Result<(), StoreError> {
        in_tx!(self, |conn| {
            exec(conn, sql::DELETE_SUBSCRIPTIONS, &[&consumer]).await?;
            for pattern in patterns {
                insert_guarded(conn, sql::INSERT_SUBSCRIPTION, &[&consumer, pattern]).await?;
            }
            Ok(())
        })
    }

    async fn subscriptions(&self) -> Result<Vec<(String, String)>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_SUBSCRIPTIONS, &[]).await?;
        found.iter().map(|r| Ok((text(r, 0)?, text(r, 1)?))).collect()
    }

    async fn claim(
        &self,
        consumer: &str,
        holder: &str,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let limit = i64::from(limit);
        let found =
            rows(&mut *self.conn().await?, sql::CLAIM, &[&consumer, &holder, &lease_ms, &now_ms, &limit]).await?;
        let mut claimed = found
            .iter()
            .map(|r| {
                Ok(DeliveryRow {
                    id: int(r, 0)?,
                    consumer: text(r, 1)?,
                    event_id: text(r, 2)?,
                    event: text(r, 3)?,
                    attempts: int(r, 4)?,
                    due_at_ms: int(r, 5)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by_key(|d| (d.due_at_ms, d.id));
        Ok(claimed)
    }

    async fn release_claims(&self, holder: &str) -> Result<(), StoreError> {
        exec(&mut *self.conn().await?, sql::RELEASE_CLAIMS, &[&holder]).await.map(|_| ())
    }

    async fn renew_claims(&self, holder: &str, lease_ms: i64) -> Result<(), StoreError> {
        exec(&mut *self.conn().await?, sql::RENEW_CLAIMS, &[&holder, &lease_ms]).await.map(|_| ())
    }

    async fn next_due_at(&self, consumer: &str) -> Result<Option<i64>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::NEXT_DUE, &[&consumer]).await?;
        found.first().map(|r| opt_int(r, 0)).transpose().map(Option::flatten)
    }

    async fn settle(
        &self,
        holder: &str,
        acked: &[i64],
        retries: &[(i64, i64, String, bool)],
    ) -> Result<(), StoreError> {
        if acked.is_empty() && retries.is_empty() {
            return Ok(());
        }
        in_tx!(self, |conn| {
            if !acked.is_empty() {
                exec(conn, sql::SETTLE_DELIVERIES, &[&json_list(acked), &holder]).await?;
            }
            for (id, due_at_ms, error, counted) in retries {
                let step = i64::from(*counted);
                exec(conn, sql::RETRY_DELIVERY, &[&step, due_at_ms, error, id, &holder]).await?;
            }
            Ok(())
        })
    }

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
            for (event_id, version) in &batch.inbox {
                if insert_guarded(conn, sql::INSERT_INBOX, &[&batch.consumer, event_id, version, &now_ms]).await? == 0 {
                    return Err(StoreError::Conflict(format!("{} already handled {event_id}", batch.consumer)));
                }
            }
            apply_state(conn, batch).await?;
            for event in &batch.outbox {
                insert_event(conn, event).await?;
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

    async fn dead_letters(&self) -> Result<Vec<DeadLetterRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_DEAD_LETTERS, &[]).await?;
        found.iter().map(dead_letter_row).collect()
    }

    async fn take_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::TAKE_DEAD_LETTER, &[&id]).await?;
        found.first().map(dead_letter_row).transpose()
    }

    async fn reopen_dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
        in_tx!(self, |conn| {
            let found = rows(conn, sql::SELECT_DEAD_LETTER, &[&id]).await?;
            let Some(row) = found.first().map(dead_letter_row).transpose()? else {
                return Ok(None);
            };
            exec(conn, sql::UNMARK_DEAD_LETTERED, &[&row.consumer, &row.event_id]).await?;
            Ok(Some(row))
        })
    }

    async fn requeue(&self, consumer: &str, event_id: &str, event: &str, now_ms: i64) -> Result<(), StoreError> {
        upsert(&mut *self.conn().await?, sql::REQUEUE, &[&consumer, &event_id, &event, &now_ms]).await
    }

    async fn order_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::ORDER_COUNTS, &[]).await?;
        found.iter().map(|r| Ok((text(r, 0)?, int(r, 1)?))).collect()
    }

    async fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        if exec(&mut conn, sql::RENEW_LEASE, &[&name, &holder, &ttl_ms]).await? == 1 {
            return Ok(true);
        }
        Ok(insert_guarded(&mut conn, sql::INSERT_LEASE, &[&name, &holder, &ttl_ms]).await? == 1)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        exec(&mut *self.conn().await?, sql::RELEASE_LEASE, &[&name, &holder]).await.map(|_| ())
    }

    async fn stalled_orders(
        &self,
        now_ms: i64,
        stall_ms: i64,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<CheckedOrder>, StoreError> {
        let limit = i64::from(limit);
        let args: [&dyn tiberius::ToSql; 4] = [&now_ms, &stall_ms, &limit, &since_ms];
        let found = rows(&mut *self.conn().await?, sql::STALLED_ORDERS, &args).await?;
        found
            .iter()
            .map(|r| Ok(CheckedOrder { id: text(r, 0)?, status: text(r, 1)?, updated_at_ms: int(r, 2)? }))
            .collect()
    }

    async fn events_of(&self, order_ids: &[String], since_ms: i64) -> Result<Vec<StoredEvent>, StoreError> {
        if order_ids.is_empty() {
            return Ok(Vec::new());
        }
        let found = rows(&mut *self.conn().await?, sql::EVENTS_OF_ORDERS, &[&json_list(order_ids), &since_ms]).await?;
        found
            .iter()
            .map(|r| {
                Ok(StoredEvent {
                    id: text(r, 0)?,
                    kind: text(r, 1)?,
                    order_id: text(r, 2)?,
                    payload: text(r, 3)?,
                    step: text(r, 4)?,
                    step_version: text(r, 5)?,
                    occurred_at_ms: int(r, 6)?,
                    attempt: u32::try_from(opt_int(r, 7)?.unwrap_or(1)).unwrap_or(1),
                    trace: opt_text(r, 8)?,
                })
            })
            .collect()
    }

    async fn mark_checked(&self, orders: &[CheckedOrder]) -> Result<(), StoreError> {
        if orders.is_empty() {
            return Ok(());
        }
        let list: Vec<serde_json::Value> =
            orders.iter().map(|o| serde_json::json!({ "id": o.id, "updated_at_ms": o.updated_at_ms })).collect();
        let list = serde_json::Value::Array(list).to_string();
        exec(&mut *self.conn().await?, sql::MARK_CHECKED, &[&list]).await.map(|_| ())
    }

    async fn prune(&self, cutoffs: &Cutoffs, limit: u32) -> Result<Pruned, StoreError> {
        let limit = i64::from(limit);
        let stream = i32::from(cutoffs.stream);
        let mut conn = self.conn().await?;
        exec(&mut conn, sql::PRUNE_PINS, &[&cutoffs.pins_before_ms, &limit]).await?;
        exec(&mut conn, sql::PRUNE_RECORDINGS, &[&cutoffs.pins_before_ms, &limit]).await?;
        let mut step_state = 0;
        for (step, prefix) in &cutoffs.order_state {
            let start = i64::try_from(prefix.chars().count()).unwrap_or(i64::MAX - 1) + 1;
            let pattern = crate::store::like_prefix(prefix);
            step_state +=
                exec(&mut conn, sql::PRUNE_ORDER_STATE, &[step, &pattern, &cutoffs.finished_before_ms, &limit, &start])
                    .await?;
        }
        let plugin_versions = match cutoffs.versions_before_ms {
            Some(before) => exec(&mut conn, sql::PRUNE_VERSIONS, &[&before, &limit]).await?,
            None => 0,
        };
        let hosts = exec(&mut conn, sql::PRUNE_HOSTS, &[&cutoffs.hosts_before_ms]).await?;
        exec(&mut conn, sql::PRUNE_LEASES, &[&cutoffs.hosts_before_ms]).await?;
        Ok(Pruned {
            inbox: exec(&mut conn, sql::PRUNE_INBOX, &[&cutoffs.inbox_before_ms, &limit]).await?,
            outbox: exec(&mut conn, sql::PRUNE_OUTBOX, &[&cutoffs.outbox_before_ms, &limit, &stream]).await?,
            idempotency_keys: exec(&mut conn, sql::PRUNE_IDEMPOTENCY, &[&cutoffs.idempotency_before_ms, &limit])
                .await?,
            step_state,
            plugin_versions,
            hosts,
        })
    }

    async fn put_version(&self, version: &VersionRow) -> Result<(), StoreError> {
        let subscribes = json_list(&version.subscribes);
        insert_guarded(
            &mut *self.conn().await?,
            sql::INSERT_VERSION,
            &[
                &version.digest,
                &version.name,
                &version.version,
                &subscribes,
                &version.bytes.as_slice(),
                &version.created_at_ms,
            ],
        )
        .await
        .map(|_| ())
    }

    async fn version(&self, digest: &str) -> Result<Option<VersionRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_VERSION, &[&digest]).await?;
        found
            .first()
            .map(|r| {
                Ok(VersionRow {
                    digest: text(r, 0)?,
                    name: text(r, 1)?,
                    version: text(r, 2)?,
                    subscribes: serde_json::from_str(&text(r, 3)?).unwrap_or_default(),
                    bytes: r.try_get::<&[u8], _>(4).map_err(query_error)?.unwrap_or_default().to_vec(),
                    created_at_ms: int(r, 5)?,
                })
            })
            .transpose()
    }

    async fn version_digests(&self, name: &str) -> Result<Vec<String>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_VERSION_DIGESTS, &[&name]).await?;
        found.iter().map(|r| text(r, 0)).collect()
    }

    async fn slots(&self) -> Result<Vec<SlotRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_SLOTS, &[]).await?;
        found
            .iter()
            .map(|r| {
                let rollout = match (opt_text(r, 5)?, opt_text(r, 6)?) {
                    (Some(mode), Some(digest)) => Some(RolloutRow {
                        mode,
                        digest,
                        percent: opt_int(r, 7)?.unwrap_or(0),
                        started_at_ms: opt_int(r, 8)?.unwrap_or(0),
                    }),
                    _ => None,
                };
                Ok(SlotRow {
                    name: text(r, 0)?,
                    current: text(r, 1)?,
                    previous: opt_text(r, 2)?,
                    generation: int(r, 3)?,
                    updated_at_ms: int(r, 4)?,
                    rollout,
                })
            })
            .collect()
    }

    async fn set_slot(&self, slot: &SlotRow, expected: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn().await?;
        let rollout = slot.rollout.as_ref();
        let (mode, digest) = (or_empty(rollout.map(|r| r.mode.as_str())), or_empty(rollout.map(|r| r.digest.as_str())));
        let (percent, started) = (rollout.map(|r| r.percent), rollout.map(|r| r.started_at_ms));
        let previous = or_empty(slot.previous.as_deref());
        let changed = if expected == 0 {
            insert_guarded(
                &mut conn,
                sql::INSERT_SLOT,
                &[
                    &slot.name,
                    &slot.current,
                    &previous,
                    &slot.generation,
                    &slot.updated_at_ms,
                    &mode,
                    &digest,
                    &percent,
                    &started,
                ],
            )
            .await?
        } else {
            exec(
                &mut conn,
                sql::UPDATE_SLOT,
                &[
                    &slot.name,
                    &slot.current,
                    &previous,
                    &slot.generation,
                    &slot.updated_at_ms,
                    &mode,
                    &digest,
                    &percent,
                    &started,
                    &expected,
                ],
            )
            .await?
        };
        Ok(changed == 1)
    }

    async fn add_history(&self, entry: &HistoryRow) -> Result<(), StoreError> {
        exec(
            &mut *self.conn().await?,
            sql::INSERT_HISTORY,
            &[&entry.name, &entry.action, &entry.digest, &entry.reason, &entry.host_id, &entry.at_ms],
        )
        .await
        .map(|_| ())
    }

    async fn history(&self, name: &str, limit: u32) -> Result<Vec<HistoryRow>, StoreError> {
        let limit = i64::from(limit);
        let found = rows(&mut *self.conn().await?, sql::SELECT_HISTORY, &[&name, &limit]).await?;
        found
            .iter()
            .map(|r| {
                Ok(HistoryRow {
                    name: text(r, 0)?,
                    action: text(r, 1)?,
                    digest: text(r, 2)?,
                    reason: text(r, 3)?,
                    host_id: text(r, 4)?,
                    at_ms: int(r, 5)?,
                })
            })
            .collect()
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

    async fn dead_letter_recording(&self, id: &str) -> Result<Option<String>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_DEAD_LETTER_RECORDING, &[&id]).await?;
        Ok(found.first().map(|r| opt_text(r, 0)).transpose()?.flatten())
    }

    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetterRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_DEAD_LETTER, &[&id]).await?;
        found.first().map(dead_letter_row).transpose()
    }

    async fn recordings(&self, step: &str, limit: u32) -> Result<Vec<RecordingRow>, StoreError> {
        let limit = i64::from(limit);
        let found = rows(&mut *self.conn().await?, sql::SELECT_RECORDINGS, &[&step, &limit]).await?;
        found
            .iter()
            .map(|r| {
                Ok(RecordingRow {
                    id: text(r, 0)?,
                    step: text(r, 1)?,
                    event_id: text(r, 2)?,
                    version: text(r, 3)?,
                    outcome: text(r, 4)?,
                    recorded_at_ms: int(r, 5)?,
                    recording: text(r, 6)?,
                })
            })
            .collect()
    }

    async fn heartbeat(&self, host: &HostRow) -> Result<(), StoreError> {
        upsert(
            &mut *self.conn().await?,
            sql::HEARTBEAT,
            &[&host.host_id, &host.http_addr, &host.started_at_ms, &host.seen_at_ms, &host.steps],
        )
        .await
    }

    async fn hosts(&self, seen_after_ms: i64) -> Result<Vec<HostRow>, StoreError> {
        let found = rows(&mut *self.conn().await?, sql::SELECT_HOSTS, &[&seen_after_ms]).await?;
        found
            .iter()
            .map(|r| {
                Ok(HostRow {
                    host_id: text(r, 0)?,
                    http_addr: text(r, 1)?,
                    started_at_ms: int(r, 2)?,
                    seen_at_ms: int(r, 3)?,
                    steps: text(r, 4)?,
                })
            })
            .collect()
    }

    async fn remove_host(&self, host_id: &str) -> Result<(), StoreError> {
        exec(&mut *self.conn().await?, sql::DELETE_HOST, &[&host_id]).await.map(|_| ())
    }
}

/// Step state with optimistic concurrency. A key the batch read and writes is written
/// only if it still has the version read (checked in the statement itself); a key it saw
/// absent is inserted only if still absent; a key it read and does not write is checked
/// under update locks held to the commit.
async fn apply_state(conn: &mut Connection, batch: &BatchCommit) -> Result<(), StoreError> {
    let step = &batch.consumer;
    let seen: std::collections::BTreeMap<&str, Option<i64>> =
        batch.state_reads.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let written: HashSet<&str> = batch.state.iter().map(|(k, _)| k.as_str()).collect();
    let read_only: Vec<&str> =
        seen.iter().filter(|(k, v)| v.is_some() && !written.contains(**k)).map(|(k, _)| *k).collect();
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

/// The statement that marks outbox rows sent on `channel`.
fn mark_statement(channel: Channel) -> &'static str {
    match channel {
        Channel::Transport => sql::MARK_RELAYED,
        Channel::Stream => sql::MARK_STREAMED,
    }
}
