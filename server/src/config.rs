//! Relay configuration, read from the command line or `PRIVCOMM_*` environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser};

const MIB: u64 = 1024 * 1024;

/// A setting the relay refuses to start with.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub setting: &'static str,
    /// What is wrong with it and what to do.
    pub problem: String,
}

/// Privcomm relay: stores and forwards end-to-end encrypted messages it cannot read.
#[derive(Clone, Debug, Parser)]
#[command(name = "privcomm-server", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "PRIVCOMM_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,

    /// Directory for the SQLite database and the generated JWT secret.
    #[arg(long, env = "PRIVCOMM_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Database URL: `sqlite://path` or `postgres://…`. Default: SQLite in the data dir.
    #[arg(long, env = "PRIVCOMM_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Database connections for reads, logins and key updates. On PostgreSQL the group
    /// commits have their own besides (a quarter of this many, 1 to 4); on SQLite this many
    /// read-only connections, and one more writes. Several instances of one database each
    /// open them all (mind the server's `max_connections`).
    #[arg(long, env = "PRIVCOMM_DATABASE_POOL", default_value_t = 8)]
    pub database_pool: u32,

    /// Seconds a PostgreSQL statement may run before the server cancels it (the request
    /// then fails with 503 `database_unavailable`).
    #[arg(
        long,
        env = "PRIVCOMM_DATABASE_STATEMENT_TIMEOUT_SECS",
        default_value_t = 30
    )]
    pub database_statement_timeout_secs: u64,

    /// Secret for signing access tokens (at least 32 bytes). Default: generated once and kept
    /// in `<data dir>/jwt_secret`.
    #[arg(long, env = "PRIVCOMM_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// The secret tokens were signed with before `PRIVCOMM_JWT_SECRET` was changed: its
    /// tokens keep working until they expire (at most 30 minutes), so a rotation logs no one
    /// out. Remove it once that time has passed.
    #[arg(long, env = "PRIVCOMM_JWT_PREVIOUS_SECRET", hide_env_values = true)]
    pub jwt_previous_secret: Option<String>,

    /// Secret that keys what the database stores about phone numbers and delivered
    /// messages (at least 32 bytes; every relay of one database must share it). Default:
    /// generated once and kept in `<data dir>/phone_pepper`.
    #[arg(long, env = "PRIVCOMM_PHONE_PEPPER", hide_env_values = true)]
    pub phone_pepper: Option<String>,

    /// How verification codes reach phones: `webhook` (POST to the URL below, for an SMS
    /// provider) or `stdout` (development only, needs PRIVCOMM_DEV_MODE=1). Unset: no codes
    /// can be sent, so nobody can register (`verification_unavailable`).
    #[arg(long, env = "PRIVCOMM_CODE_SENDER")]
    pub code_sender: Option<String>,

    /// The operator's endpoint for the `webhook` code sender (https; http only on loopback).
    #[arg(long, env = "PRIVCOMM_CODE_WEBHOOK_URL", hide_env_values = true)]
    pub code_webhook_url: Option<String>,

    /// Key of the webhook's `X-Privcomm-Signature` (HMAC-SHA256), at least 32 bytes.
    #[arg(long, env = "PRIVCOMM_CODE_WEBHOOK_SECRET", hide_env_values = true)]
    pub code_webhook_secret: Option<String>,

    /// Milliseconds one webhook attempt may take (100 to 60,000; three attempts per code).
    #[arg(long, env = "PRIVCOMM_CODE_WEBHOOK_TIMEOUT_MS", default_value_t = 5000)]
    pub code_webhook_timeout_ms: u64,

    /// Development mode: allows the `stdout` code sender. Never in production.
    #[arg(
        long,
        env = "PRIVCOMM_DEV_MODE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub dev_mode: bool,

    /// Verification codes requested per client network (IPv4 address, IPv6 /64) per hour.
    #[arg(long, env = "PRIVCOMM_VERIFICATION_PER_HOUR", default_value_t = 20)]
    pub verification_per_hour: u32,

    /// Verification codes sent to one number per minute.
    #[arg(
        long,
        env = "PRIVCOMM_VERIFICATION_PER_NUMBER_PER_MINUTE",
        default_value_t = 1
    )]
    pub verification_per_number_per_minute: u32,

    /// Verification codes the relay sends per hour over all numbers (its SMS budget).
    #[arg(
        long,
        env = "PRIVCOMM_VERIFICATION_GLOBAL_PER_HOUR",
        default_value_t = 1000
    )]
    pub verification_global_per_hour: u32,

    /// Verification codes sent to one number per day.
    #[arg(
        long,
        env = "PRIVCOMM_VERIFICATION_PER_NUMBER_PER_DAY",
        default_value_t = 5
    )]
    pub verification_per_number_per_day: u32,

    /// Shared secret with the TURN server (coturn `static-auth-secret`). Without it the
    /// turn-credentials endpoint answers 503.
    #[arg(long, env = "PRIVCOMM_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// Comma-separated TURN/STUN URLs handed to clients.
    #[arg(
        long,
        env = "PRIVCOMM_TURN_URLS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub turn_urls: Vec<String>,

    /// Seconds a TURN credential is valid (60 to 86,400).
    #[arg(long, env = "PRIVCOMM_TURN_TTL", default_value_t = 3600)]
    pub turn_ttl: u64,

    /// TURN credentials one account may get per hour.
    #[arg(long, env = "PRIVCOMM_TURN_PER_HOUR", default_value_t = 30)]
    pub turn_per_hour: u32,

    /// Most concurrent WebSocket connections; more are refused.
    #[arg(long, env = "PRIVCOMM_MAX_CONNECTIONS", default_value_t = privcomm_protocol::limits::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Most open TCP connections (HTTP and WebSocket); more are closed at accept. 0: the
    /// WebSocket limit plus 1,024, within the open file limit.
    #[arg(long, env = "PRIVCOMM_MAX_SOCKETS", default_value_t = 0)]
    pub max_sockets: usize,

    /// Most open TCP connections from one client network (an IPv4 address or an IPv6 /64);
    /// trusted proxies are exempt.
    #[arg(long, env = "PRIVCOMM_MAX_SOCKETS_PER_CLIENT", default_value_t = 64)]
    pub max_sockets_per_client: usize,

    /// Seconds a client has to send a request's headers; also the longest an HTTP
    /// keep-alive connection may stay idle.
    #[arg(long, env = "PRIVCOMM_HEADER_TIMEOUT", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Seconds a REST request may take, body upload included; slower ones get 408.
    #[arg(long, env = "PRIVCOMM_REQUEST_TIMEOUT", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// Registrations allowed per client network (IPv4 address, IPv6 /64) per hour.
    #[arg(long, env = "PRIVCOMM_REGISTER_PER_HOUR", default_value_t = 10)]
    pub register_per_hour: u32,

    /// Token requests allowed per client network per minute.
    #[arg(long, env = "PRIVCOMM_TOKEN_PER_MINUTE", default_value_t = 10)]
    pub token_per_minute: u32,

    /// Challenge requests allowed per client network per minute.
    #[arg(long, env = "PRIVCOMM_CHALLENGE_PER_MINUTE", default_value_t = 60)]
    pub challenge_per_minute: u32,

    /// Challenge requests, and token requests, allowed per phone hash per minute, whatever
    /// the client address.
    #[arg(long, env = "PRIVCOMM_PHONE_HASH_PER_MINUTE", default_value_t = 20)]
    pub phone_hash_per_minute: u32,

    /// Authenticated requests allowed per account per minute (sends count separately).
    #[arg(long, env = "PRIVCOMM_ACCOUNT_PER_MINUTE", default_value_t = 300)]
    pub account_per_minute: u32,

    /// Prekey bundle lookups (`/keys/…`) allowed per account per hour.
    #[arg(long, env = "PRIVCOMM_KEY_LOOKUPS_PER_HOUR", default_value_t = 200)]
    pub key_lookups_per_hour: u32,

    /// One-time prekeys of one user handed out per hour, over all callers; past it bundles
    /// come without one (the signed and Kyber prekeys still make a session).
    #[arg(
        long,
        env = "PRIVCOMM_PREKEYS_PER_TARGET_PER_HOUR",
        default_value_t = 60
    )]
    pub prekeys_per_target_per_hour: u32,

    /// Proxies whose `Forwarded` / `X-Forwarded-For` headers name the client (comma-separated
    /// addresses or networks). Empty: the TCP peer is the client. They are also exempt from
    /// the per-client socket cap.
    #[arg(long, env = "PRIVCOMM_TRUSTED_PROXIES", default_value = "")]
    pub trusted_proxies: crate::client_ip::TrustedProxies,

    /// Undelivered messages one recipient's mailbox may hold; more get `mailbox_full`.
    #[arg(long, env = "PRIVCOMM_MAX_MAILBOX_MESSAGES", default_value_t = 10_000)]
    pub max_mailbox_messages: u64,

    /// MiB of undelivered payload one recipient's mailbox may hold.
    #[arg(long, env = "PRIVCOMM_MAX_MAILBOX_MB", default_value_t = 64)]
    pub max_mailbox_mb: u64,

    /// Messages one account may send per minute (a burst of this many, then an even pace).
    #[arg(long, env = "PRIVCOMM_SEND_PER_MINUTE", default_value_t = 600)]
    pub send_per_minute: u32,

    /// KiB of payload one account may send per minute (at least 128).
    #[arg(long, env = "PRIVCOMM_SEND_KIB_PER_MINUTE", default_value_t = 8192)]
    pub send_kib_per_minute: u32,

    /// MiB of messages the relay holds between reading them off sockets and committing
    /// them; beyond it, connections stop being read until commits catch up.
    #[arg(long, env = "PRIVCOMM_MAX_INFLIGHT_MB", default_value_t = 64)]
    pub max_inflight_mb: usize,

    /// New messages are refused (503 `storage_full`) while the data dir's file system has
    /// less than this many MiB free (SQLite). 0: not checked.
    #[arg(long, env = "PRIVCOMM_MIN_FREE_DISK_MB", default_value_t = 256)]
    pub min_free_disk_mb: u64,

    /// New messages are refused (503 `storage_full`) while the database is larger than this
    /// many MiB. 0: not checked.
    #[arg(long, env = "PRIVCOMM_MAX_DATABASE_MB", default_value_t = 0)]
    pub max_database_mb: u64,

    /// Seconds between storage measurements for the two marks above.
    #[arg(long, env = "PRIVCOMM_STORAGE_CHECK_INTERVAL", default_value_t = 5)]
    pub storage_check_secs: u64,

    /// Seconds between maintenance runs (retention clean-up).
    #[arg(long, env = "PRIVCOMM_MAINTENANCE_INTERVAL", default_value_t = 300)]
    pub maintenance_interval_secs: u64,

    /// Seconds between WebSocket pings; a connection silent for three intervals is dropped.
    #[arg(long, env = "PRIVCOMM_PING_INTERVAL", default_value_t = 30)]
    pub ping_interval_secs: u64,

    /// Redis for running several relay instances on one PostgreSQL database
    /// (`redis://host:6379`, `rediss://` for TLS; Redis 7 or later): instances tell each other
    /// of new messages and connections over it, and share their rate limits. Unset: one
    /// instance, everything in process. Needs PRIVCOMM_JWT_SECRET and PRIVCOMM_PHONE_PEPPER,
    /// which every instance must share.
    #[arg(long, env = "PRIVCOMM_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// This instance's name in logs, metrics and the routing bus (1 to 64 of
    /// `A-Z a-z 0-9 . _ -`). Default: generated at start.
    #[arg(long, env = "PRIVCOMM_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "PRIVCOMM_LOG", default_value = "info")]
    pub log: String,
}

