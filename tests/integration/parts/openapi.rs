//! `openapi.yaml` agrees with the rest of the repository: its routes are the routes of
//! `template.yaml`, of the `cargo lambda watch` router in the workspace `Cargo.toml` (what
//! `infra/devstack` serves) and of the contract, each with the same function (`x-function`); every event
//! of `events/` fits its route (path and query parameters, authentication, body); every error status
//! of every route is the `{error, detail}` body of its code, as `crmsync-lambda` writes it; and the
//! response schemas take what the use cases serialize. The negative cases show the checks can fail. No
//! AWS, no network: the files are only read.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crmsync_lambda::ApiError;
use jsonschema::Validator;
use serde_json::{Value, json};

use super::deploy::{
    Route, assert_same, contract_routes, read, router_routes, template, workspace,
};

/// The operation keys of an OpenAPI path item.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn openapi() -> Value {
    let path = workspace().join("openapi.yaml");
    serde_norway::from_str(&read(&path))
        .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()))
}

/// Follows `$ref`s (`#/...` only: the document refers to nothing outside it).
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> &'a Value {
    while let Some(reference) = value.get("$ref").and_then(Value::as_str) {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("openapi.yaml: `{reference}` is not a local reference"));
        value = doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("openapi.yaml: `{reference}` points at nothing"));
    }
    value
}

/// A validator for a schema of the document: its `#/components/...` references resolve against the
/// document's components. Formats (uuid, date-time, uri) are checked.
fn validator(doc: &Value, schema: &Value) -> Validator {
    let root = json!({ "allOf": [schema], "components": doc["components"] });
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .unwrap_or_else(|e| panic!("openapi.yaml: a schema does not compile: {e}\n{schema:#}"))
}

/// Why `instance` does not fit, or `None` when it does.
fn misfit(validator: &Validator, instance: &Value) -> Option<String> {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{} at `{}`", e, e.instance_path()))
        .collect();
    (!errors.is_empty()).then(|| errors.join("; "))
}

/// One operation: (METHOD, path), its function, the operation and its path item.
struct Operation<'a> {
    method: String,
    path: String,
    function: String,
    op: &'a Value,
    item: &'a Value,
}

impl Operation<'_> {
    fn name(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Its parameters, the path item's first, resolved.
    fn parameters<'d>(&'d self, doc: &'d Value) -> Vec<&'d Value> {
        let mut by_key: BTreeMap<(String, String), &Value> = BTreeMap::new();
        for list in [&self.item["parameters"], &self.op["parameters"]] {
            for p in list.as_array().into_iter().flatten() {
                let p = resolve(doc, p);
                let key = (
                    p["in"].as_str().unwrap_or_default().to_owned(),
                    p["name"].as_str().unwrap_or_default().to_owned(),
                );
                by_key.insert(key, p);
            }
        }
        by_key.into_values().collect()
    }

    fn parameter<'d>(&'d self, doc: &'d Value, place: &str, name: &str) -> Option<&'d Value> {
        self.parameters(doc)
            .into_iter()
            .find(|p| p["in"] == place && p["name"] == name)
    }

    /// The security schemes any of whose requirements the operation accepts.
    fn security_schemes(&self, doc: &Value) -> BTreeSet<String> {
        let security = self.op.get("security").unwrap_or(&doc["security"]);
        security
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_object)
            .flat_map(|r| r.keys().cloned())
            .collect()
    }

    fn json_request_schema<'d>(&'d self, doc: &'d Value) -> Option<&'d Value> {
        let body = resolve(doc, self.op.get("requestBody")?);
        Some(
            body.pointer("/content/application~1json/schema")
                .unwrap_or_else(|| panic!("{}: a request body that is not JSON", self.name())),
        )
    }
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let paths = doc["paths"].as_object().expect("openapi.yaml has paths");
    let mut ops = Vec::new();
    for (path, item) in paths {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let function = op["x-function"]
                .as_str()
                .unwrap_or_else(|| {
                    panic!(
                        "openapi.yaml: {method} {path} names no `x-function` (its function crate)"
                    )
                })
                .to_owned();
            ops.push(Operation {
                method: method.to_ascii_uppercase(),
                path: path.clone(),
                function,
                op,
                item,
            });
        }
    }
    ops
}

