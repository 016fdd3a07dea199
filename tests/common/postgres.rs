//! A real PostgreSQL for the tests: `initdb` in a temporary folder as the `postgres` system
//! user, trust authentication on 127.0.0.1 only, a free port, stopped by its pid on drop.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a fresh cluster may take to accept connections.
const START_LIMIT: Duration = Duration::from_secs(30);

pub struct Postgres {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

/// The folder of the newest installed server's programs (Debian keeps them off the PATH).
fn bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("postgresql is installed (make postgres)")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server under /usr/lib/postgresql")
        .1
}

/// Runs a server program as the `postgres` user, as initdb requires (it refuses root).
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(program);
    command
}

impl Postgres {
    /// A new cluster with a database `tollgate`, on a free port.
    pub fn start() -> Postgres {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "tollgate-pg-{}-{}",
            std::process::id(),
            super::free_port()
        ));
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("pg dir");
        // The server refuses a data folder others can read; the socket folder is the same one.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(chown.success(), "chown of {dir:?} to postgres");
        let init = as_postgres(&bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let mut server = Postgres {
            port: super::free_port(),
            dir,
            child: None,
        };
        server.run();
        server.psql("postgres", "CREATE DATABASE tollgate");
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_LIMIT;
        while Instant::now() < deadline {
            let up = TcpStream::connect(("127.0.0.1", self.port)).is_ok();
            if up && self.try_psql("postgres", "SELECT 1") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("postgres did not accept connections on port {}", self.port);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/tollgate", self.port)
    }

    fn try_psql(&self, db: &str, sql: &str) -> bool {
        Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qAtc", sql])
            .arg("-p")
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Runs SQL through psql and returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-qAtc", sql])
            .arg("-p")
            .arg(self.port.to_string())
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server (fast shutdown: sessions are cut, nothing committed is lost).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The server's own pid (runuser, the child here, does not pass signals on); SIGINT
            // is PostgreSQL's fast shutdown.
            let pid_file = self.dir.join("data").join("postmaster.pid");
            let pid = std::fs::read_to_string(pid_file)
                .ok()
                .and_then(|text| text.lines().next().map(str::to_string));
            match pid {
                Some(pid) => {
                    let _ = Command::new("kill").args(["-INT", &pid]).status();
                }
                None => {
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running server");
        self.run();
    }

    /// Starts the server on `port` and waits until it answers. fsync is off: the tests stop
    /// it cleanly, and nothing here survives a power loss anyway.
    fn run(&mut self) {
        let child = as_postgres(&bin_dir().join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-k")
            .arg(&self.dir)
            .args(["-c", "fsync=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        self.wait_ready();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
