//! The deployment files in `deploy/`: the Dockerfile, docker-compose.yml and every Kubernetes
//! manifest. Neither Docker nor Kubernetes can run on the development machine or in CI, so the
//! files are parsed here and everything they ask of `byok` is asked of the real binary: each
//! command they run must parse (`byok <command> --help` exits 0), each variable they set for a
//! byok container must be a setting the binary reads (`byok migrate` with it set exits 0, where
//! a misspelt name is a configuration error, exit 64), and the values that must agree across
//! files (shutdown grace and termination grace, probes and ports, the queue namespace and the
//! KEDA stream, the shared output volume) do.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use saphyr::{LoadableYamlNode as _, Scalar, Yaml};
use serde_json::{Map, Value};

use crate::helpers::run;

/// Variables the binary reads besides `BYOK__SECTION__KEY` (README, "Configuration").
const PLAIN_VARIABLES: &[&str] = &[
    "DATABASE_URL",
    "REDIS_URL",
    "ENCRYPTION_KEY",
    "RUST_LOG",
    "BYOK_LOG_FORMAT",
    // The standard AWS variables the video store reads for `output.url = s3://…`.
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
];

/// Defaults of the settings compared below (README, "Configuration").
const DEFAULT_NAMESPACE: &str = "byok";

/// The consumer group every worker reads `{ns}:jobs` with (crates/queue/README.md).
const CONSUMER_GROUP: &str = "workers";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// YAML → JSON values (easier to walk), with YAML merge keys (`<<: *anchor`) as compose uses them.

/// Every document of a (multi-document) YAML file; empty documents are dropped.
fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    let docs = Yaml::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    docs.iter()
        .map(|d| to_json(d, path))
        .filter(|d| !d.is_null())
        .collect()
}

fn to_json(node: &Yaml<'_>, path: &Path) -> Value {
    match node {
        Yaml::Value(scalar) => match scalar {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Bool(*b),
            Scalar::Integer(i) => Value::from(*i),
            Scalar::FloatingPoint(f) => Value::from(f.into_inner()),
            Scalar::String(s) => Value::String(s.to_string()),
        },
        Yaml::Representation(raw, ..) => Value::String(raw.to_string()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(|i| to_json(i, path)).collect()),
        Yaml::Mapping(mapping) => {
            let mut out = Map::new();
            let mut merges = Vec::new();
            for (key, value) in mapping {
                let key = match to_json(key, path) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                if key == "<<" {
                    merges.push(to_json(value, path));
                } else {
                    assert!(
                        out.insert(key.clone(), to_json(value, path)).is_none(),
                        "{}: duplicate key {key}",
                        path.display()
                    );
                }
            }
            // Explicit keys win over merged ones; earlier merged mappings over later ones.
            for merge in merges {
                let sources = match merge {
                    Value::Array(items) => items,
                    other => vec![other],
                };
                for source in sources {
                    let Value::Object(source) = source else {
                        panic!("{}: `<<` must merge a mapping", path.display());
                    };
                    for (key, value) in source {
                        out.entry(key).or_insert(value);
                    }
                }
            }
            Value::Object(out)
        }
        Yaml::Tagged(_, inner) => to_json(inner, path),
        Yaml::Alias(_) | Yaml::BadValue => panic!("{}: unresolvable YAML node", path.display()),
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(Value::as_str)
}

/// A list of strings, or one string split on whitespace (compose's short `command` form).
fn string_list(value: &Value, what: &str) -> Vec<String> {
    match value {
        Value::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .unwrap_or_else(|| panic!("{what}: `{i}` is not a string"))
                    .to_owned()
            })
            .collect(),
        other => panic!("{what}: `{other}` is not a list of strings"),
    }
}