fn openapi_routes(doc: &Value) -> BTreeSet<Route> {
    operations(doc)
        .into_iter()
        .map(|o| (o.method, o.path, o.function))
        .collect()
}

fn template_routes() -> BTreeSet<Route> {
    let (_, functions) = template();
    functions
        .iter()
        .flat_map(|f| {
            f.routes
                .iter()
                .map(|(m, p)| (m.clone(), p.clone(), f.binary.clone()))
        })
        .collect()
}

/// The `{name}`s of a path template.
fn template_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// The values of a path template's parameters in a concrete path, or `None` if it does not match.
fn match_path<'a>(template: &'a str, path: &'a str) -> Option<Vec<(&'a str, &'a str)>> {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut values = Vec::new();
    for (t, p) in t.into_iter().zip(p) {
        match t.strip_prefix('{').and_then(|n| n.strip_suffix('}')) {
            Some(name) => values.push((name, p)),
            None if t == p => {}
            None => return None,
        }
    }
    Some(values)
}

/// A query or path value as the parameter's schema types it (integers and booleans from their text).
fn typed(doc: &Value, schema: &Value, raw: &str) -> Value {
    match resolve(doc, schema)["type"].as_str() {
        Some("integer") => raw.parse::<i64>().map(Value::from).unwrap_or(raw.into()),
        Some("boolean") => raw.parse::<bool>().map(Value::from).unwrap_or(raw.into()),
        _ => Value::from(raw),
    }
}

/// Why a parameter value does not fit its parameter, or `None`.
fn param_misfit(doc: &Value, param: &Value, raw: &str) -> Option<String> {
    let schema = &param["schema"];
    misfit(&validator(doc, schema), &typed(doc, schema, raw))
}

/// An error of every code, as `crmsync-lambda` answers it, by status.
fn api_errors() -> Vec<ApiError> {
    vec![
        ApiError::bad_request("The request is bad."),
        ApiError::unauthorized("Authentication required."),
        ApiError::forbidden("Not yours."),
        ApiError::not_found("No such integration."),
        ApiError::conflict("A sync is running."),
        ApiError::invalid_credentials("The CRM refused the key."),
        ApiError::rate_limited(7),
        ApiError::upstream("The CRM failed."),
        ApiError::internal("a cause nobody sees"),
    ]
}

fn body_of(err: &ApiError) -> Value {
    serde_json::from_str(&err.body()).expect("an error body is JSON")
}

#[test]
fn openapi_has_the_routes_of_the_template_the_local_router_and_the_contract() {
    let doc = openapi();
    let ops = operations(&doc);
    let routes = openapi_routes(&doc);
    assert_eq!(
        routes.len(),
        ops.len(),
        "openapi.yaml: an operation is listed twice"
    );
    assert_same(
        "routes",
        ("openapi.yaml", &routes),
        ("template.yaml", &template_routes()),
    );
    assert_same(
        "routes",
        ("openapi.yaml", &routes),
        (
            "the Cargo.toml router (cargo lambda watch)",
            &router_routes(),
        ),
    );
    assert_same(
        "routes",
        ("openapi.yaml", &routes),
        ("the contract", &contract_routes().0),
    );
    let ids: BTreeSet<&str> = ops
        .iter()
        .map(|o| {
            o.op["operationId"]
                .as_str()
                .expect("every operation has an operationId")
        })
        .collect();
    assert_eq!(ids.len(), ops.len(), "operationIds are unique");
}

