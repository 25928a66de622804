//! Loading and validating definitions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use byok_core::{Format, Mode, ModelSpec, ProviderId, ValidatedRequest};

use super::template::{
    PATH_VARIABLES, REQUEST_VARIABLES, RequestContext, json_env, render_body, render_path,
    text_env, unknown_variables,
};
use super::{Auth, Definition, DefinitionError, Retry, State};

/// A hostile prompt: quotes, a backslash, a newline and a template delimiter, so a body
/// that does not escape it fails at load.
const PROBE_TEXT: &str = "say \"hi\" \\ {{ x }}\n</script>";
/// A one-pixel PNG is not needed: any base64 does.
const PROBE_IMAGE: &str = "data:image/png;base64,iVBORw0KGgo=";

impl Definition {
    /// Reads and checks the definition in `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Definition, DefinitionError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| DefinitionError {
            file: path.to_owned(),
            provider: None,
            field: String::new(),
            message: format!("cannot be read: {e}"),
        })?;
        Definition::parse(&text, path)
    }

    /// Parses and checks a definition; `origin` names it in errors (its file).
    pub fn parse(text: &str, origin: impl AsRef<Path>) -> Result<Definition, DefinitionError> {
        let file = origin.as_ref().to_owned();
        // The id, when it can be read at all, names the provider in every error.
        let provider = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("id")?.as_str().map(str::to_owned));
        let fail = |field: String, message: String| DefinitionError {
            file: file.clone(),
            provider: provider.clone(),
            field,
            message,
        };
        // A retired model's alternatives may name this provider itself: its id must parse
        // as a `ProviderId` while the models are read. A bad id is refused below, by `check`.
        if let Some(id) = &provider {
            let _ = ProviderId::declare(id);
        }
        let deserializer = toml::Deserializer::parse(text)
            .map_err(|e| fail(String::new(), e.message().to_owned()))?;
        let definition: Definition =
            serde_path_to_error::deserialize(deserializer).map_err(|e| {
                let mut field = e.path().to_string();
                if field == "." {
                    field.clear();
                }
                let message = e.inner().message().to_owned();
                // `unknown field `x`` is reported at its table: name the field itself.
                if let Some(name) = message
                    .strip_prefix("unknown field `")
                    .and_then(|m| m.split('`').next())
                {
                    field = if field == name || field.ends_with(&format!(".{name}")) {
                        field
                    } else if field.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{field}.{name}")
                    };
                }
                fail(field, message)
            })?;
        definition
            .check()
            .map_err(|(field, message)| fail(field, message))?;
        Ok(definition)
    }

    /// Every rule a definition must keep, or the field and why.
    fn check(&self) -> Result<(), (String, String)> {
        let err = |field: &str, message: String| Err((field.to_owned(), message));
        // id
        if let Err(why) = ProviderId::check_name(&self.id) {
            return err(
                "id",
                format!("`{}` {why}", self.id.chars().take(64).collect::<String>()),
            );
        }
        for (field, value) in [
            ("display_name", &self.display_name),
            ("description", &self.description),
            ("icon", &self.icon),
        ] {
            if value.trim().is_empty() {
                return err(field, "must not be empty".into());
            }
        }
        self.check_base_url()?;
        for (name, value) in &self.headers {
            let field = format!("headers.{name}");
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(value).is_err()
            {
                return err(&field, "is not a valid header".into());
            }
        }
        // credentials and auth
        if self.credential_fields.is_empty() {
            return err("credential_fields", "needs at least one field".into());
        }
        let mut names = Vec::new();
        for (i, f) in self.credential_fields.iter().enumerate() {
            let ok = f.name.len() <= 40
                && f.name.starts_with(|c: char| c.is_ascii_lowercase())
                && f.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return err(
                    &format!("credential_fields.{i}.name"),
                    "must be 1 to 40 of a-z, 0-9 and `_`, starting with a letter".into(),
                );
            }
            if names.contains(&f.name.as_str()) {
                return err(
                    &format!("credential_fields.{i}.name"),
                    format!("`{}` is listed twice", f.name),
                );
            }
            names.push(f.name.as_str());
        }
        match &self.auth {
            Auth::Bearer(b) => {
                if !names.contains(&b.field.as_str()) {
                    return err(
                        "auth.bearer.field",
                        format!("`{}` is not a credential field", b.field),
                    );
                }
            }
            Auth::Header(t) | Auth::Query(t) => {
                let table = if matches!(self.auth, Auth::Header(_)) {
                    "auth.header"
                } else {
                    "auth.query"
                };
                let valid_name = if table == "auth.header" {
                    reqwest::header::HeaderName::from_bytes(t.name.as_bytes()).is_ok()
                } else {
                    !t.name.is_empty()
                        && t.name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.~".contains(&b))
                };
                if !valid_name {
                    return err(&format!("{table}.name"), "is not a valid name".into());
                }
                let unknown = unknown_variables(&text_env(), &t.value, &names)
                    .map_err(|e| (format!("{table}.value"), e))?;
                if let Some(v) = unknown.first() {
                    return err(
                        &format!("{table}.value"),
                        format!("refers to `{v}`, which is not a credential field"),
                    );
                }
            }
        }
        // key check
        check_statuses("key_check.valid", &self.key_check.valid, true)?;
        check_statuses("key_check.invalid", &self.key_check.invalid, false)?;
        if let Some(s) = self
            .key_check
            .valid
            .iter()
            .find(|s| self.key_check.invalid.contains(s))
        {
            return err("key_check.invalid", format!("{s} is also in valid"));
        }
        check_plain_path("key_check.path", &self.key_check.path, false)?;
        // submit
        self.check_submit()?;
        check_pointer("submit.job_id", &self.submit.job_id)?;
        // poll
        check_plain_path("poll.path", &self.poll.path, true)?;
        check_pointer("poll.state", &self.poll.state)?;
        match (&self.poll.video_url, &self.poll.video_base64) {
            (Some(url), None) => check_pointer("poll.video_url", url)?,
            (None, Some(bytes)) => check_pointer("poll.video_base64", bytes)?,
            (Some(_), Some(_)) => {
                return err(
                    "poll.video_base64",
                    "give either video_url or video_base64, not both".into(),
                );
            }
            (None, None) => {
                return err(
                    "poll.video_url",
                    "is required (or video_base64, where the answer carries the video)".into(),
                );
            }
        }
        for (field, pointer) in [
            ("poll.progress", &self.poll.progress),
            ("poll.failure_code", &self.poll.failure_code),
            ("poll.failure_message", &self.poll.failure_message),
            ("errors.message", &self.errors.message),
        ] {
            if let Some(p) = pointer {
                check_pointer(field, p)?;
            }
        }
        if !(self.poll.progress_scale == 1.0 || self.poll.progress_scale == 100.0) {
            return err("poll.progress_scale", "must be 1 or 100".into());
        }
        for (provider_state, ours) in &self.poll.states {
            if State::parse(ours).is_none() {
                return err(
                    &format!("poll.states.{provider_state}"),
                    format!(
                        "`{ours}` is not a state: one of {}",
                        State::NAMES.join(", ")
                    ),
                );
            }
        }
        if !self.poll.states.values().any(|s| s == "succeeded") {
            return err(
                "poll.states",
                "no provider state is mapped to `succeeded`".into(),
            );
        }
        if let Some(cancel) = &self.cancel {
            check_plain_path("cancel.path", &cancel.path, true)?;
        }
        // errors
        for (status, rule) in &self.errors.status {
            let field = format!("errors.status.{status}");
            if !matches!(status.parse::<u16>(), Ok(400..=599)) {
                return err(&field, "must be an HTTP error status, 400 to 599".into());
            }
            if rule.retry == Retry::RetryAfter
                && rule.code != byok_core::ErrorCode::ProviderUnavailable
            {
                return err(
                    &format!("{field}.code"),
                    "a retry_after rule is provider_unavailable".into(),
                );
            }
        }
        if let Some(h) = &self.errors.wait_header
            && reqwest::header::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            return err("errors.wait_header", "is not a valid header name".into());
        }
        for (code, rule) in &self.poll.failure_codes {
            if rule.retry == Retry::RetryAfter {
                return err(
                    &format!("poll.failure_codes.{code}.retry"),
                    "a failed job has no wait to honour: permanent or transient".into(),
                );
            }
        }
        // pacing and limits
        if !(1..=3600).contains(&self.poll_interval_secs) {
            return err("poll_interval_secs", "must be 1 to 3600".into());
        }
        if let Err((field, why)) = byok_core::RateLimits::from(self.rate_limit).check() {
            return err(&format!("rate_limit.{field}"), why.into());
        }
        // models
        self.catalogue()
            .check()
            .map_err(|why| ("models".to_owned(), why))
    }

    fn check_base_url(&self) -> Result<(), (String, String)> {
        let fail = |m: &str| Err(("base_url".to_owned(), m.to_owned()));
        let Ok(url) = url::Url::parse(&self.base_url) else {
            return fail("is not a URL");
        };
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => return fail("must be https (or set allow_http = true, for tests)"),
            _ => return fail("must be an https URL"),
        }
        if url.host().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return fail("must be scheme, host and path only");
        }
        Ok(())
    }

    /// The body and path templates: known variables only, and for every model and mode a
    /// request with every field set, and one with only what is always there, render to JSON.
    fn check_submit(&self) -> Result<(), (String, String)> {
        let unknown = unknown_variables(&json_env(), &self.submit.body, REQUEST_VARIABLES)
            .map_err(|e| ("submit.body".to_owned(), e))?;
        if let Some(v) = unknown.first() {
            return Err((
                "submit.body".to_owned(),
                format!(
                    "refers to `{v}`, which a request does not have (it has {})",
                    REQUEST_VARIABLES.join(", ")
                ),
            ));
        }
        let unknown = unknown_variables(&text_env(), &self.submit.path, PATH_VARIABLES)
            .map_err(|e| ("submit.path".to_owned(), e))?;
        if let Some(v) = unknown.first() {
            return Err((
                "submit.path".to_owned(),
                format!("refers to `{v}`; a path may use model and wire"),
            ));
        }
        for model in &self.models {
            render_path(&self.submit.path, model).map_err(|e| {
                (
                    "submit.path".to_owned(),
                    format!("for model `{}`: {e}", model.id),
                )
            })?;
            for mode in &model.modes {
                for full in [true, false] {
                    let (request, image) = probe(model, *mode, full);
                    let context = RequestContext::new(&request, image, model);
                    match render_body(&self.submit.body, &context) {
                        Ok(serde_json::Value::Object(_)) => {}
                        Ok(_) => {
                            return Err((
                                "submit.body".to_owned(),
                                "must render a JSON object".into(),
                            ));
                        }
                        Err(e) => {
                            return Err((
                                "submit.body".to_owned(),
                                format!("for model `{}`: {e}", model.id),
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// A request for `model` in `mode`: with every field set (`full`), or with only what
/// validation always fills in.
fn probe(model: &ModelSpec, mode: Mode, full: bool) -> (ValidatedRequest, Option<&'static str>) {
    let format: Option<Format> = model
        .formats
        .iter()
        .find(|f| f.modes.is_empty() || f.modes.contains(&mode))
        .cloned();
    let request = ValidatedRequest {
        model: model.id.clone(),
        mode,
        prompt: full.then(|| PROBE_TEXT.to_owned()),
        negative_prompt: full.then(|| PROBE_TEXT.to_owned()),
        image_url: full.then(|| "https://example.com/in.png".to_owned()),
        duration_seconds: model.default_duration,
        format,
        seed: full.then_some(42),
    };
    (request, full.then_some(PROBE_IMAGE))
}

fn check_statuses(field: &str, statuses: &[u16], non_empty: bool) -> Result<(), (String, String)> {
    if non_empty && statuses.is_empty() {
        return Err((field.to_owned(), "needs at least one status".into()));
    }
    if let Some(s) = statuses.iter().find(|s| !(100..=599).contains(*s)) {
        return Err((field.to_owned(), format!("{s} is not an HTTP status")));
    }
    Ok(())
}

/// A path after the base URL: starts with `/`, no `..`, no `#`; with `{id}` exactly once
/// when `with_id`, and no other braces.
fn check_plain_path(field: &str, path: &str, with_id: bool) -> Result<(), (String, String)> {
    let fail = |m: String| Err((field.to_owned(), m));
    if !path.starts_with('/') || path.contains("..") || path.contains('#') {
        return fail("must start with `/`, without `..` or `#`".into());
    }
    let rest = path.replacen("{id}", "", 1);
    let ids = usize::from(rest.len() != path.len());
    if with_id && ids != 1 {
        return fail("must hold `{id}` (the job id) once".into());
    }
    if rest.contains(['{', '}']) {
        return fail("may hold no braces but one `{id}`".into());
    }
    Ok(())
}

/// An RFC 6901 JSON pointer: empty, or `/`-separated tokens where `~` is only `~0` or `~1`.
fn check_pointer(field: &str, pointer: &str) -> Result<(), (String, String)> {
    let fail = |m: &str| Err((field.to_owned(), format!("`{pointer}` {m}")));
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return fail("is not a JSON pointer (RFC 6901): it must start with `/`");
    }
    let mut chars = pointer.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return fail("is not a JSON pointer (RFC 6901): `~` must be `~0` or `~1`");
        }
    }
    Ok(())
}

/// Refuses an id defined twice among `definitions` (each with the file, or origin, it came
/// from), naming the second place and the first.
pub fn check_unique(definitions: &[(PathBuf, Definition)]) -> Result<(), DefinitionError> {
    let mut seen: BTreeMap<&str, &Path> = BTreeMap::new();
    for (file, definition) in definitions {
        if let Some(first) = seen.insert(&definition.id, file) {
            return Err(DefinitionError {
                file: file.clone(),
                provider: Some(definition.id.clone()),
                field: "id".into(),
                message: format!("`{}` is also defined by {}", definition.id, first.display()),
            });
        }
    }
    Ok(())
}

/// Every `*.toml` definition in `dir`, by file name, each with its file; ids must be unique
/// across files ([`check_unique`]).
pub fn load_dir(dir: impl AsRef<Path>) -> Result<Vec<(PathBuf, Definition)>, DefinitionError> {
    let dir = dir.as_ref();
    let io = |e: std::io::Error| DefinitionError {
        file: dir.to_owned(),
        provider: None,
        field: String::new(),
        message: format!("the directory cannot be read: {e}"),
    };
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    // Alternatives of retired models may name providers defined by other files of the
    // directory: every readable id is declared before any file is read in full.
    for file in &files {
        let id = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .and_then(|t| t.get("id")?.as_str().map(str::to_owned));
        if let Some(id) = id {
            let _ = ProviderId::declare(&id);
        }
    }
    let loaded = files
        .into_iter()
        .map(|file| Definition::load(&file).map(|definition| (file, definition)))
        .collect::<Result<Vec<_>, _>>()?;
    check_unique(&loaded)?;
    Ok(loaded)
}