/// A scalar as the string a process would see in its environment.
fn scalar_string(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn duration(value: &str, what: &str) -> Duration {
    humantime::parse_duration(value).unwrap_or_else(|e| panic!("{what}: `{value}`: {e}"))
}

/// Whether an image reference names the byok image (`byok:local`, `registry/…/byok:1.2`).
fn is_byok_image(image: &str) -> bool {
    let name = image.rsplit('/').next().unwrap_or(image);
    name.split([':', '@']).next() == Some("byok")
}

// ---------------------------------------------------------------------------------------------
// What the files ask of the binary, collected first and checked against it together.

/// One byok process a file starts: where, its arguments (after `byok`) and its environment.
#[derive(Debug, Clone)]
struct Process {
    origin: String,
    argv: Vec<String>,
    /// Variable → value, `None` when only known at run time (e.g. a field reference).
    env: BTreeMap<String, Option<String>>,
}

impl Process {
    fn role(&self) -> &str {
        self.argv.first().map(String::as_str).unwrap_or("")
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.env.get(name).and_then(|v| v.as_deref())
    }

    fn namespace(&self) -> &str {
        self.var("BYOK__QUEUE__NAMESPACE")
            .unwrap_or(DEFAULT_NAMESPACE)
    }

    /// `queue.partitions` (1 when not set).
    fn partitions(&self) -> usize {
        self.var("BYOK__QUEUE__PARTITIONS").map_or(1, |n| {
            n.parse()
                .unwrap_or_else(|_| panic!("{}: BYOK__QUEUE__PARTITIONS {n:?}", self.origin))
        })
    }

    /// The streams of the queue's partitions (`docs/queue-engine.md`, "Partitions").
    fn streams(&self) -> Vec<String> {
        let ns = self.namespace();
        (0..self.partitions())
            .map(|p| {
                if p == 0 {
                    format!("{{{ns}}}:jobs")
                } else {
                    format!("{{{ns}:{p}}}:jobs")
                }
            })
            .collect()
    }

    /// `worker.shutdown_grace`, which the deployment files must set explicitly.
    fn shutdown_grace(&self) -> Duration {
        let value = self.var("BYOK__WORKER__SHUTDOWN_GRACE").unwrap_or_else(|| {
            panic!(
                "{}: set BYOK__WORKER__SHUTDOWN_GRACE explicitly, beside the termination grace it must stay below",
                self.origin
            )
        });
        duration(value, &self.origin)
    }

    fn output_dir(&self) -> &str {
        self.var("BYOK__OUTPUT__DIR").unwrap_or_else(|| {
            panic!(
                "{}: set BYOK__OUTPUT__DIR to where the shared volume is mounted",
                self.origin
            )
        })
    }
}

/// Runs `byok <argv> --help` for every command, `byok migrate` with every variable alone and
/// then with each process's whole environment, and fails with the list of what was refused.
async fn check_against_binary(processes: &[Process]) {
    assert!(!processes.is_empty(), "no byok process found");
    let mut failures = Vec::new();
    let sample_ring = format!("1:{}", generated_key().await);
    // A template's placeholder stands for a secret: try a valid value of the same setting.
    // (The URLs are replaced by the test's own servers below.)
    let tried = |p: &Process, name: &str, value: &Option<String>| -> Option<String> {
        match value {
            Some(v) if v.contains("REPLACE") => match name {
                "BYOK__ENCRYPTION__KEYS" => Some(sample_ring.clone()),
                "DATABASE_URL" | "REDIS_URL" => Some(v.clone()),
                "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("sample".to_owned()),
                "BYOK__OUTPUT__URL" => Some(v.replace("REPLACE_WITH_YOUR_BUCKET", "byok-videos")),
                _ => panic!(
                    "{}: {name} is a placeholder the test has no sample value for; add one",
                    p.origin
                ),
            },
            other => other.clone(),
        }
    };

    let mut commands: BTreeMap<Vec<String>, BTreeSet<&str>> = BTreeMap::new();
    let mut variables: BTreeMap<(String, String), BTreeSet<&str>> = BTreeMap::new();
    for p in processes {
        commands
            .entry(p.argv.clone())
            .or_default()
            .insert(&p.origin);
        for (name, value) in &p.env {
            let Some(value) = tried(p, name, value) else {
                failures.push(format!("{}: {name} has no value to try", p.origin));
                continue;
            };
            variables
                .entry((name.clone(), value))
                .or_default()
                .insert(&p.origin);
        }
    }

    let dir = tempfile::tempdir().unwrap();
    for (argv, origins) in &commands {
        let mut args: Vec<&str> = argv.iter().map(String::as_str).collect();
        if !args.iter().any(|a| *a == "--help" || *a == "-h") {
            args.push("--help");
        }
        let out = run(dir.path(), &[], &args).await;
        if out.code != 0 || out.stdout.trim().is_empty() {
            failures.push(format!(
                "`byok {}` (from {origins:?}) is not a command of the binary: exit {}\n{}",
                argv.join(" "),
                out.code,
                out.stderr.trim()
            ));
        }
    }

    for ((name, value), origins) in &variables {
        if let Err(why) = check_variable(name, value).await {
            failures.push(format!("{name} (from {origins:?}): {why}"));
        }
    }

    // Settings fine alone may not be together (a PostgreSQL database needs a Redis queue URL):
    // each process's whole environment, as its container gets it. The servers the files name
    // are not reachable here, so the URLs point at the test's own PostgreSQL and Redis, and
    // the migration really runs.
    let distributed = processes.iter().any(|p| {
        p.var("DATABASE_URL")
            .is_some_and(|u| u.starts_with("postgres"))
    });
    let services = if distributed {
        match (
            byok_testing::test_database().await,
            byok_testing::test_redis().await,
        ) {
            (Some(db), Some(redis)) => Some((db, redis)),
            _ => None,
        }
    } else {
        None
    };
    for p in processes {
        let postgres = p
            .var("DATABASE_URL")
            .is_some_and(|u| u.starts_with("postgres"));
        let mut env = Vec::new();
        for (name, value) in &p.env {
            let value = match (name.as_str(), &services) {
                ("DATABASE_URL", Some((db, _))) if postgres => db.url.clone(),
                ("REDIS_URL", Some((_, redis))) => redis.url.clone(),
                _ => match tried(p, name, value) {
                    Some(v) => v,
                    None => continue,
                },
            };
            env.push((name.clone(), value));
        }
        if postgres && services.is_none() {
            continue; // SKIPPED (or failed, when services are required) above
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), &env, &["migrate"]).await;
        if out.code != 0 {
            failures.push(format!(
                "{}: `byok migrate` with the whole environment exited {}: {}",
                p.origin,
                out.code,
                out.stderr.trim()
            ));
        }
    }

    assert!(
        failures.is_empty(),
        "the deployment files ask for what the binary does not have:\n- {}",
        failures.join("\n- ")
    );
}

/// A variable is fine when the binary reads it: one of the plain names, or a `BYOK__` setting
/// that a real run accepts with the file's value (an unknown key exits 64 naming it).
async fn check_variable(name: &str, value: &str) -> Result<(), String> {
    match name {
        "BYOK_LOG_FORMAT" => {
            return if value.eq_ignore_ascii_case("json") {
                Ok(())
            } else {
                Err(format!(
                    "`{value}`: only `json` changes anything (leave it unset for text)"
                ))
            };
        }
        "RUST_LOG" => {
            return value
                .parse::<tracing_subscriber::filter::Targets>()
                .map(drop)
                .map_err(|e| format!("`{value}` is not a log filter: {e}"));
        }
        _ if PLAIN_VARIABLES.contains(&name) => return Ok(()),
        _ => {}
    }
    let segments: Vec<&str> = name.split("__").collect();
    let well_formed = segments.len() >= 3
        && segments[0] == "BYOK"
        && segments[1..].iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        });
    if !well_formed {
        return Err(
            "not a variable byok reads: BYOK__SECTION__KEY (double underscores, upper case) or one of DATABASE_URL, REDIS_URL, ENCRYPTION_KEY, RUST_LOG, BYOK_LOG_FORMAT".to_owned(),
        );
    }
    // `byok migrate` loads the whole configuration first (unknown keys and bad values are
    // errors, exit 64); on the embedded default it then only creates a SQLite file.
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &[(name, value)], &["migrate"]).await;
    match out.code {
        0 => Ok(()),
        code => Err(format!(
            "`byok migrate` with {name}={value} exited {code}: {}",
            out.stderr.trim()
        )),
    }
}

async fn generated_key() -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &[], &["keys", "generate"]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout.trim().to_owned()
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile.

#[derive(Debug)]
struct Dockerfile {
    /// `ARG NAME=default` before the first stage.
    args: BTreeMap<String, String>,
    /// The instructions of the last (runtime) stage, continuation lines joined.
    runtime: Vec<(String, String)>,
}