#[test]
fn every_operation_declares_its_parameters_auth_and_errors() {
    let doc = openapi();
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..4]), Some("3.1."));
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("openapi.yaml has securitySchemes");
    assert_eq!(schemes["bearerAuth"]["scheme"], "bearer");
    assert_eq!(schemes["bearerAuth"]["bearerFormat"], "JWT");
    assert_eq!(schemes["cookieAuth"]["name"], "alto_admin");
    let codes: BTreeSet<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .expect("ErrorCode is an enum")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let ours: BTreeSet<&str> = api_errors().iter().map(|e| e.code().as_str()).collect();
    assert_eq!(codes, ours, "ErrorCode lists the codes of crmsync-lambda");

    for o in operations(&doc) {
        let name = o.name();
        // Every `{param}` of the path is a required path parameter, and there are no others.
        let declared: BTreeSet<String> = o
            .parameters(&doc)
            .into_iter()
            .filter(|p| p["in"] == "path")
            .inspect(|p| assert_eq!(p["required"], true, "{name}: path parameters are required"))
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        let in_path: BTreeSet<String> = template_params(&o.path)
            .into_iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(declared, in_path, "{name}: path parameters");

        // Authentication: the lead webhook by its secret or signature, a CRM's webhook by the secret token
        // in its address (a capability URL: no scheme), every other route by the caller's JWT.
        let security = o.security_schemes(&doc);
        for s in &security {
            assert!(
                schemes.contains_key(s),
                "{name}: unknown security scheme {s}"
            );
        }
        let expected: BTreeSet<String> = if o.path.starts_with("/api/webhooks/crm/") {
            assert!(
                o.path.ends_with("/{token}"),
                "{name}: a CRM's webhook is addressed by its token"
            );
            BTreeSet::new()
        } else if o.path.starts_with("/api/webhooks/") {
            ["webhookSecret", "standardWebhooks"]
                .map(String::from)
                .into()
        } else {
            ["bearerAuth", "cookieAuth"].map(String::from).into()
        };
        assert_eq!(security, expected, "{name}: security");

        let responses = o.op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{name}: responses"));
        assert!(
            responses
                .keys()
                .any(|s| s.starts_with('2') || s.starts_with('3')),
            "{name}: no success response"
        );
        for (status, response) in responses {
            let status: u16 = status
                .parse()
                .unwrap_or_else(|_| panic!("{name}: status {status}"));
            let response = resolve(&doc, response);
            if status < 400 {
                // Success bodies are JSON with a schema that compiles.
                if let Some(content) = response.get("content") {
                    let schema = content
                        .pointer("/application~1json/schema")
                        .unwrap_or_else(|| panic!("{name} {status}: a body that is not JSON"));
                    validator(&doc, schema);
                }
                continue;
            }
            let schema = response
                .pointer("/content/application~1json/schema")
                .unwrap_or_else(|| panic!("{name} {status}: an error without the JSON error body"));
            let v = validator(&doc, schema);
            let mut fits = Vec::new();
            for err in api_errors() {
                if misfit(&v, &body_of(&err)).is_none() {
                    fits.push(err.status().as_u16());
                }
            }
            assert_eq!(
                fits,
                [status],
                "{name} {status}: the schema must take the `{{error, detail}}` of that status' code, and only it"
            );
            if status == 429 {
                let retry = resolve(&doc, &response["headers"]["Retry-After"]);
                assert_eq!(retry["required"], true, "{name} 429: Retry-After");
                assert_eq!(resolve(&doc, &retry["schema"])["type"], "integer");
            }
        }
        // Every route can fail on our side, and every authenticated route without a JWT (the OAuth
        // callback redirects instead: its failures are `?error=` codes).
        if !o.path.ends_with("/callback") {
            for status in ["401", "500"] {
                assert!(
                    responses.contains_key(status),
                    "{name}: no {status} response"
                );
            }
        }
        // Input can be bad (the OAuth callback answers bad input with a redirect).
        let takes_input = !o.parameters(&doc).is_empty() || o.op.get("requestBody").is_some();
        if takes_input && !o.path.ends_with("/callback") {
            assert!(responses.contains_key("400"), "{name}: input but no 400");
        }
    }
}

