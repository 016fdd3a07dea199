//! The deployable fleet: every manifest under deploy/k8s parses and agrees with the config.toml
//! its ConfigMap ships (ports, health paths, shutdown grace, names and labels), that config passes
//! the gateway's own validation, and the Containerfile installs the ONNX Runtime the Makefile pins.

use serde::Deserialize;
use serde_yaml_ng::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

struct Manifest {
    file: PathBuf,
    /// Files directly in deploy/k8s are what `kubectl apply -f deploy/k8s/` applies; examples/
    /// below it are not.
    applied: bool,
    doc: Value,
}

/// Every YAML document under deploy/k8s, examples included, so none is left unparsed.
fn manifests() -> Vec<Manifest> {
    let root = repo().join("deploy/k8s");
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a readable folder entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(!files.is_empty(), "no manifests under {}", root.display());
    let mut manifests = Vec::new();
    for file in files {
        let text = read(&file);
        let applied = file.parent() == Some(root.as_path());
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let doc = Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", file.display()));
            // A stray `---` at the end of a file is an empty document, which kubectl skips too.
            if !doc.is_null() {
                manifests.push(Manifest {
                    file: file.clone(),
                    applied,
                    doc,
                });
            }
        }
    }
    manifests
}

/// The one applied manifest of this kind: two Deployments would leave "the" fleet ambiguous.
fn applied(kind: &str) -> Value {
    let mut found: Vec<Value> = manifests()
        .into_iter()
        .filter(|m| m.applied && m.doc["kind"].as_str() == Some(kind))
        .map(|m| m.doc)
        .collect();
    assert_eq!(found.len(), 1, "deploy/k8s must hold exactly one {kind}");
    found.remove(0)
}

fn text<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what} must be a string, not {value:?}"))
}

fn number(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{what} must be a non-negative integer, not {value:?}"))
}

fn list<'a>(value: &'a Value, what: &str) -> &'a Vec<Value> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("{what} must be a list, not {value:?}"))
}

/// The config.toml the ConfigMap embeds, as the gateway will read it.
fn fleet_config_text() -> String {
    let config_map = applied("ConfigMap");
    text(
        &config_map["data"]["config.toml"],
        "the ConfigMap's data.config.toml",
    )
    .to_string()
}

fn fleet_config() -> toml::Table {
    fleet_config_text()
        .parse()
        .unwrap_or_else(|e| panic!("the ConfigMap's config.toml is not valid TOML: {e}"))
}

fn server_addr(config: &toml::Table, key: &str) -> SocketAddr {
    let value = config["server"][key]
        .as_str()
        .unwrap_or_else(|| panic!("the fleet config must set server.{key}"));
    value
        .parse()
        .unwrap_or_else(|e| panic!("server.{key} = {value:?} is not an IP:port: {e}"))
}

fn gateway_container(deployment: &Value) -> &Value {
    let containers = list(
        &deployment["spec"]["template"]["spec"]["containers"],
        "the Deployment's containers",
    );
    containers
        .iter()
        .find(|c| c["name"].as_str() == Some("tollgate"))
        .expect("the Deployment has a container named tollgate")
}

/// A port given by name (as probes and Services may) or by number, as the container's number.
fn resolve_port(container: &Value, port: &Value, what: &str) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = text(port, what);
    let ports = list(&container["ports"], "the container's ports");
    let found = ports
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .unwrap_or_else(|| {
            panic!("{what} names port `{name}`, which the container does not declare")
        });
    number(&found["containerPort"], "containerPort")
}

fn named_container_port(container: &Value, name: &str) -> u64 {
    resolve_port(container, &Value::from(name), "the container port")
}

fn labels_match(selector: &Value, labels: &Value, what: &str) {
    let selector = selector
        .as_mapping()
        .unwrap_or_else(|| panic!("{what} must be a map of labels, not {selector:?}"));
    assert!(
        !selector.is_empty(),
        "{what} is empty, so it selects every pod"
    );
    for (key, value) in selector {
        assert_eq!(
            &labels[key], value,
            "{what} wants {key:?}: {value:?}, which the Deployment's pods do not carry"
        );
    }
}