fn dockerfile() -> Dockerfile {
    let text = read(&deploy().join("Dockerfile"));
    let mut lines = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') && current.is_empty() || trimmed.is_empty() {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            lines.push(std::mem::take(&mut current));
        }
    }
    let mut args = BTreeMap::new();
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for line in lines {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let instruction = instruction.to_ascii_uppercase();
        let rest = rest.trim().to_owned();
        if instruction == "FROM" {
            stages.push(Vec::new());
        }
        match stages.last_mut() {
            Some(stage) => stage.push((instruction, rest)),
            None if instruction == "ARG" => {
                let (name, default) = rest.split_once('=').unwrap_or((&rest, ""));
                args.insert(name.to_owned(), default.to_owned());
            }
            None => {}
        }
    }
    Dockerfile {
        args,
        runtime: stages.pop().expect("the Dockerfile has a stage"),
    }
}

impl Dockerfile {
    fn last(&self, instruction: &str) -> Option<&str> {
        self.runtime
            .iter()
            .rev()
            .find(|(i, _)| i == instruction)
            .map(|(_, rest)| rest.as_str())
    }

    /// `ENV A=1 B=2` (and the old `ENV A 1`) of the runtime stage.
    fn env(&self) -> BTreeMap<String, Option<String>> {
        let mut env = BTreeMap::new();
        for (_, rest) in self.runtime.iter().filter(|(i, _)| i == "ENV") {
            if rest.contains('=') {
                for pair in rest.split_whitespace() {
                    let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
                    env.insert(k.to_owned(), Some(v.trim_matches('"').to_owned()));
                }
            } else {
                let (k, v) = rest.split_once(' ').expect("ENV KEY VALUE");
                env.insert(k.to_owned(), Some(v.trim().to_owned()));
            }
        }
        env
    }
}

fn exec_form(rest: &str, what: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|e| panic!("Dockerfile {what} must be the exec (JSON) form: {rest}: {e}"))
}

#[tokio::test]
async fn the_image_runs_byok_as_a_non_root_user() {
    let docker = dockerfile();

    let toolchain = read(&repo().join("rust-toolchain.toml"));
    let channel = toolchain
        .lines()
        .find_map(|l| l.trim().strip_prefix("channel"))
        .and_then(|l| l.split('"').nth(1))
        .expect("rust-toolchain.toml names a channel");
    assert_eq!(
        docker.args.get("RUST_VERSION").map(String::as_str),
        Some(channel),
        "the Dockerfile's RUST_VERSION follows rust-toolchain.toml"
    );

    let user = docker.last("USER").expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid != "0" && uid != "root",
        "the image must not run as root: USER {user}"
    );
    assert!(
        docker.last("HEALTHCHECK").is_none(),
        "no HEALTHCHECK: Kubernetes probes /healthz and /readyz"
    );
    let entrypoint = exec_form(docker.last("ENTRYPOINT").expect("ENTRYPOINT"), "ENTRYPOINT");
    assert_eq!(entrypoint, ["byok"], "ENTRYPOINT [\"byok\"]");
    let cmd = exec_form(docker.last("CMD").expect("CMD"), "CMD");

    let ignore = read(&repo().join(".dockerignore"));
    for needed in ["target", ".git", "deploy/byok.env"] {
        assert!(
            ignore.lines().any(|l| l.trim() == needed),
            ".dockerignore keeps {needed} out of the build context"
        );
    }

    check_against_binary(&[Process {
        origin: "deploy/Dockerfile".to_owned(),
        argv: cmd,
        env: docker.env(),
    }])
    .await;
}

// ---------------------------------------------------------------------------------------------
// docker-compose.yml

/// A compose file's `environment`, in its map or its list form.
fn compose_environment(value: &Value, origin: &str) -> BTreeMap<String, Option<String>> {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), (!v.is_null()).then(|| scalar_string(v))))
            .collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                let item = i.as_str().unwrap_or_else(|| panic!("{origin}: {i}"));
                match item.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (item.to_owned(), None),
                }
            })
            .collect(),
        Value::Null => BTreeMap::new(),
        other => panic!("{origin}: environment `{other}`"),
    }
}

/// The variables of an `env_file`. Files holding secrets are not committed: their committed
/// `<file>.example` stands in for them.
fn env_file(path: &Path, origin: &str) -> BTreeMap<String, Option<String>> {
    let example = PathBuf::from(format!("{}.example", path.display()));
    let file = if path.is_file() {
        path.to_path_buf()
    } else {
        assert!(
            example.is_file(),
            "{origin}: neither {} nor {} exists",
            path.display(),
            example.display()
        );
        example
    };
    read(&file)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{}: `{l}` is not KEY=VALUE", file.display()));
            (k.trim().to_owned(), Some(v.trim().to_owned()))
        })
        .collect()
}