#[test]
fn every_event_fits_its_route_in_openapi() {
    let doc = openapi();
    let ops = operations(&doc);
    let dir = workspace().join("events");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("events/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut covered = BTreeSet::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let event: Value = serde_json::from_str(&read(file))
            .unwrap_or_else(|e| panic!("events/{name} is not JSON: {e}"));
        let Some(route_key) = event["routeKey"].as_str() else {
            // The EventBridge event of scheduled-sync and the SQS batch of sync-worker: no route.
            assert!(
                event["source"] == "aws.scheduler"
                    || event["Records"][0]["eventSource"] == "aws:sqs",
                "events/{name}: neither a route, a schedule nor a queue batch"
            );
            continue;
        };
        let (method, path) = route_key
            .split_once(' ')
            .expect("routeKey is `METHOD /path`");
        let op = ops
            .iter()
            .find(|o| o.method == method && o.path == path)
            .unwrap_or_else(|| {
                panic!("events/{name}: `{route_key}` is not a route of openapi.yaml")
            });
        assert_eq!(
            event["requestContext"]["http"]["method"], method,
            "events/{name}"
        );
        covered.insert(op.name());

        // Path parameters: the raw path matches the template, each value fits its parameter.
        let raw_path = event["rawPath"].as_str().expect("rawPath");
        let values = match_path(path, raw_path)
            .unwrap_or_else(|| panic!("events/{name}: `{raw_path}` is not a path of `{path}`"));
        for (param, value) in values {
            let p = op
                .parameter(&doc, "path", param)
                .unwrap_or_else(|| panic!("events/{name}: `{param}` is not a parameter of {path}"));
            if let Some(why) = param_misfit(&doc, p, value) {
                panic!("events/{name}: path parameter `{param}`={value}: {why}");
            }
            if let Some(given) = event["pathParameters"].get(param) {
                assert_eq!(
                    given, value,
                    "events/{name}: pathParameters.{param} is the path's"
                );
            }
        }

        // Query parameters: each declared, each value fits.
        let query = event["rawQueryString"].as_str().unwrap_or_default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let p = op.parameter(&doc, "query", &key).unwrap_or_else(|| {
                panic!("events/{name}: `?{key}=` is not a parameter of {route_key}")
            });
            if let Some(why) = param_misfit(&doc, p, &value) {
                panic!("events/{name}: `?{key}={value}`: {why}");
            }
        }

        // Authentication as the route's security schemes ask.
        let headers = &event["headers"];
        let cookies: Vec<&str> = event["cookies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let security = op.security_schemes(&doc);
        // A CRM's webhook: the token is the last segment of its address.
        let by_token = security.is_empty()
            && event["rawPath"]
                .as_str()
                .is_some_and(|p| p.starts_with("/api/webhooks/crm/") && p.split('/').count() == 6);
        let authenticated = by_token
            || security.iter().any(|s| match s.as_str() {
                "bearerAuth" => headers["authorization"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("Bearer ")),
                "cookieAuth" => cookies.iter().any(|c| c.starts_with("alto_admin=")),
                "webhookSecret" => headers.get("x-webhook-secret").is_some(),
                "standardWebhooks" => headers.get("webhook-signature").is_some(),
                _ => false,
            });
        assert!(
            authenticated,
            "events/{name}: no credentials for {security:?}"
        );

        // The body fits the route's request schema.
        let body = event["body"].as_str().filter(|b| !b.trim().is_empty());
        assert_ne!(
            event["isBase64Encoded"], true,
            "events/{name}: a base64 body"
        );
        match (body, op.json_request_schema(&doc)) {
            (Some(body), Some(schema)) => {
                let body: Value = serde_json::from_str(body)
                    .unwrap_or_else(|e| panic!("events/{name}: the body is not JSON: {e}"));
                if let Some(why) = misfit(&validator(&doc, schema), &body) {
                    panic!("events/{name}: the body does not fit {route_key}: {why}");
                }
            }
            (Some(_), None) => panic!("events/{name}: a body, but {route_key} takes none"),
            (None, Some(_)) => {
                let required = resolve(&doc, &op.op["requestBody"])["required"] == true;
                assert!(!required, "events/{name}: {route_key} needs a body");
            }
            (None, None) => {}
        }
    }
    // One event per route, where the route is not an alias.
    let expected: BTreeSet<String> = ops
        .iter()
        .filter(|o| {
            !o.path.starts_with("/api/integrations/followupboss/")
                && o.path != "/api/integrations/logs"
        })
        .map(Operation::name)
        .collect();
    let missing: Vec<_> = expected.difference(&covered).collect();
    assert!(
        missing.is_empty(),
        "routes without an event in events/: {missing:?}"
    );
}

