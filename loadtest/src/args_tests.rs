//! Table-driven tests for the argument parser: each row is a command line and what it must produce.

use super::*;

fn run(line: &str) -> Result<Command, ArgError> {
    parse(line.split_whitespace().map(String::from))
}

fn config(line: &str) -> Config {
    match run(line) {
        Ok(Command::Run(c)) => *c,
        other => panic!("{line}: {other:?}"),
    }
}

const BASE: &str = "--target 127.0.0.1:8000 --model m";

#[test]
fn good_lines() {
    type Check = fn(&Config) -> bool;
    let cases: &[(&str, Check)] = &[
        ("--concurrency 4", |c| {
            c.load == Load::Closed { concurrency: 4 }
                && c.protocol == Protocol::Http
                && c.duration == Duration::from_secs(30)
                && c.seed == 42
                && c.progress
        }),
        ("--job 500", |c| c.load == Load::Job { requests: 500 }),
        ("--rate 250.5 --arrivals constant", |c| {
            c.load
                == Load::Open {
                    rate: 250.5,
                    arrivals: Arrivals::Constant,
                }
        }),
        ("--rate 10", |c| {
            matches!(
                c.load,
                Load::Open {
                    arrivals: Arrivals::Poisson,
                    ..
                }
            )
        }),
        ("--concurrency 1 --protocol grpc --model-version 2", |c| {
            c.protocol == Protocol::Grpc && c.model_version.as_deref() == Some("2")
        }),
        ("--concurrency=8 --protocol=http-binary", |c| {
            c.protocol == Protocol::HttpBinary
        }),
        (
            "--concurrency 1 --duration 500ms --warmup 2m --timeout 1.5",
            |c| {
                c.duration == Duration::from_millis(500)
                    && c.warmup == Duration::from_secs(120)
                    && c.timeout == Duration::from_millis(1500)
            },
        ),
        (
            "--concurrency 1 --header=X-Tollgate-Tags:env=prod --api-key=k",
            |c| {
                c.headers
                    == vec![
                        ("x-tollgate-tags".to_string(), "env=prod".to_string()),
                        ("authorization".to_string(), "Bearer k".to_string()),
                    ]
            },
        ),
        ("--concurrency 1", |c| c.headers.is_empty()),
        ("--concurrency 1 --requests 1000", |c| {
            c.requests == Some(1000) && c.duration == Duration::from_secs(600)
        }),
        (
            "--concurrency 1 --distinct 5000 --zipf 1.1 --seed 7 --batch-rows 16",
            |c| c.distinct == Some(5000) && c.zipf == 1.1 && c.seed == 7 && c.batch_rows == 16,
        ),
        ("--concurrency 1 --distinct 10 --sequential", |c| {
            c.sequential && c.distinct == Some(10)
        }),
        (
            "--concurrency 1 --json out.json --npy x.npy --verify v.json --no-progress",
            |c| c.json.is_some() && c.npy.is_some() && c.verify.is_some() && !c.progress,
        ),
        (
            "--concurrency 1 --metrics-url http://127.0.0.1:9090/metrics",
            |c| c.metrics_url.as_deref() == Some("http://127.0.0.1:9090/metrics"),
        ),
    ];
    for (extra, check) in cases {
        let line = format!("{BASE} {extra}");
        assert!(check(&config(&line)), "{line}");
    }
    assert_eq!(
        config("--target http://localhost:8000/ --model m --rate 1").target,
        "localhost:8000"
    );
}

#[test]
fn bad_lines() {
    let cases: &[(&str, &str)] = &[
        ("--model m --concurrency 1", "--target"),
        ("--target h:1 --concurrency 1", "--model"),
        ("--target h --model m --concurrency 1", "HOST:PORT"),
        ("--target h:99999 --model m --concurrency 1", "HOST:PORT"),
        ("--target https://h:1 --model m --concurrency 1", "TLS"),
        (BASE, "required"),
        (
            "--target h:1 --model m --job 5 --concurrency 2",
            "--job excludes",
        ),
        ("--target h:1 --model m --job 0", "at least 1"),
        (
            "--target h:1 --model m --concurrency 1 --rate 5",
            "mutually exclusive",
        ),
        ("--target h:1 --model m --concurrency 0", "between"),
        (
            "--target h:1 --model m --concurrency 1 --header=nocolon",
            "NAME: VALUE",
        ),
        (
            "--target h:1 --model m --concurrency 1 --header=:v",
            "not a header name",
        ),
        (
            "--target h:1 --model m --concurrency 1 --header=x:",
            "empty",
        ),
        (
            "--target h:1 --model m --concurrency 1 --header=x-bin:AA",
            "binary",
        ),
        (
            "--target h:1 --model m --concurrency 1 --api-key=k --header=Authorization:x",
            "not both",
        ),
        ("--target h:1 --model m --concurrency many", "number"),
        ("--target h:1 --model m --rate -3", "positive"),
        (
            "--target h:1 --model m --concurrency 1 --arrivals poisson",
            "only applies",
        ),
        (
            "--target h:1 --model m --rate 1 --arrivals bursty",
            "poisson or constant",
        ),
        (
            "--target h:1 --model m --concurrency 1 --protocol soap",
            "--protocol",
        ),
        (
            "--target h:1 --model m --concurrency 1 --duration soon",
            "duration",
        ),
        (
            "--target h:1 --model m --concurrency 1 --duration 0s",
            "positive",
        ),
        (
            "--target h:1 --model m --concurrency 1 --distinct 0",
            "--distinct",
        ),
        ("--target h:1 --model m --concurrency 1 --zipf -1", "--zipf"),
        (
            "--target h:1 --model m --concurrency 1 --sequential --zipf 1",
            "exclude each other",
        ),
        (
            "--target h:1 --model m --concurrency 1 --sequential=yes",
            "takes no value",
        ),
        (
            "--target h:1 --model m --concurrency 1 --batch-rows 0",
            "--batch-rows",
        ),
        (
            "--target h:1 --model m --concurrency 1 --requests 0",
            "--requests",
        ),
        (
            "--target h:1 --model m --concurrency 1 --metrics-url ftp://x",
            "--metrics-url",
        ),
        (
            "--target h:1 --model m --concurrency 1 --bogus 1",
            "unknown flag",
        ),
        ("--target h:1 --model m --concurrency 1 stray", "unexpected"),
        ("--target h:1 --model m --concurrency", "needs a value"),
        (
            "--target h:1 --model m --concurrency 1 --no-progress=yes",
            "no value",
        ),
    ];
    for (line, needle) in cases {
        match run(line) {
            Err(ArgError(msg)) => assert!(msg.contains(needle), "{line}: {msg}"),
            Ok(c) => panic!("{line} should fail, got {c:?}"),
        }
    }
}

#[test]
fn help_wins() {
    assert_eq!(run("--help"), Ok(Command::Help));
    assert_eq!(run("--target x -h"), Ok(Command::Help));
}

#[test]
fn durations() {
    for (text, ms) in [
        ("30s", 30_000),
        ("250ms", 250),
        ("2m", 120_000),
        ("1h", 3_600_000),
        ("3", 3000),
    ] {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_millis(ms)),
            "{text}"
        );
    }
    for bad in ["", "s", "-1s", "1d", "nan"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}