/// `volumes:` entries of a service as (source, target).
fn compose_mounts(service: &Value) -> Vec<(String, String)> {
    service
        .get("volumes")
        .and_then(Value::as_array)
        .map(|volumes| {
            volumes
                .iter()
                .map(|v| match v {
                    Value::String(short) => {
                        let mut parts = short.split(':');
                        let source = parts.next().unwrap_or_default().to_owned();
                        let target = parts.next().unwrap_or_default().to_owned();
                        (source, target)
                    }
                    long => (
                        str_at(long, "/source").unwrap_or_default().to_owned(),
                        str_at(long, "/target").unwrap_or_default().to_owned(),
                    ),
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn compose_runs_real_commands_with_real_settings() {
    let path = deploy().join("docker-compose.yml");
    let docs = yaml_documents(&path);
    assert_eq!(docs.len(), 1, "docker-compose.yml is one document");
    let compose = &docs[0];
    let services = compose
        .get("services")
        .and_then(Value::as_object)
        .expect("services");

    // The byok image is built from deploy/Dockerfile by some service, and run by the others.
    let builds_byok = services.values().any(|s| {
        s.get("image")
            .and_then(Value::as_str)
            .is_some_and(is_byok_image)
            && s.get("build").is_some_and(|b| {
                let context = str_at(b, "/context").unwrap_or(".");
                let dockerfile = str_at(b, "/dockerfile").unwrap_or("Dockerfile");
                deploy().join(context).join(dockerfile).is_file()
            })
    });
    assert!(
        builds_byok,
        "a service builds the byok image from deploy/Dockerfile"
    );

    let mut processes = Vec::new();
    let mut by_name = BTreeMap::new();
    for (name, service) in services {
        let origin = format!("docker-compose.yml: services.{name}");
        let image = service.get("image").and_then(Value::as_str).unwrap_or("");
        if !is_byok_image(image) {
            continue;
        }
        if let Some(entrypoint) = service.get("entrypoint") {
            assert_eq!(string_list(entrypoint, &origin), ["byok"], "{origin}");
        }
        let argv = string_list(
            service
                .get("command")
                .unwrap_or_else(|| panic!("{origin}: name the byok command")),
            &origin,
        );
        let mut env = BTreeMap::new();
        if let Some(files) = service.get("env_file") {
            let files = match files {
                Value::Array(items) => items.clone(),
                one => vec![one.clone()],
            };
            for file in files {
                let file = file
                    .as_str()
                    .or_else(|| str_at(&file, "/path"))
                    .unwrap_or_else(|| panic!("{origin}: env_file {file}"));
                env.extend(env_file(&deploy().join(file), &origin));
            }
        }
        if let Some(environment) = service.get("environment") {
            env.extend(compose_environment(environment, &origin));
        }
        let process = Process { origin, argv, env };
        processes.push(process.clone());
        by_name.insert(name.clone(), (process, service));
    }

    let with_role = |role: &str| -> Vec<&(Process, &Value)> {
        by_name.values().filter(|(p, _)| p.role() == role).collect()
    };
    let [(migrate, _)] = with_role("migrate")[..] else {
        panic!("one one-shot `byok migrate` service");
    };
    let migrate_service = by_name
        .iter()
        .find(|(_, (p, _))| p.origin == migrate.origin)
        .map(|(name, _)| name.clone())
        .unwrap();
    let apis = with_role("api");
    let workers = with_role("worker");
    assert_eq!(apis.len(), 1, "one API service");
    assert_eq!(workers.len(), 1, "one worker service");
    let (api, api_service) = apis[0];
    let (worker, worker_service) = workers[0];
    assert_eq!(
        worker_service
            .pointer("/deploy/replicas")
            .and_then(Value::as_i64),
        Some(2),
        "two workers"
    );

    for (process, service) in [(api, api_service), (worker, worker_service)] {
        let origin = &process.origin;
        // Started only once the migration succeeded.
        assert_eq!(
            str_at(service, &format!("/depends_on/{migrate_service}/condition")),
            Some("service_completed_successfully"),
            "{origin}: depends on {migrate_service} completing"
        );
        // Compose's default stop grace is 10 s, then SIGKILL.
        let stop = duration(
            str_at(service, "/stop_grace_period")
                .unwrap_or_else(|| panic!("{origin}: set stop_grace_period")),
            origin,
        );
        assert!(
            stop > process.shutdown_grace(),
            "{origin}: stop_grace_period {stop:?} must exceed worker.shutdown_grace {:?}",
            process.shutdown_grace()
        );
        assert!(
            process.var("BYOK__ENCRYPTION__KEYS").is_some()
                || process.var("ENCRYPTION_KEY").is_some(),
            "{origin}: the distributed shape needs the key ring"
        );
    }

    // The API listens beyond the container's loopback, on the port it publishes.
    let listen = api.var("BYOK__API__LISTEN").expect("BYOK__API__LISTEN");
    let port = listen.rsplit(':').next().unwrap();
    let published = api_service
        .get("ports")
        .map(|p| string_list(p, &api.origin))
        .unwrap_or_default();
    assert!(
        listen.starts_with("0.0.0.0:")
            && published.iter().any(|p| p.ends_with(&format!(":{port}"))),
        "{}: listens on {listen} and publishes it ({published:?})",
        api.origin
    );
    assert!(
        worker.var("BYOK__WORKER__METRICS_LISTEN").is_some(),
        "{}: workers serve /metrics on worker.metrics_listen",
        worker.origin
    );

    // One queue, one output volume.
    assert_eq!(api.namespace(), worker.namespace(), "one queue namespace");
    let volume_at = |process: &Process, service: &Value| {
        let dir = process.output_dir();
        compose_mounts(service)
            .into_iter()
            .find(|(_, target)| target == dir)
            .map(|(source, _)| source)
            .unwrap_or_else(|| panic!("{}: nothing is mounted at {dir}", process.origin))
    };
    let api_volume = volume_at(api, api_service);
    assert_eq!(
        api_volume,
        volume_at(worker, worker_service),
        "the API streams the videos the workers write: one shared volume at output.dir"
    );
    assert!(
        compose.pointer(&format!("/volumes/{api_volume}")).is_some(),
        "{api_volume} is a named volume"
    );

    // Redis as a queue: durable (every acknowledged write fsynced, docs/chaos.md), never
    // evicting.
    let redis = services.get("redis").expect("a redis service");
    let command = string_list(redis.get("command").expect("redis command"), "redis");
    for pair in [
        ["--appendonly", "yes"],
        ["--appendfsync", "always"],
        ["--maxmemory-policy", "noeviction"],
    ] {
        assert!(
            command.windows(2).any(|w| w == pair),
            "redis runs with {pair:?}: {command:?}"
        );
    }

    check_against_binary(&processes).await;
}

// ---------------------------------------------------------------------------------------------
// deploy/k8s/

/// Every manifest document of deploy/k8s, with the file it came from.
fn k8s_documents() -> Vec<(String, Value)> {
    let dir = deploy().join("k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            continue;
        }
        for doc in yaml_documents(&file) {
            let kind = str_at(&doc, "/kind").unwrap_or("?");
            let object = str_at(&doc, "/metadata/name").unwrap_or("?");
            assert!(
                str_at(&doc, "/apiVersion").is_some() && kind != "?" && object != "?",
                "{name}: every document has apiVersion, kind and metadata.name"
            );
            docs.push((format!("k8s/{name}: {kind}/{object}"), doc));
        }
    }
    assert!(!docs.is_empty(), "deploy/k8s holds manifests");
    docs
}

/// The Kubernetes objects, indexed.
struct Cluster {
    docs: Vec<(String, Value)>,
}

/// A byok container in a workload.
struct K8sProcess<'a> {
    process: Process,
    workload: &'a Value,
    pod: &'a Value,
    container: &'a Value,
}

impl Cluster {
    fn load() -> Cluster {
        Cluster {
            docs: k8s_documents(),
        }
    }

    /// deploy/k8s in the shared-volume mode: every manifest of deploy/k8s/shared-volume
    /// that names an object of deploy/k8s is a strategic-merge patch of it (`kubectl
    /// patch --patch-file`); the others are new objects (`kubectl apply -f`).
    fn load_shared_volume() -> Cluster {
        let mut docs = k8s_documents();
        let dir = deploy().join("k8s").join("shared-volume");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            for doc in yaml_documents(&file) {
                let kind = str_at(&doc, "/kind").unwrap_or("?").to_owned();
                let object = str_at(&doc, "/metadata/name").unwrap_or("?").to_owned();
                let target = docs.iter_mut().find(|(_, d)| {
                    str_at(d, "/kind") == Some(kind.as_str())
                        && str_at(d, "/metadata/name") == Some(object.as_str())
                });
                match target {
                    Some((origin, target)) => {
                        strategic_merge(target, &doc);
                        origin.push_str(&format!(" + shared-volume/{name}"));
                    }
                    None => {
                        docs.push((format!("k8s/shared-volume/{name}: {kind}/{object}"), doc));
                    }
                }
            }
        }
        Cluster { docs }
    }

    fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.docs
            .iter()
            .filter(move |(_, d)| str_at(d, "/kind") == Some(kind))
            .map(|(o, d)| (o.as_str(), d))
    }

    fn named<'a>(&'a self, kind: &'a str, name: &str) -> Option<&'a Value> {
        self.of_kind(kind)
            .find(|(_, d)| str_at(d, "/metadata/name") == Some(name))
            .map(|(_, d)| d)
    }

    /// The keys and values of a ConfigMap's `data` or a Secret's `stringData` and `data`.
    fn entries(&self, kind: &str, name: &str, origin: &str) -> BTreeMap<String, String> {
        let object = self
            .named(kind, name)
            .unwrap_or_else(|| panic!("{origin}: {kind} {name} is not in deploy/k8s"));
        let mut out = BTreeMap::new();
        if let Some(data) = object.get("data").and_then(Value::as_object) {
            for (k, v) in data {
                let v = scalar_string(v);
                let v = if kind == "Secret" {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(v.as_bytes())
                        .unwrap_or_else(|e| panic!("{kind} {name}: data.{k}: {e}"));
                    String::from_utf8(bytes).unwrap()
                } else {
                    v
                };
                out.insert(k.clone(), v);
            }
        }
        if let Some(data) = object.get("stringData").and_then(Value::as_object) {
            for (k, v) in data {
                out.insert(k.clone(), scalar_string(v));
            }
        }
        out
    }

    /// A container's environment as the kubelet builds it: `envFrom` first, `env` over it.
    fn environment(&self, container: &Value, origin: &str) -> BTreeMap<String, Option<String>> {
        let mut env = BTreeMap::new();
        for from in container
            .get("envFrom")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let prefix = str_at(from, "/prefix").unwrap_or("");
            let (kind, name) = if let Some(name) = str_at(from, "/configMapRef/name") {
                ("ConfigMap", name)
            } else if let Some(name) = str_at(from, "/secretRef/name") {
                ("Secret", name)
            } else {
                panic!("{origin}: envFrom {from}");
            };
            for (k, v) in self.entries(kind, name, origin) {
                env.insert(format!("{prefix}{k}"), Some(v));
            }
        }
        for var in container
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = str_at(var, "/name").unwrap_or_else(|| panic!("{origin}: env {var}"));
            let value = if let Some(value) = var.get("value") {
                // The API server takes strings only: `value: 64` is rejected, `"64"` is not.
                let value = value.as_str().unwrap_or_else(|| {
                    panic!("{origin}: env {name}: `{value}` must be a quoted string")
                });
                Some(value.to_owned())
            } else if let Some(r) = var.pointer("/valueFrom/secretKeyRef") {
                let (secret, key) = (str_at(r, "/name").unwrap(), str_at(r, "/key").unwrap());
                let value = self.entries("Secret", secret, origin).remove(key);
                Some(value.unwrap_or_else(|| {
                    panic!("{origin}: env {name}: Secret {secret} has no {key}")
                }))
            } else if let Some(r) = var.pointer("/valueFrom/configMapKeyRef") {
                let (map, key) = (str_at(r, "/name").unwrap(), str_at(r, "/key").unwrap());
                let value = self.entries("ConfigMap", map, origin).remove(key);
                Some(value.unwrap_or_else(|| {
                    panic!("{origin}: env {name}: ConfigMap {map} has no {key}")
                }))
            } else {
                None
            };
            env.insert(name.to_owned(), value);
        }
        env
    }

    /// Every byok container of every workload (Deployment, Job, ...), init containers too.
    fn processes(&self) -> Vec<K8sProcess<'_>> {
        let mut out = Vec::new();
        for (origin, doc) in &self.docs {
            let pod = match str_at(doc, "/kind") {
                Some("Deployment" | "StatefulSet" | "DaemonSet" | "Job" | "ReplicaSet") => {
                    doc.pointer("/spec/template/spec")
                }
                Some("CronJob") => doc.pointer("/spec/jobTemplate/spec/template/spec"),
                Some("Pod") => doc.get("spec"),
                _ => None,
            };
            let Some(pod) = pod else { continue };
            for list in ["initContainers", "containers"] {
                for container in pod
                    .get(list)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let name = str_at(container, "/name").unwrap_or("?");
                    let origin = format!("{origin} container {name}");
                    let image = str_at(container, "/image").unwrap_or("");
                    if !is_byok_image(image) {
                        continue;
                    }
                    // No `command`: the image's ENTRYPOINT (byok) runs with `args`.
                    let mut argv = Vec::new();
                    if let Some(command) = container.get("command") {
                        let command = string_list(command, &origin);
                        assert!(
                            command
                                .first()
                                .is_some_and(|c| c == "byok" || c.ends_with("/byok")),
                            "{origin}: command must run byok: {command:?}"
                        );
                        argv.extend(command.into_iter().skip(1));
                    }
                    if let Some(args) = container.get("args") {
                        argv.extend(string_list(args, &origin));
                    }
                    let env = self.environment(container, &origin);
                    out.push(K8sProcess {
                        process: Process { origin, argv, env },
                        workload: doc,
                        pod,
                        container,
                    });
                }
            }
        }
        out
    }
}