#[test]
fn every_manifest_names_its_api_kind_and_name() {
    let all = manifests();
    for manifest in &all {
        let file = manifest.file.display();
        for field in ["apiVersion", "kind"] {
            let value = manifest.doc[field].as_str().unwrap_or("");
            assert!(!value.is_empty(), "{file}: a document without {field}");
        }
        let name = manifest.doc["metadata"]["name"].as_str().unwrap_or("");
        assert!(!name.is_empty(), "{file}: a document without metadata.name");
        // The namespace is the one `kubectl apply -n` names, so the same files serve any.
        assert!(
            manifest.doc["metadata"]["namespace"].is_null(),
            "{file}: {name} fixes its namespace"
        );
    }
    let kinds: Vec<&str> = all
        .iter()
        .filter(|m| m.applied)
        .filter_map(|m| m.doc["kind"].as_str())
        .collect();
    for kind in [
        "Deployment",
        "Service",
        "ConfigMap",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ] {
        assert!(kinds.contains(&kind), "deploy/k8s has no {kind}");
    }
    // An example Secret holds placeholders; applying the folder must never install them.
    assert!(
        !kinds.contains(&"Secret"),
        "a Secret sits directly in deploy/k8s, where `kubectl apply -f deploy/k8s/` would apply it"
    );
}

#[test]
fn deployment_serves_the_fleet_config() {
    let deployment = applied("Deployment");
    let config_map = applied("ConfigMap");
    let config = fleet_config();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = gateway_container(&deployment);

    assert!(
        number(&deployment["spec"]["replicas"], "spec.replicas") >= 2,
        "a fleet needs at least two replicas"
    );
    labels_match(
        &deployment["spec"]["selector"]["matchLabels"],
        &deployment["spec"]["template"]["metadata"]["labels"],
        "the Deployment's selector",
    );

    // Pods must listen beyond their own loopback, on the ports the container declares.
    for (key, port_name) in [("http_addr", "http"), ("grpc_addr", "grpc")] {
        let address = server_addr(&config, key);
        assert!(
            address.ip().is_unspecified(),
            "server.{key} = {address} would not be reachable from outside the pod"
        );
        assert_eq!(
            named_container_port(container, port_name),
            u64::from(address.port()),
            "container port `{port_name}` differs from server.{key}"
        );
    }
    let http_port = u64::from(server_addr(&config, "http_addr").port());

    for (probe, path) in [
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/v2/health/live"),
    ] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        assert_eq!(
            resolve_port(container, &get["port"], probe),
            http_port,
            "{probe} must ask the HTTP port"
        );
    }

    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(http_port.to_string().as_str()),
        "/metrics is served on the HTTP port"
    );

    // The pod must outlive its preStop sleep plus the drain the gateway starts at SIGTERM, and
    // the extra second its servers are given: cut short, requests in flight are lost.
    let grace_ms = config["server"]["shutdown_grace_ms"]
        .as_integer()
        .expect("the fleet config sets server.shutdown_grace_ms");
    let grace_s = u64::try_from(grace_ms)
        .expect("a non-negative grace")
        .div_ceil(1000);
    let pre_stop_s = match &container["lifecycle"]["preStop"] {
        Value::Null => 0,
        hook => {
            let command = list(&hook["exec"]["command"], "the preStop command");
            assert_eq!(command.len(), 2, "preStop is a plain `sleep N`");
            assert_eq!(
                command[0].as_str(),
                Some("sleep"),
                "preStop is a plain `sleep N`"
            );
            text(&command[1], "the preStop sleep")
                .parse::<u64>()
                .expect("the preStop sleep is whole seconds")
        }
    };
    let termination = number(
        &pod["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    assert!(
        termination > pre_stop_s + grace_s + 1,
        "terminationGracePeriodSeconds = {termination} leaves no margin after a {pre_stop_s} s preStop and a {grace_s} s shutdown grace"
    );

    // The CLI is `tollgate serve --config FILE`, and FILE is where the ConfigMap is mounted.
    let args: Vec<&str> = list(&container["args"], "the container's args")
        .iter()
        .map(|a| text(a, "an arg"))
        .collect();
    assert_eq!(args.len(), 3, "args are serve --config FILE, not {args:?}");
    assert_eq!(&args[..2], ["serve", "--config"]);
    let config_name = text(&config_map["metadata"]["name"], "the ConfigMap's name");
    let volume = list(&pod["volumes"], "the pod's volumes")
        .iter()
        .find(|v| v["configMap"]["name"].as_str() == Some(config_name))
        .unwrap_or_else(|| panic!("no volume mounts the ConfigMap {config_name}"));
    let volume_name = text(&volume["name"], "the config volume's name");
    let mount = list(&container["volumeMounts"], "the container's volumeMounts")
        .iter()
        .find(|m| m["name"].as_str() == Some(volume_name))
        .expect("the container mounts the config volume");
    let mounted_file = match mount["subPath"].as_str() {
        Some(_) => text(&mount["mountPath"], "mountPath").to_string(),
        None => format!("{}/config.toml", text(&mount["mountPath"], "mountPath")),
    };
    assert_eq!(
        args[2], mounted_file,
        "--config must name the mounted config.toml"
    );
    // The items (or the whole map) must put the key config.toml at the mounted name.
    if let Some(items) = volume["configMap"]["items"].as_sequence() {
        let path = mount["subPath"].as_str().unwrap_or("config.toml");
        assert!(
            items
                .iter()
                .any(|i| i["key"].as_str() == Some("config.toml")
                    && i["path"].as_str() == Some(path)),
            "the config volume does not project config.toml to {path}"
        );
    }

    // The gateway refuses to start without the variable cache.redis_secret_env names.
    if let Some(variable) = config["cache"]
        .get("redis_secret_env")
        .and_then(|v| v.as_str())
    {
        let env = list(&container["env"], "the container's env");
        let entry = env
            .iter()
            .find(|e| e["name"].as_str() == Some(variable))
            .unwrap_or_else(|| panic!("the container does not set {variable}"));
        assert_ne!(
            entry["valueFrom"]["secretKeyRef"]["optional"].as_bool(),
            Some(true),
            "{variable} is required by the gateway, so its Secret key must not be optional"
        );
    }
}