impl Config {
    /// Configuration with every built-in default and the given data dir, for embedding and
    /// tests. Unlike `parse`, it ignores `PRIVCOMM_*` environment variables.
    pub fn with_defaults(data_dir: impl Into<PathBuf>) -> Self {
        let command = Self::command().mut_args(|arg| arg.env(None));
        let matches = command.get_matches_from(["privcomm-server"]);
        // Every field has a default or is optional, so an empty command line always parses.
        let mut config = Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        config.data_dir = data_dir.into();
        config
    }

    /// Refuses settings the relay must not run with. Secrets are checked where they are
    /// loaded.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::routes::turn::check_settings(self.turn_secret.as_deref(), self.turn_ttl)?;
        self.check_cluster_settings()?;
        crate::codes::from_config(self).map(drop)
    }

    /// The Redis URL in effect (`None`: one instance, in-process bus).
    pub fn effective_redis_url(&self) -> Option<&str> {
        self.redis_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
    }

    /// Instances of one cluster must share the secrets a generated default would make
    /// different on each (tokens signed by one must verify on the others; phone keys must
    /// match), and name themselves within what logs and the bus carry.
    fn check_cluster_settings(&self) -> Result<(), ConfigError> {
        if let Some(id) = &self.instance_id {
            let ok = (1..=64).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(ConfigError {
                    setting: "PRIVCOMM_INSTANCE_ID",
                    problem: "must be 1 to 64 characters of A-Z a-z 0-9 . _ -".into(),
                });
            }
        }
        let Some(url) = self.effective_redis_url() else {
            return Ok(());
        };
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(ConfigError {
                setting: "PRIVCOMM_REDIS_URL",
                problem: "must start with redis:// or rediss://".into(),
            });
        }
        let missing = |value: &Option<String>| value.as_deref().is_none_or(str::is_empty);
        if missing(&self.jwt_secret) {
            return Err(ConfigError {
                setting: "PRIVCOMM_JWT_SECRET",
                problem: "required with PRIVCOMM_REDIS_URL: every instance must sign and check \
                          tokens with the same secret (a generated one differs per instance)"
                    .into(),
            });
        }
        if missing(&self.phone_pepper) {
            return Err(ConfigError {
                setting: "PRIVCOMM_PHONE_PEPPER",
                problem: "required with PRIVCOMM_REDIS_URL: every instance must key phone \
                          numbers with the same pepper (a generated one differs per instance)"
                    .into(),
            });
        }
        Ok(())
    }

    /// This instance's id: the configured one, or a new random one.
    pub fn effective_instance_id(&self) -> String {
        match &self.instance_id {
            Some(id) if !id.is_empty() => id.clone(),
            _ => format!("relay-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        }
    }

    /// The TCP connection cap in effect, given the open file limit (`None`: unlimited).
    pub fn effective_max_sockets(&self, open_file_limit: Option<u64>) -> usize {
        let wanted = match self.max_sockets {
            0 => self.max_connections.saturating_add(1024),
            n => n,
        };
        // Leave room for the database, logs and listener.
        let room = open_file_limit
            .and_then(|n| usize::try_from(n).ok())
            .map_or(usize::MAX, |n| n.saturating_sub(64).max(16));
        wanted.min(room)
    }

    /// How the store uses its database connections.
    pub fn store_settings(&self) -> crate::store::StoreSettings {
        crate::store::StoreSettings {
            max_connections: self.database_pool,
            statement_timeout: std::time::Duration::from_secs(
                self.database_statement_timeout_secs.max(1),
            ),
            ..crate::store::StoreSettings::default()
        }
    }

    /// The mailbox quota in effect.
    pub fn mailbox_quota(&self) -> crate::store::MailboxQuota {
        crate::store::MailboxQuota {
            max_messages: self.max_mailbox_messages,
            max_bytes: self.max_mailbox_mb.saturating_mul(MIB),
        }
    }

    /// The storage high-water marks in effect. Free disk is checked only for a SQLite
    /// database, which lives in the data dir.
    pub fn storage_marks(&self) -> crate::storage_gauge::StorageMarks {
        let sqlite = self.effective_database_url().starts_with("sqlite:");
        crate::storage_gauge::StorageMarks {
            min_free_disk: (sqlite && self.min_free_disk_mb > 0)
                .then(|| self.min_free_disk_mb.saturating_mul(MIB)),
            max_database: (self.max_database_mb > 0)
                .then(|| self.max_database_mb.saturating_mul(MIB)),
        }
    }

    /// The database URL in effect.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("privcomm.db").display()
            ),
        }
    }
}