/// `kubectl patch`'s strategic merge, as far as these manifests need it: maps merge key by
/// key, `null` deletes a key, lists of maps with a `name` merge item by item on the name,
/// other lists are replaced.
fn strategic_merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else if let Some(existing) = target.get_mut(key) {
                    strategic_merge(existing, value);
                } else {
                    target.insert(key.clone(), value.clone());
                }
            }
        }
        (Value::Array(target), Value::Array(patch))
            if patch.iter().all(|item| item.get("name").is_some()) =>
        {
            for item in patch {
                let name = item.get("name");
                match target.iter_mut().find(|t| t.get("name") == name) {
                    Some(existing) => strategic_merge(existing, item),
                    None => target.push(item.clone()),
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// Does `selector` (`matchLabels` or a Service's plain map) select pods labelled `labels`?
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector
        .get("matchLabels")
        .unwrap_or(selector)
        .as_object()
        .filter(|m| !m.is_empty());
    wanted.is_some_and(|wanted| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// The port a probe or Service names, as a number: a container port's name, or a number.
fn port_number(container: &Value, port: &Value, origin: &str) -> i64 {
    if let Some(n) = port.as_i64() {
        return n;
    }
    let name = port
        .as_str()
        .unwrap_or_else(|| panic!("{origin}: port {port}"));
    container
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| str_at(p, "/name") == Some(name))
        .and_then(|p| p.get("containerPort").and_then(Value::as_i64))
        .unwrap_or_else(|| panic!("{origin}: no container port named {name}"))
}

fn listen_port(address: &str, origin: &str) -> i64 {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{origin}: `{address}` is not host:port"))
}

/// The PVC mounted at `dir` in a pod's container.
fn claim_at<'a>(k: &'a K8sProcess<'_>, dir: &str) -> &'a str {
    let origin = &k.process.origin;
    let volume = k
        .container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|m| str_at(m, "/mountPath") == Some(dir))
        .and_then(|m| str_at(m, "/name"))
        .unwrap_or_else(|| panic!("{origin}: nothing is mounted at output.dir {dir}"));
    k.pod
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| str_at(v, "/name") == Some(volume))
        .and_then(|v| str_at(v, "/persistentVolumeClaim/claimName"))
        .unwrap_or_else(|| panic!("{origin}: volume {volume} is not a PersistentVolumeClaim"))
}

#[tokio::test]
async fn kubernetes_manifests_run_real_commands_with_real_settings() {
    let cluster = Cluster::load();

    // One namespace for everything namespaced.
    let namespaces: Vec<&str> = cluster
        .of_kind("Namespace")
        .filter_map(|(_, d)| str_at(d, "/metadata/name"))
        .collect();
    for (origin, doc) in &cluster.docs {
        if str_at(doc, "/kind") != Some("Namespace") {
            let ns = str_at(doc, "/metadata/namespace");
            assert!(
                ns.is_some_and(|ns| namespaces.contains(&ns)),
                "{origin}: metadata.namespace must be one of {namespaces:?}"
            );
        }
    }

    let processes = cluster.processes();
    let with_role = |role: &str| -> Vec<&K8sProcess<'_>> {
        processes
            .iter()
            .filter(|k| k.process.role() == role)
            .collect()
    };
    let [migrate] = with_role("migrate")[..] else {
        panic!("one `byok migrate` container (the migration Job)");
    };
    assert_eq!(
        str_at(migrate.workload, "/kind"),
        Some("Job"),
        "{}: the migration runs to completion as a Job",
        migrate.process.origin
    );
    let [api] = with_role("api")[..] else {
        panic!("one `byok api` Deployment");
    };
    let [worker] = with_role("worker")[..] else {
        panic!("one `byok worker` Deployment");
    };

    for k in [api, worker] {
        let origin = &k.process.origin;
        assert_eq!(str_at(k.workload, "/kind"), Some("Deployment"), "{origin}");
        // The kubelet's default is 30 s; then SIGKILL.
        let termination = k
            .pod
            .get("terminationGracePeriodSeconds")
            .map(|v| v.as_u64().expect("terminationGracePeriodSeconds"))
            .unwrap_or(30);
        let grace = k.process.shutdown_grace();
        assert!(
            Duration::from_secs(termination) > grace,
            "{origin}: terminationGracePeriodSeconds {termination} must exceed worker.shutdown_grace {grace:?}"
        );
        // Non-root, as the image is.
        assert_eq!(
            k.pod.pointer("/securityContext/runAsNonRoot"),
            Some(&Value::Bool(true)),
            "{origin}: runAsNonRoot"
        );
        assert!(
            k.container.pointer("/resources/requests").is_some()
                && k.container.pointer("/resources/limits").is_some(),
            "{origin}: resource requests and limits"
        );
        assert!(
            k.process.var("BYOK__ENCRYPTION__KEYS").is_some()
                || k.process.var("ENCRYPTION_KEY").is_some(),
            "{origin}: the distributed shape needs the key ring"
        );
        // Voluntary disruptions are budgeted.
        let labels = k
            .workload
            .pointer("/spec/template/metadata/labels")
            .unwrap();
        assert!(
            cluster
                .of_kind("PodDisruptionBudget")
                .any(|(_, pdb)| selects(pdb.pointer("/spec/selector").unwrap(), labels)),
            "{origin}: a PodDisruptionBudget covers these pods"
        );
    }

    // The API: readiness on /readyz, liveness on /healthz, both on the port it listens on,
    // and a Service in front of it.
    let origin = &api.process.origin;
    let listen = api
        .process
        .var("BYOK__API__LISTEN")
        .unwrap_or_else(|| panic!("{origin}: set BYOK__API__LISTEN"));
    assert!(
        listen.starts_with("0.0.0.0:") || listen.starts_with("[::]:"),
        "{origin}: the API must listen beyond the pod's loopback: {listen}"
    );
    let port = listen_port(listen, origin);
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = api
            .container
            .pointer(&format!("/{probe}/httpGet"))
            .unwrap_or_else(|| panic!("{origin}: an HTTP {probe}"));
        assert_eq!(str_at(get, "/path"), Some(path), "{origin}: {probe} path");
        assert_eq!(
            port_number(api.container, get.get("port").unwrap(), origin),
            port,
            "{origin}: {probe} on the API's port"
        );
    }
    let api_labels = api
        .workload
        .pointer("/spec/template/metadata/labels")
        .unwrap();
    let service = cluster
        .of_kind("Service")
        .map(|(_, s)| s)
        .find(|s| selects(s.pointer("/spec/selector").unwrap(), api_labels))
        .unwrap_or_else(|| panic!("a Service selects the API pods"));
    for p in service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .unwrap()
    {
        let target = p.get("targetPort").or_else(|| p.get("port")).unwrap();
        assert_eq!(
            port_number(api.container, target, origin),
            port,
            "the Service forwards to the API's port"
        );
    }

    // The worker serves /metrics on worker.metrics_listen, on a declared container port.
    let origin = &worker.process.origin;
    let metrics = worker
        .process
        .var("BYOK__WORKER__METRICS_LISTEN")
        .unwrap_or_else(|| panic!("{origin}: set BYOK__WORKER__METRICS_LISTEN"));
    let metrics_port = listen_port(metrics, origin);
    assert!(
        worker
            .container
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|p| p.get("containerPort").and_then(Value::as_i64) == Some(metrics_port)),
        "{origin}: declares the metrics port {metrics_port}"
    );

    // One queue namespace; the videos in one bucket, and no volume shared between pods.
    assert_eq!(
        api.process.namespace(),
        worker.process.namespace(),
        "the API pushes to the queue the workers read"
    );
    for k in [api, worker] {
        let origin = &k.process.origin;
        let url = k
            .process
            .var("BYOK__OUTPUT__URL")
            .unwrap_or_else(|| panic!("{origin}: set BYOK__OUTPUT__URL to the bucket"));
        assert!(url.starts_with("s3://"), "{origin}: output.url {url}");
        for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"] {
            assert!(
                k.process.var(var).is_some(),
                "{origin}: {var} for the bucket"
            );
        }
        assert!(
            k.pod
                .get("volumes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .all(|v| v.get("persistentVolumeClaim").is_none()),
            "{origin}: with object storage no pod mounts a claim"
        );
    }
    assert_eq!(
        api.process.var("BYOK__OUTPUT__URL"),
        worker.process.var("BYOK__OUTPUT__URL"),
        "the API serves the videos the workers store: one bucket"
    );
    assert_eq!(cluster.of_kind("PersistentVolumeClaim").count(), 0);

    let processes: Vec<Process> = processes.iter().map(|k| k.process.clone()).collect();
    check_against_binary(&processes).await;
}

