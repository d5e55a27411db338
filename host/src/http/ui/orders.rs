//! Orders: the list (newest first, by status, find by id, live counts) and one order with
//! its timeline and its dead letters.

use super::layout::{self, Nav, at, digest, money, scroll, status, took};
use super::session::Session;
use super::{UiError, dead_letters};
use crate::http::AppState;
use crate::saga::ops;
use crate::store::{OrderPage, OrderRow, OrderWithTimeline};
use axum::Extension;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

const PAGE: u32 = 50;
/// What must be escaped in one path segment.
const PATH_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'?')
    .add(b'<')
    .add(b'>')
    .add(b'`');
const STATUSES: [&str; 3] = ["pending", "completed", "cancelled"];

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    before: Option<i64>,
    id: Option<String>,
}

impl ListQuery {
    fn status(&self) -> Option<&str> {
        self.status.as_deref().filter(|s| STATUSES.contains(s))
    }

    fn href(&self, before: Option<i64>) -> String {
        let mut query = Vec::new();
        if let Some(status) = self.status() {
            query.push(format!("status={status}"));
        }
        if let Some(before) = before {
            query.push(format!("before={before}"));
        }
        if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) }
    }
}

pub async fn list(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Query(query): Query<ListQuery>,
) -> Result<Response, UiError> {
    state.charts.viewed(&state.saga);
    let mut missing = None;
    if let Some(id) = query.id.as_deref().map(str::trim).filter(|id| !id.is_empty()) {
        if state.saga.query().order_row(id).await?.is_some() {
            let target = format!("/ui/orders/{}", percent_encoding::utf8_percent_encode(id, PATH_SEGMENT));
            return Ok(Redirect::to(&target).into_response());
        }
        missing = Some(id.to_owned());
    }
    let table = rows_markup(&state, &query).await?;
    let current = query.status();
    let content = html! {
        h1 { "Orders" }
        div #counts hx-get="/ui/orders/counts" hx-trigger="every 2s" { (counts_markup(&state).await?) }
        div.toolbar {
            nav.filters {
                a href="/ui/orders" class=[current.is_none().then_some("current")] { "all" }
                @for s in STATUSES {
                    a href={ "/ui/orders?status=" (s) } class=[(current == Some(s)).then_some("current")] { (s) }
                }
            }
            form.find method="get" action="/ui/orders" {
                input type="search" name="id" placeholder="order id" aria-label="order id";
                button type="submit" { "Find" }
            }
        }
        @if let Some(id) = missing {
            (layout::flash(layout::Flash::Error(format!("no order {id}"))))
        }
        // The first page follows new orders; older pages stay put.
        @if query.before.is_none() {
            div #orders hx-get={ "/ui/orders/rows" (query.href(None)) } hx-trigger="every 3s" { (table) }
        } @else {
            div #orders { (table) }
        }
    };
    Ok(layout::page("Orders", Nav::Orders, &session, content).into_response())
}

/// The table of the list, alone (refreshed in place).
pub async fn rows(State(state): State<AppState>, Query(query): Query<ListQuery>) -> Result<Markup, UiError> {
    rows_markup(&state, &query).await
}

async fn rows_markup(state: &AppState, query: &ListQuery) -> Result<Markup, UiError> {
    let page = OrderPage { status: query.status().map(str::to_owned), limit: PAGE + 1, before_seq: query.before };
    let rows = state.saga.query().orders(&page).await?;
    let more = rows.len() > PAGE as usize;
    let rows: Vec<OrderRow> = rows.into_iter().take(PAGE as usize).collect();
    let older = rows.last().map(|r| r.seq);
    Ok(html! {
        @if rows.is_empty() {
            p.empty { "No orders" @if let Some(s) = query.status() { " " (s) } " yet." }
        } @else {
            (scroll(html! {
                table.orders {
                    thead { tr { th { "order" } th { "status" } th { "customer" } th.num { "total" } th { "placed (UTC)" } th.num { "took" } } }
                    tbody {
                        @for row in &rows {
                            tr {
                                td { a href={ "/ui/orders/" (row.id) } { code { (row.id) } } }
                                td { (status(&row.status)) }
                                td { (row.customer_id) }
                                td.num { (money(row.total_cents)) }
                                td { (at(row.created_at_ms)) }
                                td.num { @if row.status != "pending" { (took(row.updated_at_ms - row.created_at_ms)) } }
                            }
                        }
                    }
                }
            }))
            @if more {
                a.more href={ "/ui/orders" (query.href(older)) } { "Older orders →" }
            }
        }
    })
}

