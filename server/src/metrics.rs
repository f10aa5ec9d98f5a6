//! Prometheus metrics, one registry per relay instance (so tests can run many relays).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of the request latency histogram: a method from a fixed set and the route
/// template, never the concrete path (which could hold a phone hash) or a client-chosen
/// method, so the number of label sets is fixed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// HTTP method (`method_label`).
    pub method: String,
    /// Matched route, e.g. `/keys/{phone_hash}`.
    pub route: String,
}

/// The label of an HTTP method: one of the standard methods, or `other`.
pub fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    const KNOWN: [(Method, &str); 8] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::PATCH, "PATCH"),
        (Method::CONNECT, "CONNECT"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("other", |(_, label)| label)
}

/// Label of a refusal: which limit refused (a fixed set of names).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Sockets: `full` (the relay's cap) or `per_client` (a client network's). Messages:
    /// `mailbox_full`, `storage_full` or `rate_limited`.
    pub reason: &'static str,
}

/// Label of a delivery: how the message was found (`delivery::Path`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// `backlog`, `push`, `bus` or `rescan`.
    pub path: &'static str,
}

/// Every metric the relay exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Messages durably stored.
    pub messages_stored: Counter,
    /// Messages written to a recipient's socket (redeliveries included).
    pub messages_delivered: Counter,
    /// Messages acknowledged and deleted.
    pub messages_acked: Counter,
    /// Failed authentications (token requests and bad bearer tokens).
    pub auth_failures: Counter,
    /// WebSocket connections refused at the limit.
    pub connections_refused: Counter,
    /// TCP connections closed at accept by a connection cap.
    pub sockets_refused: Family<RefusalLabels, Counter>,
    /// Failed accepts (out of file descriptors, mostly).
    pub accept_errors: Counter,
    /// Pending messages in storage, refreshed on scrape.
    pub queue_depth: Gauge,
    /// Messages refused for a relay limit, by reason.
    pub messages_refused: Family<RefusalLabels, Counter>,
    /// Verification codes requested, by outcome (`sent`, `failed`).
    pub verification_codes: Family<RefusalLabels, Counter>,
    /// Message bytes read off sockets and not yet committed, refreshed on scrape.
    pub inflight_bytes: Gauge,
    /// 1 while storage is past its high-water mark.
    pub storage_full: Gauge,
    /// HTTP request latency.
    pub request_latency: Family<RouteLabels, Histogram>,
    /// Time of one group commit (message stores, acks), seconds.
    pub write_batch_seconds: Histogram,
    /// Writes per group commit.
    pub write_batch_size: Histogram,
    /// Messages written to a recipient's socket, by how they were found.
    pub delivered_by_path: Family<PathLabels, Counter>,
    /// 1 while the routing bus is connected (always 0 for a relay that runs alone).
    pub bus_connected: Gauge,
    /// Bus events not sent (Redis down, or the outbox full); connections rescan instead.
    pub bus_events_dropped: Counter,
    /// Time of one mailbox read for users woken over the bus, seconds.
    pub bus_read_seconds: Histogram,
    /// Users read by one bus read (how well wake-ups are grouped).
    pub bus_read_users: Histogram,
}

impl Metrics {
    /// Creates and registers all metrics, unlabelled.
    pub fn new() -> Self {
        Self::for_instance(None)
    }