/// The shared-volume mode: deploy/k8s with the files of deploy/k8s/shared-volume applied as
/// `kubectl apply` (the claim) and `kubectl patch` (strategic merge) would.
#[tokio::test]
async fn the_shared_volume_mode_mounts_one_read_write_many_claim_at_output_dir() {
    let cluster = Cluster::load_shared_volume();
    let processes = cluster.processes();
    let role = |role: &str| {
        processes
            .iter()
            .find(|k| k.process.role() == role)
            .unwrap_or_else(|| panic!("a {role} Deployment"))
    };
    let (api, worker) = (role("api"), role("worker"));
    for k in [api, worker] {
        assert!(
            k.process.var("BYOK__OUTPUT__URL").is_none(),
            "{}: no bucket in the shared-volume mode",
            k.process.origin
        );
    }
    let claim = claim_at(api, api.process.output_dir());
    assert_eq!(
        claim,
        claim_at(worker, worker.process.output_dir()),
        "the API streams the videos the workers write: one claim at output.dir"
    );
    let pvc = cluster
        .named("PersistentVolumeClaim", claim)
        .unwrap_or_else(|| panic!("PersistentVolumeClaim {claim} is in deploy/k8s/shared-volume"));
    assert!(
        pvc.pointer("/spec/accessModes")
            .and_then(Value::as_array)
            .is_some_and(|m| m.iter().any(|m| m == "ReadWriteMany")),
        "{claim}: pods on many nodes mount it: ReadWriteMany"
    );
    let processes: Vec<Process> = processes.iter().map(|k| k.process.clone()).collect();
    check_against_binary(&processes).await;
}

