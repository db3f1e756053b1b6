//! A throw-away PostgreSQL server for one test: `initdb` in a temporary directory, the server
//! on a free loopback port and a Unix socket in that directory, stopped by PID on drop (killed
//! if it does not stop). PostgreSQL refuses to run as root, so as root (CI) both run as the
//! `postgres` user (set in the child, so the PID is the server's), in a directory chowned to
//! it.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Postgres {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
    /// More `-c` settings of the server.
    options: Vec<String>,
}

/// `program` as the `postgres` user when we are root. Started with setuid in the child, not
/// through runuser, so that the PID we hold is the server's own.
fn as_postgres(program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut command = Command::new(Path::new(BIN).join(program));
    if let Some(user) = postgres_user() {
        command.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        command.env("HOME", &user.dir);
    }
    command
}

fn postgres_user() -> Option<nix::unistd::User> {
    nix::unistd::geteuid().is_root().then(|| {
        nix::unistd::User::from_name("postgres")
            .unwrap()
            .expect("a postgres user (contrib/ci/install-deps installs postgresql)")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Postgres {
    /// initdb and start; waits until it takes connections.
    pub fn start() -> Postgres {
        let mut pg = Postgres::init();
        pg.start_server();
        pg
    }

    /// initdb, and a server that takes TCP connections only over TLS (`hostssl` in
    /// pg_hba.conf) with `cert` and `key`; the Unix socket stays plain, for psql.
    pub fn start_tls(cert: &Path, key: &Path) -> Postgres {
        let mut pg = Postgres::init();
        let data = pg.data();
        for (from, to) in [(cert, "server.crt"), (key, "server.key")] {
            let to = data.join(to);
            std::fs::copy(from, &to).unwrap();
            std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
            if let Some(user) = postgres_user() {
                nix::unistd::chown(&to, Some(user.uid), Some(user.gid)).unwrap();
            }
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        pg.options = vec!["ssl=on".into()];
        pg.start_server();
        pg
    }

    fn init() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("clusterctx-pg-")
            .tempdir()
            .unwrap();
        if let Some(user) = postgres_user() {
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
        }
        let status = as_postgres("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-N",
                "-E",
                "UTF8",
                "--locale=C",
                "-D",
            ])
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run initdb");
        assert!(
            status.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        Postgres {
            dir,
            child: None,
            port: free_port(),
            options: Vec::new(),
        }
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A `postgres://` URL of database `postgres` over TCP.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start_server(&mut self) {
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("port={}", self.port))
            .args(["-c", "fsync=off", "-c", "max_connections=200", "-c"])
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(self.options.iter().flat_map(|o| ["-c", o.as_str()]))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "postgres did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Accepting TCP is not yet accepting sessions: ask it.
        while !self.psql("SELECT 1").status.success() {
            assert!(Instant::now() < deadline, "postgres did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs SQL through psql on the socket.
    pub fn psql(&self, sql: &str) -> std::process::Output {
        self.psql_command()
            .args(["-c", sql])
            .output()
            .expect("run psql")
    }

    /// A psql session kept open: SQL written to its stdin runs in one session (so a session
    /// lock taken in it is held until the session ends).
    pub fn session(&self) -> Child {
        self.psql_command()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run psql")
    }

    /// psql as superuser on the socket, stopping at the first error, unaligned output.
    fn psql_command(&self) -> Command {
        let mut command = Command::new("/usr/bin/psql");
        command
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-At"]);
        command
    }

    /// Stops the server (fast shutdown: sessions are cut); `start_again` brings it back on
    /// the same port and data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.start_server();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(child) = &self.child {
                // Immediate shutdown: a failed test does not wait for a clean one.
                // SAFETY: kill(2) on our own child's pid.
                unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
            }
        }
        self.stop();
    }
}
