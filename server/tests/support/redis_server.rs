//! A Redis server of a test's own (`redis-server` on a free port, nothing on disk), for
//! tests that stop and start it: never the machine's shared one.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

/// A Redis server on 127.0.0.1, killed when dropped.
pub struct RedisServer {
    port: u16,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let server = Self {
            port,
            child: Mutex::new(None),
        };
        server.start_again();
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port (after `stop`), empty.
    pub fn start_again(&self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/setup.sh installs it)");
        *self.child.lock().expect("lock") = Some(child);
        for _ in 0..100 {
            if self.answers() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    /// Kills the server (as a crash would: no clean shutdown).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().expect("lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `GET key` over a raw connection: the value, or `None` when the key does not exist.
    pub fn get(&self, key: &str) -> Option<String> {
        self.command(&["GET", key])
    }

    /// `SPUBLISH channel message`, as another instance would; returns the subscribers
    /// reached.
    pub fn publish(&self, channel: &str, message: &str) -> i64 {
        self.command(&["SPUBLISH", channel, message])
            .and_then(|n| n.parse().ok())
            .expect("a count")
    }

    /// Runs one command over a raw connection: a bulk, integer or simple string reply's
    /// text, or `None` for a nil reply.
    fn command(&self, args: &[&str]) -> Option<String> {
        use std::io::{BufRead, BufReader, Read, Write};
        let mut stream =
            std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("redis answers");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).expect("write");
        let mut reader = BufReader::new(stream);
        let mut header = String::new();
        reader.read_line(&mut header).expect("reply");
        let header = header.trim_end();
        if let Some(simple) = header.strip_prefix(':').or(header.strip_prefix('+')) {
            return Some(simple.to_owned());
        }
        let len: i64 = header.strip_prefix('$')?.parse().ok()?;
        let len = usize::try_from(len).ok()?;
        let mut value = vec![0u8; len + 2];
        reader.read_exact(&mut value).expect("value");
        value.truncate(len);
        String::from_utf8(value).ok()
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
