//! The `tollgate` command itself: config checking, start-up failures that must be one clear
//! line (never a panic), and a graceful stop on SIGTERM.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tollgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.current_dir(common::repo());
    command
}

fn write_config(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tollgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let text = text.replace("MODEL", common::model_path("digits").to_str().unwrap());
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_config_accepts_the_bundled_config_and_names_bad_keys() {
    let ok = tollgate()
        .args(["check-config", "--config", "config.toml"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("valid (1 model(s))"));

    let bad = write_config(
        "bad.toml",
        "[[models]]\nname = \"d\"\npath = \"MODEL\"\nmax_batch_size = -3\n",
    );
    let out = tollgate()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("max_batch_size"), "{stderr}");
}

#[test]
fn a_missing_onnx_runtime_is_one_clear_line_not_a_panic() {
    let config = write_config(
        "noruntime.toml",
        "[server]\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\n[runtime]\nonnxruntime = \"/nonexistent/libonnxruntime.so.1\"\n[[models]]\nname = \"d\"\npath = \"MODEL\"\n",
    );
    let out = tollgate()
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("make runtime"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A `tollgate serve` that has logged the line `ready` accepts, with the lines before it and a
/// thread that collects the rest of its log.
struct Serving {
    child: std::process::Child,
    before: Vec<String>,
    line: String,
    reader: std::thread::JoinHandle<String>,
}

fn serve(args: &[&str], config: &std::path::Path, ready: impl Fn(&str) -> bool) -> Serving {
    let mut child = tollgate()
        .args(args)
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines, seen) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut log = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            let _ = lines.send(line.clone());
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let mut before = Vec::new();
    loop {
        let Ok(line) = seen.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the gateway did not start serving: {:?}", reader.join());
        };
        if ready(&line) {
            return Serving {
                child,
                before,
                line,
                reader,
            };
        }
        before.push(line);
    }
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let config = write_config(
        "serve.toml",
        "[server]\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\n[[models]]\nname = \"d\"\npath = \"MODEL\"\n",
    );
    let Serving {
        mut child, reader, ..
    } = serve(&["serve", "--config"], &config, |line| {
        line.contains("serving")
    });
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = reader.join().unwrap();
    assert!(status.success(), "exit {status:?}: {log}");
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log that is no terminal: {log}"
    );
}

#[test]
fn every_command_answers_help_and_version() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["check-config", "--help"],
        vec!["hash-key", "--help"],
    ] {
        let out = tollgate().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("Usage: tollgate"), "{args:?}: {stdout}");
    }
    for args in [vec!["--version"], vec!["serve", "--version"]] {
        let out = tollgate().args(&args).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(env!("CARGO_PKG_VERSION")),
            "{args:?}: {stdout}"
        );
    }
}

#[test]
fn hash_key_ignores_one_trailing_newline() {
    let want = blake3::hash(b"s3cret").to_hex().to_string();
    for input in ["s3cret", "s3cret\n", "s3cret\r\n"] {
        let mut child = tollgate()
            .arg("hash-key")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "{input:?}"
        );
    }
    let out = tollgate().args(["hash-key", "s3cret"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), want);
}

#[test]
fn start_up_errors_say_what_is_wrong_once() {
    let cases = [
        (
            None,
            "cannot read /nonexistent/tollgate.toml: No such file or directory",
        ),
        (
            Some("[server]\nhttp_addr = \"localhost:8100\"\n[[models]]\nname = \"d\"\npath = \"MODEL\"\n"),
            "`localhost:8100` is not an IP:port address",
        ),
        (
            Some("[runtime]\nonnxruntime = \"/tmp\"\n[[models]]\nname = \"d\"\npath = \"MODEL\"\n"),
            "/tmp is a directory",
        ),
    ];
    for (index, (text, fragment)) in cases.iter().enumerate() {
        let path = match text {
            Some(text) => write_config(&format!("bad-{index}.toml"), text),
            None => std::path::PathBuf::from("/nonexistent/tollgate.toml"),
        };
        let out = tollgate()
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(fragment), "{stderr}");
        assert!(
            stderr.matches("os error").count() <= 1,
            "the cause twice: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let out = tollgate()
        .args(["serve", "--http-addr", "localhost:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an IP:port address"));
}

/// Logs a collector can read: one JSON object a line, the start-up line saying what is
/// enforced and where records go, and no escape codes. A second gateway on the same ledger is
/// refused while the first runs.
#[test]
fn json_logs_say_what_is_enforced_and_a_second_gateway_on_the_ledger_is_refused() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tollgate-cli-json-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ledger = dir.join("ledger.sqlite");
    let config = write_config(
        "json.toml",
        &format!(
            "[server]\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\n[ledger]\npath = \"{}\"\n[[tenants]]\nname = \"t\"\napi_key_blake3 = \"{}\"\n[auth]\nrequired = true\n[[models]]\nname = \"d\"\npath = \"MODEL\"\n",
            ledger.display(),
            blake3::hash(b"k").to_hex()
        ),
    );
    let mut started = serve(
        &["serve", "--log-format", "json", "--config"],
        &config,
        |line| line.contains("serving"),
    );
    for line in &started.before {
        assert!(
            !line.contains('\u{1b}'),
            "escape codes in a log that is no terminal: {line}"
        );
        let _: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
    }
    let serving: serde_json::Value = serde_json::from_str(&started.line).unwrap();
    assert_eq!(serving["auth"], "required", "{serving}");
    assert_eq!(serving["tenants"], 1, "{serving}");
    assert_eq!(serving["models"], 1, "{serving}");
    assert!(
        serving["ledger"]
            .as_str()
            .is_some_and(|l| l.ends_with("ledger.sqlite")),
        "{serving}"
    );
    let second = tollgate()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(second.status.code(), Some(1));
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(message.contains("in use by another gateway"), "{message}");
    let pid = started.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(started.child.wait().unwrap().success());
    let _ = started.reader.join();
    let _ = std::fs::remove_dir_all(&dir);
}
