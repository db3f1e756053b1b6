//! Helpers shared by the `server_*` integration tests.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use clusterctx::protocol::ClusterInfo;

/// Creates a cluster over HTTP and returns its pin and admin token.
pub async fn create_cluster(client: &reqwest::Client, url: &str) -> (String, String) {
    let response = client
        .post(format!("{url}/api/v1/clusters"))
        .send()
        .await
        .expect("POST /api/v1/clusters");
    assert_eq!(response.status(), 201);
    let info: ClusterInfo = response.json().await.expect("cluster JSON");
    (info.pin, info.admin_token.expect("admin_token"))
}

/// POSTs a key the way agents do; returns the status.
pub async fn post_key(
    client: &reqwest::Client,
    url: &str,
    pin: &str,
    key: &str,
    value: &str,
) -> u16 {
    client
        .post(format!("{url}/api/v1/clusters/{pin}/keys"))
        .json(&serde_json::json!({"key": key, "value": value}))
        .send()
        .await
        .expect("POST key")
        .status()
        .as_u16()
}

/// GETs `url`; returns the status and the body.
pub async fn get_text(client: &reqwest::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().await.expect("GET");
    (
        response.status().as_u16(),
        response.text().await.expect("body"),
    )
}

/// GETs `url` and decodes the JSON body.
pub async fn get_json<T: serde::de::DeserializeOwned>(client: &reqwest::Client, url: &str) -> T {
    client
        .get(url)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("JSON body")
}

/// DELETEs `url` with `token` as the bearer; returns the status.
pub async fn delete_with_token(client: &reqwest::Client, url: &str, token: &str) -> u16 {
    client
        .delete(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("DELETE")
        .status()
        .as_u16()
}

/// A `clusterctx serve` child process.
pub struct ServeProcess {
    pub child: Child,
    pub url: String,
    /// What the child wrote to stderr up to and including the "listening on" line.
    pub stderr_start: String,
    /// Everything the child wrote to stderr after the "listening on" line, collected in the
    /// background (read it after the child has exited).
    pub stderr_rest: std::sync::mpsc::Receiver<String>,
}

impl ServeProcess {
    /// Starts `clusterctx serve --listen 127.0.0.1:0 --db <db> <extra>` and waits for its
    /// "listening on" line to learn the port.
    pub fn start(db: &Path, extra: &[&str]) -> ServeProcess {
        Self::spawn(Command::new(env!("CARGO_BIN_EXE_clusterctx")), db, extra)
    }

    /// The same under the process umask `umask` (e.g. "000"), set by a shell that then
    /// execs the service.
    pub fn start_with_umask(umask: &str, db: &Path, extra: &[&str]) -> ServeProcess {
        let mut shell = Command::new("sh");
        shell
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_clusterctx"));
        Self::spawn(shell, db, extra)
    }

    fn spawn(mut command: Command, db: &Path, extra: &[&str]) -> ServeProcess {
        let mut child = command
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start clusterctx serve");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut seen = String::new();
        let url = loop {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                let status = child.wait().unwrap();
                panic!("clusterctx serve exited ({status}) before listening:\n{seen}");
            }
            seen.push_str(&line);
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut rest = String::new();
            for line in stderr.lines().map_while(Result::ok) {
                rest.push_str(&line);
                rest.push('\n');
            }
            let _ = tx.send(rest);
        });
        ServeProcess {
            child,
            url,
            stderr_start: seen,
            stderr_rest: rx,
        }
    }

    /// SIGKILL: no chance to flush or close anything.
    pub fn kill_9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the child to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("clusterctx serve did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every byte of the SQLite store at `db`: the main file, its write-ahead log and journal if
/// there, to look for what the service must never keep in clear.
pub fn database_bytes(db: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-journal"] {
        if let Ok(bytes) = std::fs::read(format!("{}{suffix}", db.display())) {
            all.extend(bytes);
        }
    }
    all
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}