#[test]
fn keda_scales_the_worker_deployment_on_the_total_of_its_partitions() {
    let cluster = Cluster::load();
    let processes = cluster.processes();
    let worker = processes
        .iter()
        .find(|k| k.process.role() == "worker")
        .expect("a worker Deployment");
    let worker_name = str_at(worker.workload, "/metadata/name").unwrap();
    // The API pushes into every partition it is set to: the workers must agree on the count.
    for process in processes
        .iter()
        .filter(|k| matches!(k.process.role(), "api" | "worker"))
    {
        assert_eq!(
            process.process.partitions(),
            worker.process.partitions(),
            "{}: BYOK__QUEUE__PARTITIONS as the workers have it",
            process.process.origin
        );
    }
    let streams = worker.process.streams();

    let scaled: Vec<(&str, &Value)> = cluster.of_kind("ScaledObject").collect();
    let [(origin, scaled)] = scaled[..] else {
        panic!("one KEDA ScaledObject");
    };
    assert_eq!(
        str_at(scaled, "/spec/scaleTargetRef/name"),
        Some(worker_name),
        "{origin}: scales the worker Deployment"
    );
    assert_eq!(
        str_at(scaled, "/spec/scaleTargetRef/kind").unwrap_or("Deployment"),
        "Deployment",
        "{origin}"
    );
    // KEDA's default minimum is 0, but workers are what promote delayed items (the next poll
    // of a running job): with none, nothing would ever become due again.
    let min = scaled
        .pointer("/spec/minReplicaCount")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    assert!(min >= 1, "{origin}: minReplicaCount must be at least 1");
    assert!(
        worker.workload.pointer("/spec/replicas").is_none(),
        "the worker Deployment leaves `replicas` to KEDA (re-applying would reset it)"
    );

    let triggers = scaled.pointer("/spec/triggers").and_then(Value::as_array);
    let triggers = triggers.unwrap_or_else(|| panic!("{origin}: triggers"));
    let mut streams_watched: Vec<&str> = triggers
        .iter()
        .filter_map(|t| str_at(t, "/metadata/stream"))
        .collect();
    streams_watched.sort_unstable();
    let mut want: Vec<&str> = streams.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(
        streams_watched,
        want,
        "{origin}: one trigger per partition's stream (queue.namespace {}, queue.partitions {})",
        worker.process.namespace(),
        worker.process.partitions()
    );
    if triggers.len() > 1 {
        // Several triggers: the HPA would follow the largest alone; the formula adds them up.
        let names: Vec<&str> = triggers
            .iter()
            .map(|t| str_at(t, "/name").unwrap_or_else(|| panic!("{origin}: every trigger named")))
            .collect();
        let formula = str_at(scaled, "/spec/advanced/scalingModifiers/formula")
            .unwrap_or_else(|| panic!("{origin}: scalingModifiers.formula sums the partitions"));
        let mut terms: Vec<&str> = formula.split('+').map(str::trim).collect();
        terms.sort_unstable();
        let mut names_sorted = names.clone();
        names_sorted.sort_unstable();
        assert_eq!(
            terms, names_sorted,
            "{origin}: the formula is the sum of every trigger"
        );
        assert!(
            str_at(scaled, "/spec/advanced/scalingModifiers/target")
                .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0)),
            "{origin}: a scalingModifiers target (a quoted number)"
        );
    }
    for trigger in triggers {
        let kind = str_at(trigger, "/type").unwrap_or("");
        assert!(
            matches!(
                kind,
                "redis-streams" | "redis-cluster-streams" | "redis-sentinel-streams"
            ),
            "{origin}: a redis streams trigger, not {kind}"
        );
        let meta = trigger.get("metadata").unwrap();
        assert_eq!(
            str_at(meta, "/consumerGroup"),
            Some(CONSUMER_GROUP),
            "{origin}: the workers' consumer group"
        );
        // With the entries workers delete after acknowledging, Redis often cannot say a group's
        // lag (nil), which KEDA reads as 0: it would scale down under a backlog.
        assert!(
            meta.get("lagCount").is_none(),
            "{origin}: lagCount is unreliable on this queue; use pendingEntriesCount"
        );
        assert!(
            str_at(meta, "/pendingEntriesCount")
                .is_some_and(|n| n.parse::<u32>().is_ok_and(|n| n > 0)),
            "{origin}: a pendingEntriesCount target (a quoted number)"
        );
        if let Some(auth) = str_at(trigger, "/authenticationRef/name") {
            let auth = cluster
                .named("TriggerAuthentication", auth)
                .unwrap_or_else(|| panic!("{origin}: TriggerAuthentication {auth}"));
            for target in auth
                .pointer("/spec/secretTargetRef")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let secret = str_at(target, "/name").unwrap();
                let key = str_at(target, "/key").unwrap();
                assert!(
                    cluster.entries("Secret", secret, origin).contains_key(key),
                    "{origin}: Secret {secret} has {key}"
                );
            }
        }
    }
}