#[test]
fn response_schemas_take_what_the_use_cases_serialize() {
    use crmsync_app::auth_status::AuthStatus;
    use crmsync_app::deliveries::Retried;
    use crmsync_app::pull::{Fetched, SyncMetrics};
    use crmsync_app::push::IntegrationSynced;
    use crmsync_domain::{NormalizedContact, Provider};

    let doc = openapi();
    let check = |schema: &str, value: Value| {
        let v = validator(
            &doc,
            &json!({ "$ref": format!("#/components/schemas/{schema}") }),
        );
        if let Some(why) = misfit(&v, &value) {
            panic!("{schema} does not take {value}: {why}");
        }
    };
    let metrics = SyncMetrics {
        upserted: 3,
        total_fetched: 4,
        skipped: 1,
        deleted: 0,
        duration_ms: 812,
        cursor: Some("2026-11-21T09:00:00.000Z".into()),
        complete: true,
        full_read: false,
    };
    check("SyncMetrics", serde_json::to_value(&metrics).unwrap());
    check(
        "SyncMetrics",
        serde_json::to_value(SyncMetrics::default()).unwrap(),
    );
    let synced = IntegrationSynced {
        pull: metrics,
        pushed: 2,
        failed: 0,
        pending: 1,
    };
    check(
        "IntegrationSyncMetrics",
        serde_json::to_value(&synced).unwrap(),
    );
    let retried = Retried {
        retried: 2,
        pushed: 1,
        failed: 1,
        pending: 0,
    };
    check("RetryResult", serde_json::to_value(retried).unwrap());
    let status = AuthStatus {
        provider: Provider::FollowUpBoss,
        connected: true,
        status: "needs_reauth".into(),
        token_valid: false,
        expires_at: Some("2026-11-21T10:00:00Z".into()),
        last_sync_at: None,
        integration_id: Some(uuid::Uuid::new_v4()),
    };
    check("AuthStatus", serde_json::to_value(&status).unwrap());
    let none = AuthStatus {
        provider: Provider::Lofty,
        connected: false,
        status: "disconnected".into(),
        token_valid: false,
        expires_at: None,
        last_sync_at: None,
        integration_id: None,
    };
    check("AuthStatus", serde_json::to_value(&none).unwrap());
    let fetched = Fetched {
        contacts: vec![NormalizedContact {
            external_id: Some("42".into()),
            name: "Dana Rivera".into(),
            email: None,
            phone_number: "+14155550142".parse().unwrap(),
            notes: None,
            updated_at: Some("2026-11-21T09:00:00.123Z".parse().unwrap()),
        }],
        count: 1,
        skipped: 0,
    };
    check("FetchedContacts", serde_json::to_value(&fetched).unwrap());
}

