//! The relay under test, in a process of its own so its CPU time and memory can be read
//! apart from the load generator's: this executable started again as `privcomm-bench relay`,
//! which runs exactly what the `privcomm-server` binary runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use uuid::Uuid;

/// Where the relay keeps its data.
#[derive(Clone, Debug)]
pub enum Database {
    /// SQLite in a fresh temporary directory under this path (on disk, not tmpfs, unless
    /// the path says otherwise).
    Sqlite { parent: PathBuf },
    /// A fresh schema in this PostgreSQL database, dropped afterwards.
    Postgres { url: String },
}

impl Database {
    /// SQLite under `data_parent`, or PostgreSQL when `postgres_url` is given.
    pub fn from_args(postgres_url: Option<String>, data_parent: Option<PathBuf>) -> Self {
        match postgres_url {
            Some(url) => Self::Postgres { url },
            None => Self::Sqlite {
                parent: data_parent.unwrap_or_else(std::env::temp_dir),
            },
        }
    }

    /// Short name for reports.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Sqlite { .. } => "sqlite",
            Self::Postgres { .. } => "postgres",
        }
    }
}

/// A running relay process.
pub struct RelayProcess {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    data_dir: tempfile::TempDir,
    args: Vec<String>,
    pg_schema: Option<(String, String)>,
    http: reqwest::Client,
    /// Where the relay texts its verification codes (its webhook posts them here).
    pub codes: std::sync::Arc<privcomm_server::codes::inbox::CodeInbox>,
}

/// CPU time of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok((utime + stime) as f64 / clock_ticks_per_second())
}

/// CPU time of every PostgreSQL process of this machine (server and backends), in
/// seconds: what the database spent, whoever it served. 0 if none can be read.
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .filter_map(|pid| cpu_seconds(pid).ok())
        .sum()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("bad VmRSS")?
        .parse()?;
    Ok(kib * 1024)
}

impl RelayProcess {
    /// Starts a relay on a free loopback port with rate limits out of the way and room for
    /// `max_connections`, and waits until it answers `/health`.
    pub async fn spawn(database: &Database, max_connections: usize) -> anyhow::Result<Self> {
        Self::spawn_instance(database, max_connections, None).await
    }

    /// `spawn`, as the first instance of a cluster on `redis` (named `a`) when given: its
    /// secrets are set, so `spawn_peer` can start more instances of the same database.
    pub async fn spawn_instance(
        database: &Database,
        max_connections: usize,
        redis: Option<&str>,
    ) -> anyhow::Result<Self> {
        let parent = match database {
            Database::Sqlite { parent } => parent.clone(),
            Database::Postgres { .. } => std::env::temp_dir(),
        };
        std::fs::create_dir_all(&parent)?;
        let data_dir = tempfile::Builder::new()
            .prefix("privcomm-bench-relay")
            .tempdir_in(&parent)?;
        let mut pg_schema = None;
        let mut args = vec![
            "--data-dir".to_owned(),
            data_dir.path().display().to_string(),
            "--max-connections".to_owned(),
            max_connections.to_string(),
            "--register-per-hour".to_owned(),
            "100000000".to_owned(),
            "--token-per-minute".to_owned(),
            "100000000".to_owned(),
            "--challenge-per-minute".to_owned(),
            "100000000".to_owned(),
            // Per-account and per-mailbox limits are lifted: one bench account sends and
            // one queues far more than a person would.
            "--send-per-minute".to_owned(),
            "1000000000".to_owned(),
            "--send-kib-per-minute".to_owned(),
            "4000000000".to_owned(),
            "--max-mailbox-messages".to_owned(),
            "1000000000".to_owned(),
            "--max-mailbox-mb".to_owned(),
            "1000000".to_owned(),
            // Every bench socket comes from 127.0.0.1: the per-client cap (64) would refuse
            // all but the first few; the total stays bounded by the connection limit.
            "--max-sockets-per-client".to_owned(),
            "1000000".to_owned(),
            "--account-per-minute".to_owned(),
            "1000000000".to_owned(),
            "--key-lookups-per-hour".to_owned(),
            "1000000000".to_owned(),
            "--prekeys-per-target-per-hour".to_owned(),
            "1000000000".to_owned(),
            "--verification-per-hour".to_owned(),
            "1000000000".to_owned(),
            // With Redis this budget is counted there, across runs: lift it too.
            "--verification-global-per-hour".to_owned(),
            "1000000000".to_owned(),
            "--log".to_owned(),
            "error".to_owned(),
        ];
        let codes = std::sync::Arc::new(
            privcomm_server::codes::inbox::CodeInbox::start()
                .await
                .context("starting the code inbox")?,
        );
        for (name, value) in codes.env() {
            // `PRIVCOMM_CODE_SENDER` → `--code-sender`.
            let flag = name
                .trim_start_matches("PRIVCOMM_")
                .to_lowercase()
                .replace('_', "-");
            args.push(format!("--{flag}"));
            args.push(value);
        }
        if let Database::Postgres { url } = database {
            let schema = format!("bench_{}", Uuid::new_v4().simple());
            pg_exec(url, &format!("CREATE SCHEMA {schema}")).await?;
            let sep = if url.contains('?') { '&' } else { '?' };
            args.push("--database-url".to_owned());
            args.push(format!("{url}{sep}options=-c%20search_path%3D{schema}"));
            // The pool is the relay's default (8: two group commits at once), as an operator
            // runs it, unless `PRIVCOMM_DATABASE_POOL` (which the relay reads) says otherwise.
            pg_schema = Some((url.clone(), schema));
        }
        if let Some(redis) = redis {
            let secret = || Uuid::new_v4().simple().to_string().repeat(2);
            args.extend([
                "--redis-url".to_owned(),
                redis.to_owned(),
                "--jwt-secret".to_owned(),
                secret(),
                "--phone-pepper".to_owned(),
                secret(),
                "--instance-id".to_owned(),
                "a".to_owned(),
            ]);
        }
        let (child, base) = start(&args, data_dir.path()).await?;
        Ok(Self {
            child,
            base,
            data_dir,
            args,
            pg_schema,
            http: reqwest::Client::new(),
            codes,
        })
    }