/// The checks above would pass vacuously if the binary ignored what it does not know: make
/// sure it refuses an unknown command and a misspelt setting the way they rely on.
#[tokio::test]
async fn the_binary_refuses_unknown_commands_and_settings() {
    assert_eq!(
        check_variable("BYOK__WORKER__SHUTDOWN_GRACE", "25s").await,
        Ok(())
    );
    for misspelt in [
        "BYOK__WORKER__SHUTDOWN_GRAC",
        "BYOK__WORKERS__SHUTDOWN_GRACE",
    ] {
        let why = check_variable(misspelt, "25s").await.expect_err(misspelt);
        assert!(why.contains("exited 64"), "{misspelt}: {why}");
    }
    for ignored in [
        "BYOK_WORKER__SHUTDOWN_GRACE",
        "byok__worker__shutdown_grace",
    ] {
        assert!(check_variable(ignored, "25s").await.is_err(), "{ignored}");
    }
    assert!(check_variable("BYOK_LOG_FORMAT", "jsn").await.is_err());

    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &[], &["no-such-command", "--help"]).await;
    assert_eq!(out.code, 2, "an unknown command is a usage error");
}

/// The Kubernetes schemas' pinned validator (PyPI) and KEDA's CRD models (npm).
const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0\n";
const KEDA_MODELS: [&str; 2] = ["@kubernetes-models/keda@2.0.0", "yaml@2.8.1"];

/// Every full manifest in `deploy/k8s` (the kustomize patches are fragments) against the real
/// schemas: the built-in kinds with `kubernetes-validate --strict` (the Kubernetes 1.37
/// OpenAPI schemas, unknown fields refused), the KEDA kinds with KEDA's CRD schemas. A
/// manifest with a misspelt field or a wrong type fails here rather than at `kubectl apply`.
#[tokio::test]
async fn kubernetes_manifests_pass_the_kubernetes_and_keda_schemas() {
    let k8s = repo().join("deploy/k8s");
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(&k8s)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.push(k8s.join("shared-volume/03-output-pvc.yaml"));
    manifests.sort();

    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let venv = tmp.join("byok-kubernetes-validate");
    let python = match tokio::task::spawn_blocking(move || {
        byok_testing::python_venv(&venv, KUBERNETES_VALIDATE)
    })
    .await
    .unwrap()
    {
        Ok(python) => python,
        Err(why) => {
            byok_testing::skip_or_fail("kubernetes-validate", &why, "python3 and PyPI");
            return;
        }
    };
    // Through the module: the venv is built aside and renamed, so its scripts' `#!` lines
    // name a path that no longer exists.
    let checked = tokio::process::Command::new(&python)
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(&manifests)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&checked.stdout).into_owned()
        + &String::from_utf8_lossy(&checked.stderr);
    assert!(checked.status.success(), "{report}");
    for kind in [
        "deployment/byok-api",
        "deployment/byok-worker",
        "job/byok-migrate",
    ] {
        assert!(
            report.contains(&format!("passed for resource {kind}")),
            "{kind} was validated: {report}"
        );
    }
    // Only KEDA's kinds lack a built-in schema; they are checked next.
    for line in report
        .lines()
        .filter(|l| l.contains("Couldn't find schema"))
    {
        assert!(line.contains("keda.sh/"), "{line}");
    }

    let models = tmp.join("byok-keda-models");
    std::fs::create_dir_all(&models).unwrap();
    let installed = tokio::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&models)
        .args(KEDA_MODELS)
        .output()
        .await;
    match installed {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            byok_testing::skip_or_fail(
                "KEDA's CRD models",
                &String::from_utf8_lossy(&out.stderr),
                "npm and the npm registry",
            );
            return;
        }
        Err(e) => {
            byok_testing::skip_or_fail("KEDA's CRD models", &e.to_string(), "npm");
            return;
        }
    }
    // Node resolves packages from the script's directory upwards: run a copy beside them.
    let script = models.join("manifests_keda.mjs");
    std::fs::copy(repo().join("tests/e2e/manifests_keda.mjs"), &script).unwrap();
    let keda = tokio::process::Command::new("node")
        .arg(&script)
        .args(&manifests)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&keda.stdout);
    assert!(keda.status.success(), "{report}");
    assert!(
        report.contains("valid ScaledObject/byok-worker")
            && report.contains("valid TriggerAuthentication/"),
        "{report}"
    );
}
