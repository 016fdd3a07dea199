//! Data-driven checks that bad configuration is refused with the key's name.

use super::*;

fn with_model_file() -> (tempdir::Dir, String) {
    let dir = tempdir::Dir::new();
    std::fs::write(dir.path().join("m.onnx"), b"not really onnx").unwrap();
    (
        dir,
        "[[models]]\nname = \"m\"\npath = \"m.onnx\"\n".to_string(),
    )
}

/// A throwaway directory removed on drop; avoids a dependency for two tests.
mod tempdir {
    pub struct Dir(std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path =
                std::env::temp_dir().join(format!("tollgate-config-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn check(extra: &str, expected_fragment: Option<&str>) {
    let (dir, model) = with_model_file();
    let text = format!("{extra}\n{model}");
    let result = Config::parse(&text, &dir.path().join("config.toml"));
    match (result, expected_fragment) {
        (Ok(_), None) => {}
        (Err(e), Some(fragment)) => {
            let message = e.to_string();
            assert!(message.contains(fragment), "`{message}` lacks `{fragment}`");
        }
        (Ok(_), Some(fragment)) => panic!("config accepted, expected error with `{fragment}`"),
        (Err(e), None) => panic!("config rejected: {e}"),
    }
}

#[test]
fn the_contract_file_is_accepted() {
    let (dir, _) = with_model_file();
    let contract = include_str!("../../config.toml");
    // The bundled config points at the bundled model; rewrite the path to the temp model.
    let text = contract.replace("models/digits/1/model.onnx", "m.onnx");
    let config = Config::parse(&text, &dir.path().join("config.toml")).unwrap();
    assert_eq!(config.models[0].name, "digits");
    assert_eq!(config.server.max_body_bytes, ByteSize(64 << 20));
}

#[test]
fn bad_values_name_their_key() {
    let cases: &[(&str, Option<&str>)] = &[
        ("", None),
        ("[server]\nmax_body_bytes = \"64MiB\"", None),
        ("[server]\nbogus = 1", Some("bogus")),
        (
            "[server]\nmax_body_bytes = \"64 parsecs\"",
            Some("size unit"),
        ),
        (
            "[server]\nmax_concurrent_requests = 0",
            Some("server.max_concurrent_requests"),
        ),
        (
            "[server]\nworker_threads = 0",
            Some("server.worker_threads"),
        ),
        ("[server]\nworker_threads = 3", None),
        (
            "[deferred]\nprice_factor = 2.0",
            Some("deferred.price_factor"),
        ),
        ("[deferred]\nbatch_rows = 0", Some("deferred.batch_rows")),
        (
            "[deferred]\noff_peak_utc = [\"25:00-01:00\"]",
            Some("off_peak_utc"),
        ),
        ("[deferred]\noff_peak_utc = [\"22:00-06:00\"]", None),
        (
            "[telemetry]\naccess_log_sample_ratio = 1.5",
            Some("telemetry.access_log_sample_ratio"),
        ),
        (
            "[telemetry]\ntrace_sample_ratio = -0.1",
            Some("telemetry.trace_sample_ratio"),
        ),
        (
            "[telemetry]\notlp_endpoint = \"collector:4317\"",
            Some("telemetry.otlp_endpoint"),
        ),
        (
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"",
            None,
        ),
        (
            "[telemetry]\nservice_name = \" \"",
            Some("telemetry.service_name"),
        ),
        (
            "[server]\nheader_read_timeout_ms = 0",
            Some("server.header_read_timeout_ms"),
        ),
        (
            "[server]\nmax_connections = 0",
            Some("server.max_connections"),
        ),
        (
            "[server]\nhttp2_max_concurrent_streams = 0",
            Some("server.http2_max_concurrent_streams"),
        ),
        ("[server]\nkeepalive_interval_ms = 0", None),
        (
            "[server]\nmax_body_bytes = \"2MiB\"\nmax_body_bytes_in_flight = \"1MiB\"",
            Some("server.max_body_bytes_in_flight"),
        ),
        ("[server]\nmax_body_bytes_in_flight = \"64MiB\"", None),
        (
            "[server]\ntls_cert_path = \"cert.pem\"",
            Some("server.tls_key_path"),
        ),
        (
            "[server]\ntls_key_path = \"key.pem\"",
            Some("server.tls_cert_path"),
        ),
        (
            "[server]\ntls_cert_path = \"cert.pem\"\ntls_key_path = \"key.pem\"",
            None,
        ),
        (
            "[server]\nmax_connections = 2\nheader_read_timeout_ms = 500",
            None,
        ),
        ("[server]\nhttp_addr = \"nowhere\"", Some("http_addr")),
        ("[cache]\nttl_seconds = 0", Some("cache.ttl_seconds")),
        ("[cache]\nscope = \"global\"", Some("scope")),
        ("[cache]\nredis_url = \"http://x\"", Some("cache.redis_url")),
        (
            "[cache]\nredis_url = [\"redis://a:1\", \"redis://b:2/4\"]",
            Some("cache.redis_url"),
        ),
        (
            "[cache]\nredis_url = \"redis://u:pw@127.0.0.1:6379/3\"",
            None,
        ),
        ("[fleet]\nredis_url = \"redis//x\"", Some("fleet.redis_url")),
        ("[fleet]\non_redis_down = \"ignore\"", Some("on_redis_down")),
        (
            "[cache]\nredis_secret_env = \"TOLLGATE_TEST_SECRET_THAT_IS_NEVER_SET\"",
            Some("cache.redis_secret_env"),
        ),
        ("[cache]\nbody_memo_entries = 0", None),
        ("[cache]\nmin_uses = 2", None),
        ("[cache]\nmin_uses = 0", Some("cache.min_uses")),
        ("[cache]\nmin_uses = 3", Some("cache.min_uses")),
        (
            "[cache]\nbody_memo_entries = 16777217",
            Some("cache.body_memo_entries"),
        ),
        (
            "[pricing.device_per_hour]\ntpu = 1.0",
            Some("pricing.device_per_hour.tpu"),
        ),
        (
            "[ledger]\ndurability = \"maybe\"",
            Some("unknown variant `maybe`, expected `async` or `sync`"),
        ),
        ("[ledger]\ndurability = \"sync\"", None),
        (
            "[ledger]\nurl = \"postgres://tollgate@db:5432/tollgate\"",
            None,
        ),
        ("[ledger]\nurl = \"mysql://db/x\"", Some("ledger.url")),
        (
            "[ledger]\nurl = \"postgres://u@db:port/x\"",
            Some("ledger.url"),
        ),
        ("[auth]\nrequired = \"yes\"", Some("required")),
        ("[auth]\nrequired = true", Some("auth.required")),
        (
            "[metering]\nallowed_tags = [\"env=prod\"]",
            Some("metering.allowed_tags[0]"),
        ),
        ("[metering]\nallowed_tags = [\"\"]", Some("allowed_tags[0]")),
        (
            "[metering]\nallowed_tags = [\"env\", \"a,b\"]",
            Some("allowed_tags[1]"),
        ),
        ("[metering]\nallowed_tags = [\"env\", \"feature.x\"]", None),
        (
            "[runtime]\nonnxruntime = \"nowhere/libonnxruntime.so.1\"",
            Some("does not exist"),
        ),
        ("[runtime]\nonnxruntime = \".\"", Some("is a directory")),
        ("[runtime]\nonnxruntime = \"m.onnx\"", None),
        ("[runtime]\nonnxruntime = \"auto\"", None),
    ];
    for (extra, expected) in cases {
        check(extra, *expected);
    }
}

fn tenant(name: &str, key: &str, extra: &str) -> String {
    let hash = blake3::hash(key.as_bytes()).to_hex();
    format!("[[tenants]]\nname = \"{name}\"\napi_key_blake3 = \"{hash}\"\n{extra}\n")
}

#[test]
fn tenants_are_one_payer_each() {
    let upper = blake3::hash(b"a").to_hex().to_ascii_uppercase();
    let cases: Vec<(String, Option<&str>)> = vec![
        (tenant("a", "a", "budget_usd = 10.0"), None),
        (tenant("a", "a", "budget_usd = 0.0"), None),
        (
            tenant("a", "a", "budget_usd = -1.0"),
            Some("tenants[0].budget_usd"),
        ),
        (
            tenant("a", "a", "budget_usd = nan"),
            Some("tenants[0].budget_usd"),
        ),
        (
            tenant("a", "a", "") + &tenant("a", "b", ""),
            Some("`tenants[1].name`: tenant `a` is configured twice"),
        ),
        (
            tenant("a", "a", "") + &tenant("b", "a", ""),
            Some("tenant `b` has the same API key hash as tenant `a`"),
        ),
        (
            tenant("a", "a", "")
                + &format!("[[tenants]]\nname = \"b\"\napi_key_blake3 = \"{upper}\"\n"),
            Some("tenants[1].api_key_blake3"),
        ),
        (
            tenant("a", "a", "budget_period = \"week\""),
            Some("unknown variant `week`"),
        ),
        (
            tenant("a", "a", "budget_action = \"shout\""),
            Some("unknown variant `shout`"),
        ),
        (
            tenant(
                "a",
                "a",
                "budget_period = \"day\"\nbudget_action = \"demote\"",
            ),
            None,
        ),
        (tenant("a", "a", "") + "[auth]\nrequired = true\n", None),
    ];
    for (extra, expected) in &cases {
        check(extra, *expected);
    }
}

#[test]
fn bad_model_entries_name_their_key() {
    let (dir, _) = with_model_file();
    let cases: &[(&str, &str)] = &[
        ("name = \"m\"", "models[0].path"),
        ("name = \"m\"\npath = \"missing.onnx\"", "no model file"),
        (
            "name = \"m\"\npath = \"m.onnx\"\ndevice = \"gpu\"",
            "`gpu` is not a device",
        ),
        (
            "name = \"m\"\npath = \"m.onnx\"\ninstances = 0",
            "models[0].instances",
        ),
        (
            "name = \"m\"\npath = \"m.onnx\"\nmax_batch_size = 8\npreferred_batch_sizes = [16]",
            "models[0].preferred_batch_sizes",
        ),
        (
            "name = \"m\"\npath = \"m.onnx\"\ndefault_priority = 9",
            "default_priority",
        ),
        ("name = \"m\"\npath = \"m.onnx\"\nwhatever = 1", "whatever"),
        (
            "name = \"m\"\npath = \"m.onnx\"\ncache_min_uses = 5",
            "models[0].cache_min_uses",
        ),
        (
            "name = \"m\"\npath = \"m.onnx\"\nupstream_model = \"x\"",
            "only applies",
        ),
    ];
    for (body, fragment) in cases {
        let text = format!("[[models]]\n{body}\n");
        let message = Config::parse(&text, &dir.path().join("c.toml"))
            .expect_err(body)
            .to_string();
        assert!(message.contains(fragment), "`{message}` lacks `{fragment}`");
    }
}

#[test]
fn devices_parse() {
    assert_eq!(Device::parse("cpu"), Some(Device::Cpu));
    assert_eq!(Device::parse("cuda:1"), Some(Device::Cuda(1)));
    assert_eq!(Device::parse("cuda:-1"), None);
    assert_eq!(Device::parse("cuda"), None);
}

#[test]
fn every_key_of_the_shared_configuration_contract_is_accepted() {
    let contract =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/ref/config-contract.toml");
    let text = std::fs::read_to_string(&contract).unwrap_or_else(|e| {
        panic!("the configuration contract should sit beside the checkout ({e})")
    });
    let (dir, _) = with_model_file();
    // The contract's placeholders are not valid values; everything else is taken as written.
    let text = text
        .replace(
            "hex of blake3(api key)",
            blake3::hash(b"key").to_hex().as_str(),
        )
        .replace("models/digits/1/model.onnx", "m.onnx");
    let config = Config::parse(&text, &dir.path().join("config.toml")).unwrap();
    assert_eq!(config.tenants[0].budget_action, BudgetAction::Reject);
    assert_eq!(config.models[0].max_queue_size, 1024);
}

#[test]
fn intra_op_spinning_is_off_unless_asked_for() {
    let (dir, model) = with_model_file();
    let parse = |extra: &str| {
        Config::parse(&format!("{model}{extra}"), &dir.path().join("config.toml"))
            .map(|c| c.models[0].intra_op_spinning)
    };
    assert!(!parse("").unwrap());
    assert!(parse("intra_op_spinning = true\n").unwrap());
    assert!(parse("intra_op_spinning = \"yes\"\n").is_err());
}

/// The keys serde accepts in one section, read from its own "unknown field" message (which
/// lists every field), so this follows the structs without a second list to keep.
fn accepted_keys(section: &str) -> Vec<String> {
    let (dir, model) = with_model_file();
    let text = match section {
        "" => format!("zz_unknown = 1\n{model}"),
        "models" => format!("{model}zz_unknown = 1\n"),
        "tenants" => format!(
            "[[tenants]]\nname = \"t\"\napi_key_blake3 = \"{}\"\nzz_unknown = 1\n{model}",
            blake3::hash(b"k").to_hex()
        ),
        _ => format!("[{section}]\nzz_unknown = 1\n{model}"),
    };
    let message = Config::parse(&text, &dir.path().join("config.toml"))
        .expect_err("an unknown key is refused")
        .to_string();
    let listed = message
        .split_once("expected one of ")
        .or_else(|| message.split_once("expected "))
        .unwrap_or_else(|| panic!("no field list in `{message}`"))
        .1;
    listed
        .split(',')
        .filter_map(|item| item.trim().strip_prefix('`')?.split('`').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn config_toml_lists_every_key_the_parser_accepts() {
    let text = include_str!("../../config.toml");
    // Where each section's keys are written: its table header up to the next header (models
    // and tenants are arrays of tables, tenants shown commented out).
    let body = |header: &str| -> String {
        let start = text
            .find(header)
            .unwrap_or_else(|| panic!("config.toml has no `{header}`"));
        let rest = &text[start + header.len()..];
        let end = rest
            .find("\n[")
            .or_else(|| rest.find("\n# [["))
            .unwrap_or(rest.len());
        rest[..end].to_string()
    };
    let sections = [
        ("", "".to_string()),
        ("server", body("[server]")),
        ("runtime", body("[runtime]")),
        ("cache", body("[cache]")),
        (
            "pricing",
            body("[pricing]") + &body("[pricing.device_per_hour]"),
        ),
        ("ledger", body("[ledger]")),
        ("fleet", body("[fleet]")),
        ("metering", body("[metering]")),
        ("alerts", body("[alerts]")),
        ("auth", body("[auth]")),
        ("telemetry", body("[telemetry]")),
        ("deferred", body("[deferred]")),
        ("tenants", body("# [[tenants]]")),
        ("models", body("\n[[models]]\n")),
    ];
    let mut missing = Vec::new();
    for (section, written) in &sections {
        for key in accepted_keys(section) {
            let present = if section.is_empty() {
                text.contains(&format!("[{key}]")) || text.contains(&format!("[[{key}]]"))
            } else {
                key == "device_per_hour"
                    || written.lines().any(|line| {
                        let line = line.trim_start_matches(['#', ' ']);
                        line.starts_with(&format!("{key} ")) || line.starts_with(&format!("{key}="))
                    })
            };
            if !present {
                missing.push(format!("{section}.{key}"));
            }
        }
    }
    assert!(missing.is_empty(), "config.toml does not list: {missing:?}");
}