    /// Creates and registers all metrics; each carries `relay_instance="<id>"` when given
    /// (instances of one cluster scraped together stay apart).
    pub fn for_instance(instance: Option<&str>) -> Self {
        let labels = instance.map(|id| {
            (
                std::borrow::Cow::Borrowed("relay_instance"),
                std::borrow::Cow::Owned(id.to_owned()),
            )
        });
        let mut registry = Registry::with_prefix_and_labels("privcomm", labels.into_iter());
        let metrics = Self {
            connections: Gauge::default(),
            messages_stored: Counter::default(),
            messages_delivered: Counter::default(),
            messages_acked: Counter::default(),
            auth_failures: Counter::default(),
            connections_refused: Counter::default(),
            sockets_refused: Family::default(),
            accept_errors: Counter::default(),
            queue_depth: Gauge::default(),
            messages_refused: Family::default(),
            verification_codes: Family::default(),
            inflight_bytes: Gauge::default(),
            storage_full: Gauge::default(),
            request_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 14))
            }),
            write_batch_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            write_batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 11)),
            delivered_by_path: Family::default(),
            bus_connected: Gauge::default(),
            bus_events_dropped: Counter::default(),
            bus_read_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 14)),
            bus_read_users: Histogram::new(exponential_buckets(1.0, 2.0, 7)),
            registry: Registry::default(),
        };
        registry.register(
            "ws_connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "messages_stored",
            "Messages durably stored",
            metrics.messages_stored.clone(),
        );
        registry.register(
            "messages_delivered",
            "Messages written to a recipient connection",
            metrics.messages_delivered.clone(),
        );
        registry.register(
            "messages_acked",
            "Messages acknowledged and deleted",
            metrics.messages_acked.clone(),
        );
        registry.register(
            "auth_failures",
            "Failed authentications",
            metrics.auth_failures.clone(),
        );
        registry.register(
            "ws_connections_refused",
            "WebSocket connections refused at the connection limit",
            metrics.connections_refused.clone(),
        );
        registry.register(
            "sockets_refused",
            "TCP connections closed at accept by a connection cap",
            metrics.sockets_refused.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts (out of file descriptors, mostly)",
            metrics.accept_errors.clone(),
        );
        registry.register(
            "queue_depth",
            "Messages awaiting delivery",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "messages_refused",
            "Messages refused for a relay limit (mailbox_full, storage_full, rate_limited)",
            metrics.messages_refused.clone(),
        );
        registry.register(
            "verification_codes",
            "Verification codes handed to the code sender, by outcome (sent, failed)",
            metrics.verification_codes.clone(),
        );
        registry.register(
            "inflight_bytes",
            "Message bytes read and not yet committed",
            metrics.inflight_bytes.clone(),
        );
        registry.register(
            "storage_full",
            "1 while storage is past its high-water mark",
            metrics.storage_full.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency",
            metrics.request_latency.clone(),
        );
        registry.register(
            "write_batch_duration_seconds",
            "Time of one group commit",
            metrics.write_batch_seconds.clone(),
        );
        registry.register(
            "write_batch_size",
            "Writes committed together",
            metrics.write_batch_size.clone(),
        );
        registry.register(
            "messages_delivered_by_path",
            "Messages written to a recipient connection, by how they were found \
             (backlog, push, bus, rescan)",
            metrics.delivered_by_path.clone(),
        );
        registry.register(
            "bus_connected",
            "1 while the routing bus (Redis) is connected",
            metrics.bus_connected.clone(),
        );
        registry.register(
            "bus_events_dropped",
            "Routing bus events not sent (connections rescan instead)",
            metrics.bus_events_dropped.clone(),
        );
        registry.register(
            "bus_read_duration_seconds",
            "Time of one mailbox read for users woken over the routing bus",
            metrics.bus_read_seconds.clone(),
        );
        registry.register(
            "bus_read_users",
            "Users whose mailboxes one routing bus read covers",
            metrics.bus_read_users.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    /// Counts a message written to its recipient, found by `path`.
    pub fn delivered(&self, path: &'static str) {
        self.messages_delivered.inc();
        self.delivered_by_path
            .get_or_create(&PathLabels { path })
            .inc();
    }

    /// Counts a TCP connection refused by the cap named `reason`.
    pub fn refused(&self, reason: &'static str) {
        self.sockets_refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// Counts a message refused by the limit named `reason`.
    pub fn message_refused(&self, reason: &'static str) {
        self.messages_refused
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// Counts a verification code by `outcome` (`sent` or `failed`).
    pub fn verification_codes(&self, outcome: &'static str) {
        self.verification_codes
            .get_or_create(&RefusalLabels { reason: outcome })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
