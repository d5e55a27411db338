//! The payloads of the saga's event kinds, shared by the host and every step so that
//! both sides agree on one definition.

use serde::{Deserialize, Serialize};

/// Event kinds of the saga.
pub mod kinds {
    /// Host: an order was accepted. Payload [`super::OrderPlaced`].
    pub const ORDER_PLACED: &str = "order.placed";
    /// Host: the order completed. Payload [`super::OrderCompleted`].
    pub const ORDER_COMPLETED: &str = "order.completed";
    /// Host: the order was cancelled. Payload [`super::OrderCancelled`].
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    /// Host: an administrator set a SKU's available stock. Payload [`super::StockSet`].
    pub const STOCK_SET: &str = "stock.set";
    /// Inventory: stock levels after a `stock.set`. Payload [`super::StockUpdated`].
    pub const STOCK_UPDATED: &str = "stock.updated";
    /// Inventory: every line of the order is reserved. Payload [`super::StockReserved`].
    pub const STOCK_RESERVED: &str = "stock.reserved";
    /// Inventory: at least one line could not be reserved. Payload [`super::StockUnavailable`].
    pub const STOCK_UNAVAILABLE: &str = "stock.unavailable";
    /// Inventory: a completed order's reservation became sold. Payload [`super::StockCommitted`].
    pub const STOCK_COMMITTED: &str = "stock.committed";
    /// Inventory: a cancelled order's stock went back to available. Payload [`super::StockReleased`].
    pub const STOCK_RELEASED: &str = "stock.released";
    /// Payment: the amount was charged. Payload [`super::PaymentCaptured`].
    pub const PAYMENT_CAPTURED: &str = "payment.captured";
    /// Payment: the card was declined. Payload [`super::PaymentDeclined`].
    pub const PAYMENT_DECLINED: &str = "payment.declined";
    /// Payment: a capture was refunded. Payload [`super::PaymentRefunded`].
    pub const PAYMENT_REFUNDED: &str = "payment.refunded";
    /// Host: a step ran out of attempts on an event. Payload [`super::StepDeadLettered`].
    pub const STEP_DEAD_LETTERED: &str = "step.dead-lettered";

    /// Every kind above.
    pub const ALL: [&str; 13] = [
        ORDER_PLACED,
        ORDER_COMPLETED,
        ORDER_CANCELLED,
        STOCK_SET,
        STOCK_UPDATED,
        STOCK_RESERVED,
        STOCK_UNAVAILABLE,
        STOCK_COMMITTED,
        STOCK_RELEASED,
        PAYMENT_CAPTURED,
        PAYMENT_DECLINED,
        PAYMENT_REFUNDED,
        STEP_DEAD_LETTERED,
    ];
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineItem {
    /// Stock keeping unit.
    pub sku: String,
    /// Units, at least 1.
    pub quantity: u32,
    /// Price of one unit in cents.
    pub unit_price_cents: i64,
}

/// How the customer pays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentInfo {
    /// A token of the simulated gateway (`tok_ok`, `tok_decline`, `tok_flaky_N`, `tok_trap`).
    pub card_token: String,
}

/// `order.placed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    /// The customer.
    pub customer_id: String,
    /// The lines.
    pub items: Vec<LineItem>,
    /// Sum of quantity × unit price.
    pub total_cents: i64,
    /// Payment details, forwarded to the payment step.
    pub payment: PaymentInfo,
}

/// `order.completed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct OrderCompleted {}

/// `order.cancelled`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    /// `out_of_stock`, `payment_declined`, `step_failed` or `customer_request`.
    pub reason: String,
}

/// `stock.set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockSet {
    /// The SKU.
    pub sku: String,
    /// Units available for sale from now on.
    pub available: u64,
}

/// A SKU's levels after a change; `seq` grows with every change of that SKU, so a
/// reader keeps the highest and ignores late arrivals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct StockLevel {
    /// The SKU.
    pub sku: String,
    /// Units free to reserve.
    pub available: u64,
    /// Units held by orders in flight.
    pub reserved: u64,
    /// Units of completed orders.
    pub sold: u64,
    /// Change counter of this SKU.
    pub seq: u64,
}

/// `stock.updated`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockUpdated {
    /// Levels after the change.
    pub levels: Vec<StockLevel>,
}

/// `stock.reserved`: carries what payment needs, so payment reacts to this event alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReserved {
    /// The reserved lines.
    pub items: Vec<LineItem>,
    /// Amount to charge.
    pub total_cents: i64,
    /// Forwarded from `order.placed`.
    pub payment: PaymentInfo,
    /// Levels after the reservation.
    pub levels: Vec<StockLevel>,
}

/// A line that could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shortage {
    /// The SKU.
    pub sku: String,
    /// Units the order asked for.
    pub requested: u32,
    /// Units that were available.
    pub available: u64,
}

/// `stock.unavailable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockUnavailable {
    /// Every line that was short.
    pub short: Vec<Shortage>,
}

/// `stock.committed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockCommitted {
    /// Levels after the change.
    pub levels: Vec<StockLevel>,
}

/// `stock.released`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockReleased {
    /// True when sold units were restocked (a completed order was cancelled).
    pub restocked: bool,
    /// Levels after the change.
    pub levels: Vec<StockLevel>,
}

/// `payment.captured`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentCaptured {
    /// Amount charged.
    pub amount_cents: i64,
}

/// `payment.declined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentDeclined {
    /// Why, e.g. `card_declined`, `unknown_token`.
    pub reason: String,
}

/// `payment.refunded`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    /// Amount returned.
    pub amount_cents: i64,
}

/// `step.dead-lettered`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDeadLettered {
    /// The step that gave up.
    pub step: String,
    /// The event it could not handle.
    pub event_id: String,
    /// Its kind.
    pub event_kind: String,
    /// The last error.
    pub error: String,
}