#[test]
fn service_targets_the_gateway_ports() {
    let deployment = applied("Deployment");
    let service = applied("Service");
    let config = fleet_config();
    let container = gateway_container(&deployment);
    labels_match(
        &service["spec"]["selector"],
        &deployment["spec"]["template"]["metadata"]["labels"],
        "the Service's selector",
    );
    let ports = list(&service["spec"]["ports"], "the Service's ports");
    for (name, key) in [("http", "http_addr"), ("grpc", "grpc_addr")] {
        let port = ports
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("the Service has no port named {name}"));
        assert_eq!(
            resolve_port(container, &port["targetPort"], "the Service's targetPort"),
            u64::from(server_addr(&config, key).port()),
            "the Service's `{name}` port does not reach server.{key}"
        );
    }
}

#[test]
fn autoscaler_scales_the_deployment_on_a_gateway_metric() {
    let deployment = applied("Deployment");
    let hpa = applied("HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"].as_str(), Some("autoscaling/v2"));
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"].as_str(), Some("Deployment"));
    assert_eq!(target["apiVersion"].as_str(), Some("apps/v1"));
    assert_eq!(
        target["name"], deployment["metadata"]["name"],
        "the HPA scales another Deployment"
    );
    let min = number(&hpa["spec"]["minReplicas"], "minReplicas");
    let max = number(&hpa["spec"]["maxReplicas"], "maxReplicas");
    assert!(min >= 2, "minReplicas = {min}: a fleet keeps two replicas");
    assert!(
        max >= min,
        "maxReplicas = {max} is below minReplicas = {min}"
    );

    // The metric must be one the gateway exports, or the adapter has nothing to serve.
    let telemetry = read(&repo().join("src/telemetry.rs"));
    let metrics = list(&hpa["spec"]["metrics"], "the HPA's metrics");
    let pods: Vec<&Value> = metrics
        .iter()
        .filter(|m| m["type"].as_str() == Some("Pods"))
        .collect();
    assert!(!pods.is_empty(), "the HPA has no per-pod (Pods) metric");
    for metric in pods {
        let name = text(&metric["pods"]["metric"]["name"], "the Pods metric's name");
        assert!(
            telemetry.contains(&format!("\"{name}\"")),
            "the HPA reads {name}, which src/telemetry.rs does not name"
        );
        assert_eq!(
            metric["pods"]["target"]["type"].as_str(),
            Some("AverageValue"),
            "a Pods metric is compared as an average value"
        );
    }
}