/// Live counts by status.
pub async fn counts(State(state): State<AppState>) -> Result<Markup, UiError> {
    counts_markup(&state).await
}

async fn counts_markup(state: &AppState) -> Result<Markup, UiError> {
    let counts = state.saga.query().order_counts().await?;
    let of = |status: &str| counts.iter().find(|(s, _)| s == status).map(|(_, n)| *n).unwrap_or(0);
    Ok(html! {
        dl.counts {
            @for s in STATUSES {
                div class={ "count " (s) } { dt { (s) } dd data-status=(s) { (of(s)) } }
            }
        }
    })
}

pub async fn show(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let Some(OrderWithTimeline { order, timeline }) = state.saga.query().order(&id).await? else {
        let content = html! {
            h1 { "Order" }
            (layout::flash(layout::Flash::Error(format!("no order {id}"))))
            a href="/ui/orders" { "← all orders" }
        };
        let page = layout::page("Order", Nav::Orders, &session, content);
        return Ok((axum::http::StatusCode::NOT_FOUND, page).into_response());
    };
    let dead: Vec<_> = ops::dead_letters(&state.saga)
        .await?
        .into_iter()
        .filter(|d| dead_letters::order_of(d).as_deref() == Some(id.as_str()))
        .collect();
    let items: Vec<wasaga_sdk::events::LineItem> = serde_json::from_str(&order.items).unwrap_or_default();
    let url = format!("/ui/orders/{}", order.id);
    let body = html! {
        div.summary {
            (status(&order.status))
            @if let Some(reason) = &order.cancel_reason { span.reason { "reason: " code { (reason) } } }
            span { "customer " (order.customer_id) }
            span { "total " (money(order.total_cents)) }
            span { "placed " (at(order.created_at_ms)) " UTC" }
        }
        h2 { "Items" }
        (scroll(html! {
            table.items {
                thead { tr { th { "sku" } th.num { "quantity" } th.num { "unit price" } th.num { "line" } } }
                tbody {
                    @for item in &items {
                        tr {
                            td { (item.sku) }
                            td.num { (item.quantity) }
                            td.num { (money(item.unit_price_cents)) }
                            td.num { (money(item.unit_price_cents.saturating_mul(i64::from(item.quantity)))) }
                        }
                    }
                }
            }
        }))
        h2 { "Timeline" }
        (scroll(html! {
            table.timeline {
                thead { tr { th { "#" } th { "at (UTC)" } th.num { "after" } th { "event" } th { "by" } th { "version" } th.num { "attempt" } } }
                tbody {
                    @for (i, event) in timeline.iter().enumerate() {
                        tr {
                            td.num { (i + 1) }
                            td { (at(event.at_ms)) }
                            td.num {
                                @if i > 0 { "+" (took(event.at_ms - timeline[i - 1].at_ms)) }
                            }
                            td { code { (event.kind) } }
                            td { (event.step) }
                            td { @if event.step_version.starts_with("sha256:") { (digest(&event.step_version)) } @else { (event.step_version) } }
                            td.num { @if let Some(attempt) = event.attempt { (attempt) } }
                        }
                    }
                }
            }
        }))
        @if !dead.is_empty() {
            h2 { "Dead letters" }
            (dead_letters::table(&dead))
        }
    };
    let content = html! {
        p.back { a href="/ui/orders" { "← all orders" } }
        h1 { "Order " code { (order.id) } }
        // A pending order refreshes itself until it settles.
        @if order.status == "pending" {
            div #order hx-get=(url) hx-trigger="every 2s" hx-select="#order" hx-swap="outerHTML" { (body) }
        } @else {
            div #order { (body) }
        }
    };
    Ok(layout::page("Order", Nav::Orders, &session, content).into_response())
}