/// The checks above can fail: bodies, parameters and route sets that are wrong are caught.
#[test]
fn wrong_bodies_parameters_and_routes_are_caught() {
    let doc = openapi();
    let ops = operations(&doc);
    let op = |method: &str, path: &str| {
        ops.iter()
            .find(|o| o.method == method && o.path == path)
            .unwrap_or_else(|| panic!("{method} {path} is in openapi.yaml"))
    };
    let body_validator = |method: &str, path: &str| {
        validator(
            &doc,
            op(method, path)
                .json_request_schema(&doc)
                .expect("a request body"),
        )
    };

    let connect = body_validator("POST", "/api/integrations");
    assert_eq!(
        misfit(&connect, &json!({"provider": "lofty", "apiKey": "k"})),
        None
    );
    for wrong in [
        json!({"provider": "lofty"}),
        json!({"provider": "hubspot", "apiKey": "k"}),
        json!({"provider": "lofty", "apiKey": "k", "riskThreshold": 101}),
        json!({"provider": "lofty", "apiKey": "k", "phoneRegion": "USA"}),
        json!({"provider": "lofty", "apiKey": "k", "autoSync": "yes"}),
        json!({"provider": "lofty", "apiKey": "k", "owner": "someone else"}),
        json!([]),
    ] {
        assert!(
            misfit(&connect, &wrong).is_some(),
            "the connect schema takes {wrong}"
        );
    }

    let update = body_validator("PUT", "/api/integrations/{id}");
    assert_eq!(
        misfit(&update, &json!({"status": "active", "phoneRegion": "au"})),
        None
    );
    for wrong in [
        json!({"status": "needs_reauth"}),
        json!({"riskThreshold": -1}),
        json!({"riskThreshold": 2.5}),
    ] {
        assert!(
            misfit(&update, &wrong).is_some(),
            "the update schema takes {wrong}"
        );
    }

    let webhook = body_validator("POST", "/api/webhooks/lead-created");
    let user = "3f0c6f2e-9a52-4f6e-8d8e-2b1f6f0e7a11";
    for right in [
        json!({"event": "lead.updated", "lead": {"id": 7, "userId": user, "riskScore": "12"}}),
        json!({"type": "INSERT", "table": "leads", "schema": "public",
               "record": {"id": "l1", "user_id": user, "risk_score": 140, "tags": "a,b"}, "old_record": null}),
    ] {
        assert_eq!(misfit(&webhook, &right), None, "{right}");
    }
    for wrong in [
        json!({"event": "lead.created", "lead": {"id": "l1"}}),
        json!({"event": "lead.created", "lead": {"id": "l1", "userId": "not-a-uuid"}}),
        json!({"event": "lead.created", "lead": {"id": "l1", "userId": user, "riskScore": true}}),
        json!({"event": "lead.created", "lead": {"id": "l1", "userId": user, "riskScore": "low"}}),
        json!({"event": "lead.created", "lead": "l1"}),
        json!({"type": "INSERT"}),
        json!({}),
    ] {
        assert!(
            misfit(&webhook, &wrong).is_some(),
            "the webhook schema takes {wrong}"
        );
    }

    // An event file's body, broken, no longer fits.
    let event: Value =
        serde_json::from_str(&read(&workspace().join("events/integrations-connect.json"))).unwrap();
    let mut body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
    assert_eq!(misfit(&connect, &body), None);
    body.as_object_mut().unwrap().remove("apiKey");
    assert!(
        misfit(&connect, &body).is_some(),
        "a connect without apiKey fits"
    );

    // Parameters.
    let fetch = op("GET", "/api/integrations/{provider}/contacts/fetch");
    let param = |o: &Operation<'_>, place: &str, name: &str| {
        o.parameter(&doc, place, name)
            .unwrap_or_else(|| panic!("{}: {name}", o.name()))
            .clone()
    };
    let provider = param(fetch, "path", "provider");
    assert_eq!(param_misfit(&doc, &provider, "lofty"), None);
    assert!(param_misfit(&doc, &provider, "hubspot").is_some());
    let limit = param(fetch, "query", "limit");
    assert_eq!(param_misfit(&doc, &limit, "500"), None);
    for wrong in ["0", "501", "ten"] {
        assert!(param_misfit(&doc, &limit, wrong).is_some(), "limit={wrong}");
    }
    let since = param(fetch, "query", "since");
    assert_eq!(param_misfit(&doc, &since, "2026-01-01T00:00:00Z"), None);
    assert!(param_misfit(&doc, &since, "yesterday").is_some());
    let id = param(op("GET", "/api/integrations/{id}"), "path", "id");
    assert!(param_misfit(&doc, &id, "9b2f4c1e-5d6a-4e8b-9c0d-1a2b3c4d5e6f").is_none());
    assert!(param_misfit(&doc, &id, "42").is_some());
    let status = param(
        op("GET", "/api/integrations/{id}/deliveries"),
        "query",
        "status",
    );
    assert!(param_misfit(&doc, &status, "superseded").is_none());
    assert!(param_misfit(&doc, &status, "done").is_some());

    // A 404's schema refuses a 400's body.
    let not_found = resolve(&doc, &doc["components"]["responses"]["NotFound"]);
    let v = validator(
        &doc,
        not_found
            .pointer("/content/application~1json/schema")
            .unwrap(),
    );
    assert!(misfit(&v, &body_of(&ApiError::bad_request("x"))).is_some());
    assert!(
        misfit(&v, &json!({"error": "not_found"})).is_some(),
        "an error without detail fits"
    );

    // A route missing from one side is reported.
    let routes = openapi_routes(&doc);
    let mut fewer = routes.clone();
    fewer.pop_first();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        assert_same(
            "routes",
            ("openapi.yaml", &routes),
            ("a smaller set", &fewer),
        )
    }));
    assert!(caught.is_err(), "a missing route went unnoticed");
    let mut moved = routes.clone();
    let (m, p, _) = moved.pop_last().unwrap();
    moved.insert((m, p, "another-function".into()));
    let caught = catch_unwind(AssertUnwindSafe(|| {
        assert_same(
            "routes",
            ("openapi.yaml", &routes),
            ("a set with a moved route", &moved),
        )
    }));
    assert!(
        caught.is_err(),
        "a route served by another function went unnoticed"
    );
}
