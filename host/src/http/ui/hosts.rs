//! Hosts: the live members of the fleet and the version each serves of each step.

use super::UiError;
use super::layout::{self, Nav, at, digest, scroll, took};
use super::session::Session;
use crate::event::now_ms;
use crate::http::AppState;
use axum::Extension;
use axum::extract::State;
use maud::{Markup, html};
use std::collections::BTreeMap;

pub async fn page(State(state): State<AppState>, Extension(session): Extension<Session>) -> Result<Markup, UiError> {
    let ttl = i64::try_from(crate::saga::HOST_TTL.as_millis()).unwrap_or(10_000);
    let now = now_ms();
    let hosts = state.saga.query().hosts(now - ttl).await?;
    let content = html! {
        h1 { "Hosts" }
        p.hint { "Hosts seen within the last " (took(ttl)) "; this page is served by " code { (state.saga.host_id) } "." }
        @if hosts.is_empty() {
            p.empty { "No host has reported yet." }
        } @else {
            (scroll(html! {
                table.hosts {
                    thead { tr { th { "host" } th { "address" } th { "started (UTC)" } th.num { "last seen" } th { "serves" } } }
                    tbody {
                        @for host in &hosts {
                            @let steps: BTreeMap<String, String> = serde_json::from_str(&host.steps).unwrap_or_default();
                            tr {
                                td { code { (host.host_id) } @if host.host_id == state.saga.host_id { " (this host)" } }
                                td { (host.http_addr) }
                                td { (at(host.started_at_ms)) }
                                td.num { (took((now - host.seen_at_ms).max(0))) " ago" }
                                td { @for (step, version) in &steps { span.served { (step) " " (digest(version)) } " " } }
                            }
                        }
                    }
                }
            }))
        }
    };
    Ok(layout::page("Hosts", Nav::Hosts, &session, content))
}