#[test]
fn the_keda_example_scales_the_deployment_on_a_gateway_metric() {
    let deployment = applied("Deployment");
    let scaled: Vec<Manifest> = manifests()
        .into_iter()
        .filter(|m| m.doc["kind"].as_str() == Some("ScaledObject"))
        .collect();
    assert_eq!(
        scaled.len(),
        1,
        "deploy/k8s/examples has one KEDA ScaledObject"
    );
    let scaled = &scaled[0];
    assert!(
        !scaled.applied,
        "KEDA is an alternative to the HPA, not applied beside it"
    );
    let target = &scaled.doc["spec"]["scaleTargetRef"];
    assert_eq!(target["name"], deployment["metadata"]["name"]);
    assert_eq!(target["kind"].as_str(), Some("Deployment"));
    let telemetry = read(&repo().join("src/telemetry.rs"));
    let triggers = list(
        &scaled.doc["spec"]["triggers"],
        "the ScaledObject's triggers",
    );
    assert!(!triggers.is_empty());
    for trigger in triggers {
        assert_eq!(trigger["type"].as_str(), Some("prometheus"));
        let query = text(&trigger["metadata"]["query"], "the trigger's query");
        let metric = query
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .find(|word| word.starts_with("tollgate_"))
            .unwrap_or_else(|| panic!("`{query}` reads no gateway metric"));
        assert!(
            telemetry.contains(&format!("\"{metric}\"")),
            "the trigger reads {metric}, which src/telemetry.rs does not name"
        );
        let threshold = text(&trigger["metadata"]["threshold"], "the trigger's threshold");
        assert!(
            threshold.parse::<f64>().is_ok_and(|t| t > 0.0),
            "threshold {threshold}"
        );
    }
}

#[test]
fn disruption_budget_covers_the_deployment_pods() {
    let deployment = applied("Deployment");
    let pdb = applied("PodDisruptionBudget");
    labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        &deployment["spec"]["template"]["metadata"]["labels"],
        "the PodDisruptionBudget's selector",
    );
    let replicas = number(&deployment["spec"]["replicas"], "spec.replicas");
    match (
        pdb["spec"]["minAvailable"].as_u64(),
        pdb["spec"]["maxUnavailable"].as_u64(),
    ) {
        // Equal to the replicas, a minimum would block every drain.
        (Some(min), None) => assert!(min >= 1 && min < replicas, "minAvailable = {min}"),
        (None, Some(max)) => assert!(max >= 1 && max < replicas, "maxUnavailable = {max}"),
        _ => {
            panic!("the PodDisruptionBudget sets one of minAvailable or maxUnavailable as a number")
        }
    }
}

