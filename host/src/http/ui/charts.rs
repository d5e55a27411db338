//! The overview: live counts and four charts (orders completed per second, POST →
//! completed p50/p99, dead letters, outbox lag) over the last ten minutes.
//!
//! The samples come from the store, so they describe the whole fleet. Sampling starts
//! when someone opens the console and stops ten minutes after the last page was viewed:
//! a host nobody watches pays nothing for it.

use super::UiError;
use super::layout::{self, Nav};
use super::session::Session;
use crate::event::now_ms;
use crate::http::AppState;
use crate::saga::SagaContext;
use crate::store::{Channel, OrderPage};
use axum::extract::State;
use axum::{Extension, Json};
use maud::{Markup, html};
use parking_lot::Mutex;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

const EVERY: Duration = Duration::from_secs(2);
/// Ten minutes of samples.
const KEEP: usize = 300;
const IDLE_MS: i64 = 10 * 60 * 1000;
/// Completed orders looked at per sample for the latency.
const LATENCY_WINDOW: u32 = 500;

#[derive(Debug, Clone, Copy, Serialize)]
struct Sample {
    /// Seconds since the epoch.
    t: f64,
    completed_per_s: Option<f64>,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    dead_letters: i64,
    outbox_lag_s: f64,
}

/// The samples of this host's console.
#[derive(Default)]
pub struct Charts {
    samples: Mutex<VecDeque<Sample>>,
    viewed_ms: AtomicI64,
    running: AtomicBool,
}

impl Charts {
    /// A console page was viewed: keep (or start) sampling.
    pub fn viewed(self: &Arc<Self>, ctx: &Arc<SagaContext>) {
        self.viewed_ms.store(now_ms(), Ordering::Relaxed);
        if self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let charts = self.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move { charts.sample_while_viewed(&ctx).await });
    }

    async fn sample_while_viewed(&self, ctx: &SagaContext) {
        let mut last: Option<(f64, i64)> = None;
        let mut ticker = tokio::time::interval(EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if now_ms() - self.viewed_ms.load(Ordering::Relaxed) > IDLE_MS {
                self.running.store(false, Ordering::Release);
                return;
            }
            match sample(ctx, last).await {
                Ok((sample, completed)) => {
                    last = Some((sample.t, completed));
                    let mut samples = self.samples.lock();
                    if samples.len() == KEEP {
                        samples.pop_front();
                    }
                    samples.push_back(sample);
                }
                // A store that does not answer leaves a gap; /readyz says why.
                Err(error) => tracing::debug!(%error, "console sample skipped"),
            }
        }
    }
}

/// One sample, and the completed count it saw (for the next rate).
async fn sample(ctx: &SagaContext, last: Option<(f64, i64)>) -> Result<(Sample, i64), crate::store::StoreError> {
    let query = ctx.query();
    let now = now_ms();
    let t = now as f64 / 1000.0;
    let counts = query.order_counts().await?;
    let completed = counts.iter().find(|(s, _)| s == "completed").map(|(_, n)| *n).unwrap_or(0);
    let completed_per_s = last.map(|(t0, c0)| ((completed - c0).max(0) as f64) / (t - t0).max(0.001));
    // POST → completed of the orders completed since the last sample.
    let since_ms = last.map(|(t0, _)| (t0 * 1000.0) as i64).unwrap_or(now - EVERY.as_millis() as i64);
    let completed_page = OrderPage { status: Some("completed".to_owned()), limit: LATENCY_WINDOW, before_seq: None };
    let mut took: Vec<i64> = query
        .orders(&completed_page)
        .await?
        .into_iter()
        .filter(|o| o.updated_at_ms > since_ms)
        .map(|o| o.updated_at_ms - o.created_at_ms)
        .collect();
    took.sort_unstable();
    let quantile = |q: f64| -> Option<f64> {
        let last = took.len().checked_sub(1)?;
        took.get(((last as f64) * q).round() as usize).map(|ms| *ms as f64)
    };
    let dead_letters = query.dead_letter_count().await?;
    let mut outbox_lag_s: f64 = 0.0;
    let channels: &[Channel] =
        if ctx.stream.is_some() { &[Channel::Transport, Channel::Stream] } else { &[Channel::Transport] };
    for &channel in channels {
        for (_, lag) in query.outbox_lags(channel).await {
            if let Some(oldest) = lag?.oldest_at_ms {
                outbox_lag_s = outbox_lag_s.max((now - oldest).max(0) as f64 / 1000.0);
            }
        }
    }
    let sample =
        Sample { t, completed_per_s, p50_ms: quantile(0.5), p99_ms: quantile(0.99), dead_letters, outbox_lag_s };
    Ok((sample, completed))
}

/// The samples as columns, as uPlot takes them.
#[derive(Debug, Serialize)]
pub struct Series {
    t: Vec<f64>,
    completed_per_s: Vec<Option<f64>>,
    p50_ms: Vec<Option<f64>>,
    p99_ms: Vec<Option<f64>>,
    dead_letters: Vec<i64>,
    outbox_lag_s: Vec<f64>,
}

pub async fn series(State(state): State<AppState>) -> Json<Series> {
    state.charts.viewed(&state.saga);
    let samples = state.charts.samples.lock();
    Json(Series {
        t: samples.iter().map(|s| s.t).collect(),
        completed_per_s: samples.iter().map(|s| s.completed_per_s).collect(),
        p50_ms: samples.iter().map(|s| s.p50_ms).collect(),
        p99_ms: samples.iter().map(|s| s.p99_ms).collect(),
        dead_letters: samples.iter().map(|s| s.dead_letters).collect(),
        outbox_lag_s: samples.iter().map(|s| s.outbox_lag_s).collect(),
    })
}

pub async fn overview(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> Result<Markup, UiError> {
    state.charts.viewed(&state.saga);
    let counts = super::orders::counts(State(state.clone())).await?;
    let content = html! {
        h1 { "Overview" }
        div #counts hx-get="/ui/orders/counts" hx-trigger="every 2s" { (counts) }
        p.hint { "The whole fleet, sampled every 2 s from the store while the console is open." }
        div.charts {
            figure.chart data-chart="completed" { figcaption { "Orders completed per second" } }
            figure.chart data-chart="latency" { figcaption { "POST → completed, p50 and p99 (ms)" } }
            figure.chart data-chart="dead_letters" { figcaption { "Dead letters" } }
            figure.chart data-chart="outbox_lag" { figcaption { "Outbox lag (s)" } }
        }
    };
    Ok(layout::page("Overview", Nav::Overview, &session, content))
}