    /// Another instance of this relay's cluster (same database, Redis and secrets), named
    /// `name`, with a data dir of its own. It leaves the database to this one.
    pub async fn spawn_peer(&self, name: &str) -> anyhow::Result<Self> {
        let data_dir = tempfile::Builder::new()
            .prefix("privcomm-bench-relay")
            .tempdir()?;
        let mut args = self.args.clone();
        for pair in args.chunks_mut(2) {
            match pair {
                [flag, value] if flag == "--data-dir" => {
                    *value = data_dir.path().display().to_string()
                }
                [flag, value] if flag == "--instance-id" => *value = name.to_owned(),
                _ => {}
            }
        }
        let (child, base) = start(&args, data_dir.path()).await?;
        Ok(Self {
            child,
            base,
            data_dir,
            args,
            pg_schema: None,
            http: reqwest::Client::new(),
            codes: self.codes.clone(),
        })
    }

    /// The code the relay texted to `number` (E.164).
    pub async fn code_for(&self, number: &str) -> anyhow::Result<String> {
        self.codes
            .take(number, Duration::from_secs(30))
            .await
            .with_context(|| "no verification code arrived".to_string())
    }

    /// Verifies `number` and registers the core `client` with it.
    pub async fn register(
        &self,
        client: &privcomm_core::Client,
        number: &str,
    ) -> anyhow::Result<Uuid> {
        client.request_verification(number).await?;
        let e164 = privcomm_core::client::phone::normalize(number)?;
        let code = self.code_for(&e164).await?;
        Ok(client.register(number, &code, None).await?)
    }

    /// Stops the relay and starts it again on the same data (a fresh process: no memory
    /// left over from earlier work).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let (child, base) = start(&self.args, self.data_dir.path()).await?;
        self.child = child;
        self.base = base;
        Ok(())
    }

    /// The relay's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://…/ws`.
    pub fn ws_url(&self) -> String {
        format!("{}/ws", self.base.replacen("http://", "ws://", 1))
    }

    /// CPU seconds the relay has used so far.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        cpu_seconds(self.pid())
    }

    /// The relay's resident memory in bytes.
    pub fn rss_bytes(&self) -> anyhow::Result<u64> {
        rss_bytes(self.pid())
    }

    async fn metrics_text(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?)
    }

    /// A value from `/metrics` (the first sample of `name`, labels ignored).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.metrics_text().await?;
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                let key = key.split('{').next()?;
                (key == name).then(|| value.parse::<f64>().ok()).flatten()
            })
            .with_context(|| format!("metric {name} not found"))
    }

    /// The samples of `name` by the value of its label `label`.
    pub async fn metric_by(
        &self,
        name: &str,
        label: &str,
    ) -> anyhow::Result<std::collections::BTreeMap<String, f64>> {
        let text = self.metrics_text().await?;
        let prefix = format!("{label}=\"");
        Ok(text
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
            .filter_map(|l| {
                let (key, value) = l.rsplit_once(' ')?;
                let start = key.find(&prefix)? + prefix.len();
                let end = key[start..].find('"')? + start;
                Some((key[start..end].to_owned(), value.parse().ok()?))
            })
            .collect())
    }

    /// Stops the relay and removes its data.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.kill();
        if let Some((url, schema)) = self.pg_schema.take() {
            pg_exec(&url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await?;
        }
        Ok(())
    }

    /// SIGKILL: the relay stops at once, with no goodbye to anyone.
    pub fn kill_now(&mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn start(args: &[String], data_dir: &Path) -> anyhow::Result<(Child, String)> {
    // Ask the OS for a free port, then hand it to the relay.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::fs::File::create(data_dir.join("relay.log"))?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("relay")
        .args(args)
        .arg("--bind")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .context("starting the relay process")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..600 {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(data_dir.join("relay.log")).unwrap_or_default();
            bail!("the relay exited at start ({status}): {log}");
        }
        if let Ok(resp) = http.get(format!("{base}/health")).send().await {
            if resp.status().is_success() {
                return Ok((child, base));
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    bail!("the relay did not become healthy within 30 s")
}

async fn pg_exec(url: &str, sql: &str) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .with_context(|| "connecting to PostgreSQL".to_string())?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