#[test]
fn fleet_config_is_valid_for_the_gateway() {
    let config = fleet_config();

    // Replicas share one ledger; a SQLite path would be one file per pod, lost with it.
    let ledger = config["ledger"]
        .as_table()
        .expect("the fleet config has a [ledger] table");
    let url = ledger
        .get("url")
        .and_then(|v| v.as_str())
        .expect("the fleet config sets ledger.url");
    assert!(url.starts_with("postgres://"), "ledger.url = {url:?}");
    assert!(
        !ledger.contains_key("path"),
        "ledger.path beside ledger.url: the fleet's ledger is the PostgreSQL one"
    );
    for table in ["cache", "fleet"] {
        let redis = config[table]
            .get("redis_url")
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("the fleet config sets {table}.redis_url"));
        assert!(redis.starts_with("redis://") || redis.starts_with("rediss://"));
    }

    // The Deployment provides the secret from its Secret; here any value stands in for it.
    if let Some(variable) = config["cache"]
        .get("redis_secret_env")
        .and_then(|v| v.as_str())
    {
        if std::env::var_os(variable).is_none() {
            std::env::set_var(variable, "a stand-in for the Secret's value");
        }
    }
    let text = toml::to_string(&config).expect("a TOML table serialises");
    // The image keeps models/ beside /app/config.toml as the repository keeps them beside its
    // config.toml, so relative model paths resolve the same way here.
    let loaded = tollgate::config::Config::parse(&text, &repo().join("config.toml"))
        .unwrap_or_else(|e| panic!("the gateway would refuse the fleet config: {e}"));
    assert!(loaded.cache.redis_url.is_some() && loaded.fleet.redis_url.is_some());
    assert!(loaded.cache.redis_secret.is_some());
    assert_eq!(loaded.ledger.url.as_deref(), Some(url));
}

/// `NAME := VALUE` from the Makefile, or `ARG NAME=VALUE` from the Containerfile.
fn assignment(text: &str, prefix: &str) -> Option<String> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix(prefix))
        .map(|rest| rest.trim().to_string())
}

#[test]
fn containerfile_ships_the_pinned_onnx_runtime() {
    let containerfile = read(&repo().join("Containerfile"));
    let makefile = read(&repo().join("Makefile"));
    let instructions: Vec<&str> = containerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let stages = instructions
        .iter()
        .filter(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .count();
    assert!(
        stages >= 2,
        "the Containerfile has {stages} stage(s); the build stays out of the image"
    );
    // Every stage the image copies from must exist, or the build stops at the COPY.
    let named: Vec<&str> = instructions
        .iter()
        .filter_map(|l| l.split_once(" AS ").map(|(_, name)| name.trim()))
        .collect();
    for line in &instructions {
        if let Some(rest) = line.strip_prefix("COPY --from=") {
            let stage = rest.split_whitespace().next().unwrap_or("");
            assert!(
                named.contains(&stage),
                "`{line}` copies from a stage the Containerfile does not name"
            );
        }
    }

    let pinned = assignment(&makefile, "ORT_VERSION :=").expect("the Makefile pins ORT_VERSION");
    let installed =
        assignment(&containerfile, "ARG ORT_VERSION=").expect("the Containerfile pins ORT_VERSION");
    assert_eq!(
        installed, pinned,
        "the image's ONNX Runtime differs from the one `make runtime` installs"
    );
    assert!(
        containerfile.contains("onnxruntime==${ORT_VERSION}"),
        "the Containerfile does not install onnxruntime==${{ORT_VERSION}}"
    );
    assert!(
        containerfile.contains("ORT_DYLIB_PATH=")
            && containerfile.contains("cargo build --release --locked"),
        "the Containerfile must build with --locked and point ORT_DYLIB_PATH at the library"
    );
    let user = assignment(&containerfile, "USER ").expect("the image names its user");
    assert!(
        !matches!(user.split(':').next(), Some("0" | "root")),
        "the image runs as root"
    );

    // The ports the image announces are those the fleet config listens on.
    let config = fleet_config();
    let exposed: Vec<u16> = assignment(&containerfile, "EXPOSE ")
        .expect("the Containerfile exposes its ports")
        .split_whitespace()
        .map(|p| p.trim_end_matches("/tcp").parse().expect("a port number"))
        .collect();
    for key in ["http_addr", "grpc_addr"] {
        let port = server_addr(&config, key).port();
        assert!(
            exposed.contains(&port),
            "EXPOSE lacks server.{key}'s port {port}"
        );
    }

    // Without it the build context carries gigabytes of build output.
    let ignore = read(&repo().join(".dockerignore"));
    assert!(
        ignore
            .lines()
            .any(|l| matches!(l.trim(), "target" | "target/" | "/target")),
        ".dockerignore does not leave out target/"
    );
}
