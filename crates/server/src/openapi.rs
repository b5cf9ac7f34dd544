//! The OpenAPI 3.1 document of the hosting API, generated from the handlers'
//! annotations and the `api-types` schemas, and a plain HTML reference of it.

use crate::routes::{billing, instances, operate, shares, shell, templates, workspaces};
use berth_api_types as t;
use serde_json::{json, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "berth hosting API", description = "Create and manage instances: persistent, isolated computers running an AI agent."),
    paths(
        instances::create, instances::list, instances::retrieve, instances::update, instances::delete,
        instances::lifecycle,
        operate::exec_command, operate::stdin, operate::logs, operate::health, operate::events, shell::shell,
        shares::create_share, shares::list_shares, shares::revoke_share, shares::hold,
        templates::list, templates::retrieve, templates::create, templates::update, templates::delete,
        templates::builds, templates::build, templates::build_logs,
        workspaces::create_workspace, workspaces::list_workspaces,
        workspaces::create_key, workspaces::list_keys, workspaces::delete_key,
        billing::billing, billing::ledger, billing::wallet_topup, billing::budget_topup,
    ),
    components(schemas(
        t::Instance, t::ResourcesInput, t::ResourcesInfo, t::CreateInstance, t::UpdateInstance, t::BudgetInput, t::Budget, t::Lifecycle, t::TemplateRef,
        t::SizeInfo, t::Port, t::Purged, t::Workspace, t::CreateWorkspace, t::ApiKey, t::CreateKey, t::ErrorBody,
        t::ErrorDetail, t::Healthz, t::ExecRequest, t::ExecResult, t::Command, t::Logs, t::LogEntry,
        t::InstanceHealth, t::GatewayHealth, t::Event, t::Template, t::TemplatePort, t::TemplateChoice, t::CreateTemplate, t::UpdateTemplate, t::UpdateTo, t::StdinRequest, t::StdinResult, t::BuildSource, t::TemplateBuild, t::TemplatePull, t::BuildLogs, t::BuildLogLine, t::CreateShare, t::Share,
        t::ShareRevoked, t::Hold, t::NetworkInput, t::Network, t::Billing, t::UsageDay, t::LedgerEntry,
        t::WalletTopup, t::BudgetTopup,
    )),
    modifiers(&BearerAuth),
    tags((name = "instances"), (name = "operate"), (name = "shares"), (name = "templates"), (name = "workspaces"), (name = "keys"), (name = "billing"))
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        if let Some(c) = doc.components.as_mut() {
            c.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        }
    }
}

/// The document as utoipa generates it from the annotations, before
/// [`document_value`] completes it.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// What the document needs to know of the server's configuration.
#[derive(Debug, Clone, Copy)]
pub struct DocSettings {
    /// The shortest `lifecycle.idle_timeout_secs` this server accepts.
    pub min_idle_timeout_secs: u64,
}

/// The complete document: the annotations, plus the responses every route shares
/// (401, 403, 404, 429, 503, ...) and every constraint the validators enforce, taken
/// from the same constants, so that a schema-valid request is accepted and a
/// schema-violating one refused.
pub fn document_value(settings: DocSettings) -> Value {
    let mut doc = serde_json::to_value(document()).unwrap_or_default();
    add_common_responses(&mut doc);
    add_constraints(&mut doc, settings);
    doc
}

/// The complete document as JSON text.
pub fn document_json(settings: DocSettings) -> String {
    serde_json::to_string_pretty(&document_value(settings)).unwrap_or_else(|_| "{}".into())
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    })
}

/// Shared responses, named in `components.responses` and referenced by every
/// operation they apply to (an entry an annotation wrote itself is kept).
fn add_common_responses(doc: &mut Value) {
    let mut rate_limited = error_response(
        "`rate_limited`: over the key's request rate or a fair-share cap (concurrent execs, shells, log follows); retry after `Retry-After` seconds",
    );
    rate_limited["headers"] =
        json!({"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer", "minimum": 0}}});
    doc["components"]["responses"] = json!({
        "BadRequest": error_response("`invalid_request`: the body or a query parameter is malformed; `details.field` names it"),
        "Unauthorized": error_response("`unauthorized`: no `Authorization: Bearer` key, or an unknown, revoked or expired one"),
        "Forbidden": error_response("`forbidden`: the key may not do this (an instance key outside its instance, a non-admin key on an admin route)"),
        "NotFound": error_response("`*_not_found`: no such resource in the key's workspace (another workspace's resources are never revealed)"),
        "RateLimited": rate_limited,
        "Unavailable": error_response("`runtime_unavailable` (the container runtime failed), `database_unavailable` (the database did not answer within `--database-timeout-secs`; `Retry-After`) or `timeout` (the request outlived `--request-timeout-secs`)"),
    });
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for (path, item) in paths.iter_mut() {
        let Some(ops) = item.as_object_mut() else { continue };
        for op in ops.values_mut() {
            let secured = op.get("security").is_some();
            let has_input = op.get("requestBody").is_some()
                || op["parameters"].as_array().is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            let mut add = |status: &str, name: &str| {
                let responses = &mut op["responses"];
                if responses.get(status).is_none() {
                    responses[status] = json!({"$ref": format!("#/components/responses/{name}")});
                }
            };
            if has_input {
                add("400", "BadRequest");
            }
            if secured {
                add("401", "Unauthorized");
                add("403", "Forbidden");
                add("429", "RateLimited");
                add("503", "Unavailable");
            }
            if path.contains('{') {
                add("404", "NotFound");
            }
        }
    }
}

/// No control characters (what `char::is_control` refuses).
const PRINTABLE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// At least one character that is not white space.
const NOT_BLANK: &str = "\\S";

/// Replaces (or adds) the schema of `property` of component `schema`, keeping its description.
fn set_property(doc: &mut Value, schema: &str, property: &str, fragment: Value) {
    let slot = &mut doc["components"]["schemas"][schema]["properties"][property];
    let description = slot.get("description").cloned();
    *slot = fragment;
    if let Some(d) = description {
        slot["description"] = d;
    }
}

/// Sets the schema of query parameter `name` of `method path`.
fn set_query(doc: &mut Value, path: &str, method: &str, name: &str, schema: Value) {
    if let Some(params) = doc["paths"][path][method]["parameters"].as_array_mut() {
        for p in params.iter_mut().filter(|p| p["name"] == name) {
            p["schema"] = schema.clone();
        }
    }
}

/// `type` or null.
fn nullable(kind: &str, mut rest: Value) -> Value {
    rest["type"] = json!([kind, "null"]);
    rest
}

fn add_constraints(doc: &mut Value, settings: DocSettings) {
    use crate::instances::{exec, validate as v};
    use crate::routes::shares;
    let text = |max: usize| nullable("string", json!({"maxLength": max, "pattern": PRINTABLE}));
    let env_name = json!({
        "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        "not": {"enum": v::RESERVED_ENV},
    });
    let metadata = nullable(
        "object",
        json!({
            "maxProperties": v::MAX_META_KEYS,
            "propertyNames": {"minLength": 1, "maxLength": v::MAX_META_KEY},
            "additionalProperties": {"type": "string", "maxLength": v::MAX_META_VALUE},
        }),
    );
    let env = nullable(
        "object",
        json!({
            "maxProperties": v::MAX_ENV_KEYS,
            "propertyNames": env_name,
            "additionalProperties": {"type": "string", "maxLength": v::MAX_ENV_VALUE, "pattern": "^[^\\u0000]*$"},
        }),
    );
    let expose = nullable(
        "array",
        json!({
            "maxItems": v::MAX_EXPOSED,
            "uniqueItems": true,
            "items": {"type": "integer", "minimum": 1, "maximum": 65535, "not": {"const": berth_runtime::AGENT_PORT}},
        }),
    );
    let sizes: Vec<Value> = berth_core::size::SIZES.iter().map(|s| json!(s.size)).chain([Value::Null]).collect();
    for schema in ["CreateInstance", "UpdateInstance"] {
        set_property(doc, schema, "name", text(v::MAX_NAME));
        set_property(doc, schema, "size", json!({"enum": sizes}));
        set_property(doc, schema, "metadata", metadata.clone());
        set_property(doc, schema, "env", env.clone());
        set_property(doc, schema, "expose", expose.clone());
    }
    // network.egress: one schema for input and output, the validator's own language.
    doc["components"]["schemas"]["Egress"] = json!({
        "description": "Where an instance's traffic may go: `internet` (the server's default policy: the public internet only, not the host, private, link-local, CGNAT, loopback or multicast ranges, nor other instances), `none` (nothing, not even DNS), or `{\"allow\": [...]}` (only these destinations plus DNS; they may be private or the host, but never the server's own ports). A destination is `CIDR[:PORT]` (TCP and UDP): `10.1.2.0/24:5432`, `203.0.113.7`, `fd00::/8`, `[fd00::/8]:443`; host bits are cleared. Applied without a restart.",
        "oneOf": [
            {"type": "string", "enum": ["internet", "none"]},
            {"type": "object", "additionalProperties": false, "required": ["allow"],
             "properties": {"allow": {"type": "array", "maxItems": berth_core::egress::MAX_ALLOW,
                                      "items": {"type": "string", "pattern": berth_core::egress::destination_pattern()}}}},
        ],
    });
    set_property(
        doc,
        "NetworkInput",
        "egress",
        json!({"oneOf": [{"$ref": "#/components/schemas/Egress"}, {"type": "null"}]}),
    );
    set_property(doc, "Network", "egress", json!({"$ref": "#/components/schemas/Egress"}));
    // Templates: what the validators in templates.rs enforce; parts that contradict each
    // other (a port twice, two defaults) are 422 `invalid_template`.
    use crate::templates as tpl;
    let image = json!({"type": "string", "maxLength": 255, "pattern": "^[A-Za-z0-9_][A-Za-z0-9._/:@-]*$"});
    set_property(
        doc,
        "CreateTemplate",
        "name",
        json!({"type": "string", "pattern": format!("^[a-z0-9][a-z0-9-]{{0,{}}}$", tpl::MAX_NAME - 1),
               "not": {"const": crate::instances::SYSTEM_TEMPLATE}}),
    );
    set_property(doc, "CreateTemplate", "image", image.clone());
    set_property(doc, "UpdateTemplate", "image", nullable("string", image));
    doc["components"]["schemas"]["CreateTemplate"]["required"] = json!(["name", "image"]);
    set_property(doc, "CreateTemplate", "build", json!({"type": "null"}));
    doc["components"]["schemas"]["TemplatePort"]["properties"]["port"] =
        json!({"type": "integer", "minimum": 1, "maximum": 65535});
    for schema in ["CreateTemplate", "UpdateTemplate"] {
        set_property(
            doc,
            schema,
            "ports",
            nullable(
                "array",
                json!({"maxItems": tpl::MAX_PORTS, "items": {"$ref": "#/components/schemas/TemplatePort"}}),
            ),
        );
        set_property(
            doc,
            schema,
            "command",
            nullable(
                "array",
                json!({"maxItems": tpl::MAX_ARGS, "items": {"type": "string", "pattern": "^[^\\u0000]*$"}}),
            ),
        );
        set_property(doc, schema, "env", env.clone());
        set_property(
            doc,
            schema,
            "health_path",
            nullable("string", json!({"maxLength": 1024, "pattern": "^(/[^\\u0000-\\u0020\\u007f-\\u009f]*)?$"})),
        );
        set_property(doc, schema, "stdin", json!({"enum": [false, null]}));
        set_property(
            doc,
            schema,
            "agents",
            nullable(
                "array",
                json!({"maxItems": 16, "items": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": PRINTABLE}}),
            ),
        );
        set_property(doc, schema, "default_size", json!({"enum": sizes}));
    }
    // A PATCH without a body changes nothing (and makes no version).
    doc["paths"]["/v1/templates/{id}"]["patch"]["requestBody"]["required"] = json!(false);
    set_property(doc, "CreateInstance", "user", text(v::MAX_USER));
    set_property(doc, "CreateInstance", "region", json!({"enum": ["local", null]}));
    set_property(
        doc,
        "BudgetInput",
        "managed_cap_usd",
        nullable("number", json!({"minimum": 0, "maximum": v::MAX_CAP_USD})),
    );
    set_property(doc, "BudgetInput", "topup_micros", nullable("integer", json!({"minimum": 0, "maximum": i64::MAX})));
    set_property(
        doc,
        "BudgetInput",
        "models",
        nullable(
            "array",
            json!({"maxItems": v::MAX_MODELS,
                   "items": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NOT_BLANK}}),
        ),
    );
    // money
    let topup = json!({"type": "integer", "minimum": 1, "maximum": crate::routes::billing::MAX_TOPUP});
    set_property(doc, "WalletTopup", "micros", topup.clone());
    doc["components"]["schemas"]["WalletTopup"]["required"] = json!(["micros"]);
    set_property(doc, "WalletTopup", "description", text(200));
    set_property(doc, "BudgetTopup", "topup_micros", topup);
    doc["components"]["schemas"]["BudgetTopup"]["required"] = json!(["topup_micros"]);
    // `idle_timeout_secs` only with `cold_start`.
    doc["components"]["schemas"]["Lifecycle"] = json!({
        "description": "How the instance is kept alive: `always_on` (default), or `cold_start` (stopped after `idle_timeout_secs` without traffic, woken by the next request).",
        "oneOf": [
            {"type": "object", "additionalProperties": false, "required": ["mode"],
             "properties": {"mode": {"const": "always_on"}}},
            {"type": "object", "additionalProperties": false, "required": ["mode"],
             "properties": {"mode": {"const": "cold_start"},
                            "idle_timeout_secs": {"type": ["integer", "null"], "minimum": settings.min_idle_timeout_secs,
                                                  "maximum": 30 * 24 * 3600,
                                                  "description": "seconds without traffic before it is stopped (default 900)"}}},
        ],
    });
    // exec
    let argv = json!({"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^[^\\u0000]*$"}});
    let shell = json!({"type": "string", "allOf": [{"pattern": NOT_BLANK}, {"pattern": "^[^\\u0000]*$"}]});
    doc["components"]["schemas"]["Command"] = json!({
        "description": "An argv list (at least one item), or a string run by `/bin/sh -c`.",
        "oneOf": [argv, shell],
    });
    set_property(
        doc,
        "ExecRequest",
        "env",
        nullable(
            "object",
            json!({"propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,127}$"},
                                   "additionalProperties": {"type": "string", "pattern": "^[^\\u0000]*$"}}),
        ),
    );
    set_property(doc, "ExecRequest", "cwd", nullable("string", json!({"pattern": "^/[^\\u0000]*$"})));
    set_property(
        doc,
        "ExecRequest",
        "timeout_secs",
        nullable("integer", json!({"minimum": 1, "maximum": exec::MAX_TIMEOUT})),
    );
    set_property(
        doc,
        "ExecRequest",
        "max_output_bytes",
        nullable("integer", json!({"minimum": 0, "maximum": exec::MAX_CAP})),
    );
    // shares and holds
    set_property(doc, "CreateShare", "port", nullable("integer", json!({"minimum": 1, "maximum": 65535})));
    set_property(
        doc,
        "CreateShare",
        "ttl_secs",
        nullable("integer", json!({"minimum": shares::TTL_MIN, "maximum": shares::TTL_MAX})),
    );
    set_property(doc, "Hold", "ttl_secs", json!({"type": "integer", "minimum": 0, "maximum": shares::TTL_MAX}));
    doc["components"]["schemas"]["Hold"]["required"] = json!(["ttl_secs"]);
    // workspaces and keys
    set_property(
        doc,
        "CreateWorkspace",
        "name",
        json!({"type": "string", "minLength": 1, "maxLength": 100, "allOf": [{"pattern": PRINTABLE}, {"pattern": NOT_BLANK}]}),
    );
    set_property(
        doc,
        "CreateWorkspace",
        "instance_limit",
        nullable("integer", json!({"minimum": 0, "maximum": 100_000})),
    );
    set_property(doc, "CreateKey", "name", text(100));
    set_property(
        doc,
        "CreateKey",
        "expires_in_secs",
        nullable("integer", json!({"minimum": 1, "maximum": crate::routes::workspaces::MAX_KEY_LIFE})),
    );
    // query parameters
    let statuses: Vec<&str> = berth_core::Status::ALL.iter().map(|s| s.as_str()).collect();
    set_query(
        doc,
        "/v1/instances",
        "get",
        "limit",
        json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 50}),
    );
    set_query(doc, "/v1/instances", "get", "status", json!({"type": "string", "enum": statuses}));
    set_query(doc, "/v1/instances", "get", "cursor", json!({"type": "string", "pattern": "^cur_[0-9]{1,18}$"}));
    set_query(
        doc,
        "/v1/instances/{id}/logs",
        "get",
        "lines",
        json!({"type": "integer", "minimum": 1, "maximum": 10_000, "default": 100}),
    );
    set_query(
        doc,
        "/v1/instances/{id}/logs",
        "get",
        "since",
        json!({"type": "integer", "minimum": 0, "maximum": i64::MAX}),
    );
    // Streaming answers.
    for (path, method, what) in [
        ("/v1/instances/{id}/exec", "post", "with `stream: true`: events `stdout` and `stderr` (data: `{\"data\": text}`), then `exit` (data: the result) or `error`"),
        ("/v1/instances/{id}/logs", "get", "with `follow=true`: one message per line (data: a log entry)"),
    ] {
        doc["paths"][path][method]["responses"]["200"]["content"]["text/event-stream"] =
            json!({"schema": {
                "description": format!("Server-Sent Events {what}"),
                "type": "object",
                "properties": {"event": {"type": "string"}, "data": {"type": "string"}, "id": {"type": "string"}},
                "required": ["data"],
            }});
    }
    // Bodies that may be left out (every field has a default).
    for (path, method) in [
        ("/v1/instances", "post"),
        ("/v1/instances/{id}", "patch"),
        ("/v1/instances/{id}/share", "post"),
        ("/v1/keys", "post"),
    ] {
        doc["paths"][path][method]["requestBody"]["required"] = json!(false);
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Inline Markdown of descriptions: `code` spans only.
fn inline(s: &str) -> String {
    let mut out = String::new();
    for (i, part) in escape(s).split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str(&format!("<code>{part}</code>"));
        } else {
            out.push_str(part);
        }
    }
    out
}

/// The schema a `$ref` names, or the schema itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &doc["components"]["schemas"][name],
        None => schema,
    }
}

/// A short type: `string`, `integer | null`, `array of Port`, a link for a `$ref`.
fn type_of(schema: &Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("<a href=\"#schema-{name}\">{name}</a>");
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(alts) = schema[key].as_array() {
            let parts: Vec<String> = alts.iter().map(type_of).filter(|t| !t.is_empty()).collect();
            if !parts.is_empty() && key != "allOf" {
                return parts.join(" | ");
            }
        }
    }
    let kinds: Vec<String> = match &schema["type"] {
        Value::String(k) => vec![k.clone()],
        Value::Array(ks) => ks.iter().filter_map(|k| k.as_str().map(String::from)).collect(),
        _ if schema.get("const").is_some() => vec![format!("<code>{}</code>", escape(&schema["const"].to_string()))],
        _ if schema.get("enum").is_some() => vec!["enum".into()],
        _ => vec![],
    };
    kinds
        .into_iter()
        .map(|k| match k.as_str() {
            "array" => format!("array of {}", type_of(&schema["items"])),
            "object" if schema["additionalProperties"].is_object() => {
                format!("object of {}", type_of(&schema["additionalProperties"]))
            }
            _ => k,
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Every constraint of a schema, in words: what the validators enforce.
fn constraints(schema: &Value) -> Vec<String> {
    let mut out = vec![];
    let num = |k: &str| schema[k].as_f64().map(|n| n.to_string());
    match (num("minimum"), num("maximum")) {
        (Some(a), Some(b)) => out.push(format!("{a} … {b}")),
        (Some(a), None) => out.push(format!("≥ {a}")),
        (None, Some(b)) => out.push(format!("≤ {b}")),
        _ => {}
    }
    for (key, label) in [
        ("minLength", "minLength"),
        ("maxLength", "maxLength"),
        ("minItems", "minItems"),
        ("maxItems", "maxItems"),
        ("maxProperties", "maxProperties"),
    ] {
        if let Some(n) = schema[key].as_u64() {
            out.push(format!("{label} {n}"));
        }
    }
    if schema["uniqueItems"] == true {
        out.push("unique items".into());
    }
    if let Some(values) = schema["enum"].as_array() {
        let vs: Vec<String> = values.iter().map(|v| format!("<code>{}</code>", escape(&v.to_string()))).collect();
        out.push(format!("one of {}", vs.join(", ")));
    }
    if let Some(p) = schema["pattern"].as_str() {
        out.push(format!("pattern <code>{}</code>", escape(p)));
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        out.extend(constraints(part));
    }
    if let Some(no) = schema["not"].as_object() {
        let v = no.get("const").or(no.get("enum")).map(|v| v.to_string()).unwrap_or_default();
        out.push(format!("not <code>{}</code>", escape(&v)));
    }
    if schema["items"].is_object() {
        out.extend(constraints(&schema["items"]).into_iter().map(|c| format!("items: {c}")));
    }
    if schema["propertyNames"].is_object() {
        out.extend(constraints(&schema["propertyNames"]).into_iter().map(|c| format!("keys: {c}")));
    }
    if schema["additionalProperties"].is_object() {
        out.extend(constraints(&schema["additionalProperties"]).into_iter().map(|c| format!("values: {c}")));
    }
    if let Some(d) = schema.get("default") {
        out.push(format!("default <code>{}</code>", escape(&d.to_string())));
    }
    out
}

/// A table of an object schema's fields.
fn fields_table(doc: &Value, schema: &Value) -> String {
    let schema = resolve(doc, schema);
    let Some(props) = schema["properties"].as_object() else {
        if let Some(alts) = schema["oneOf"].as_array() {
            let each: Vec<String> = alts.iter().map(|a| fields_table(doc, a)).collect();
            return format!("<p>One of:</p>{}", each.join("<p>or</p>"));
        }
        return String::new();
    };
    let required: Vec<&str> = schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut rows = String::new();
    for (name, prop) in props {
        let req = if required.contains(&name.as_str()) { " <span class=req>required</span>" } else { "" };
        rows.push_str(&format!(
            "<tr><td><code>{}</code>{req}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            type_of(prop),
            constraints(prop).join("; "),
            inline(prop["description"].as_str().unwrap_or(""))
        ));
    }
    format!("<table><tr><th>field</th><th>type</th><th>constraints</th><th></th></tr>{rows}</table>")
}

/// The API reference page: every operation with its parameters, body fields,
/// constraints and statuses, then every schema. One HTML page with inline CSS
/// and nothing fetched from elsewhere (berth often runs offline).
pub fn render_html(settings: DocSettings) -> String {
    let doc = document_value(settings);
    let mut nav = String::new();
    let mut body = String::new();
    let mut by_tag: std::collections::BTreeMap<String, Vec<(String, String, &Value)>> = Default::default();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in ops.as_object().into_iter().flatten() {
            let tag = op["tags"][0].as_str().unwrap_or("other").to_string();
            by_tag.entry(tag).or_default().push((method.clone(), path.clone(), op));
        }
    }
    for (tag, ops) in &by_tag {
        nav.push_str(&format!("<h4>{}</h4><ul>", escape(tag)));
        body.push_str(&format!("<h2 id=\"tag-{0}\">{0}</h2>", escape(tag)));
        for (method, path, op) in ops {
            let anchor = format!("op-{}-{}", method, path.replace(['/', '{', '}'], "_"));
            let title = format!("{} {}", method.to_uppercase(), path);
            nav.push_str(&format!(
                "<li><a href=\"#{anchor}\"><span class=\"m {method}\">{}</span> {}</a></li>",
                method.to_uppercase(),
                escape(path)
            ));
            body.push_str(&format!("<section id=\"{anchor}\"><h3><code>{}</code></h3>", escape(&title)));
            let text = op["description"].as_str().or(op["summary"].as_str()).unwrap_or("");
            body.push_str(&format!("<p>{}</p>", inline(text)));
            if op.get("security").is_some() {
                body.push_str("<p class=auth>Needs <code>Authorization: Bearer sk_…</code></p>");
            }
            if let Some(params) = op["parameters"].as_array() {
                let mut rows = String::new();
                for p in params {
                    rows.push_str(&format!(
                        "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        escape(p["name"].as_str().unwrap_or("")),
                        escape(p["in"].as_str().unwrap_or("")),
                        type_of(&p["schema"]),
                        constraints(&p["schema"]).join("; "),
                        inline(p["description"].as_str().unwrap_or(""))
                    ));
                }
                body.push_str(&format!(
                    "<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th><th>constraints</th><th></th></tr>{rows}</table>"
                ));
            }
            if let Some(rb) = op["requestBody"].as_object() {
                let schema = &rb["content"]["application/json"]["schema"];
                let optional = if rb.get("required") == Some(&json!(false)) { " (may be left out)" } else { "" };
                body.push_str(&format!("<h4>Body: {}{optional}</h4>", type_of(schema)));
                body.push_str(&fields_table(&doc, schema));
            }
            let mut rows = String::new();
            for (status, resp) in op["responses"].as_object().into_iter().flatten() {
                let resp = match resp["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/responses/")) {
                    Some(name) => &doc["components"]["responses"][name],
                    None => resp,
                };
                let mut types = vec![];
                for (media, content) in resp["content"].as_object().into_iter().flatten() {
                    let t = type_of(&content["schema"]);
                    types.push(if media == "application/json" { t } else { format!("{} ({media})", t) });
                }
                let headers: Vec<String> = resp["headers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(h, _)| format!("header <code>{h}</code>"))
                    .collect();
                rows.push_str(&format!(
                    "<tr><td>{status}</td><td>{}</td><td>{}</td></tr>",
                    types.into_iter().chain(headers).collect::<Vec<_>>().join(", "),
                    inline(resp["description"].as_str().unwrap_or(""))
                ));
            }
            body.push_str(&format!(
                "<h4>Responses</h4><table><tr><th>status</th><th>body</th><th></th></tr>{rows}</table></section>"
            ));
        }
        nav.push_str("</ul>");
    }
    nav.push_str("<h4>schemas</h4><ul>");
    body.push_str("<h2 id=\"schemas\">Schemas</h2>");
    for (name, schema) in doc["components"]["schemas"].as_object().into_iter().flatten() {
        nav.push_str(&format!("<li><a href=\"#schema-{name}\">{name}</a></li>"));
        body.push_str(&format!(
            "<section id=\"schema-{name}\"><h3>{name}</h3><p>{}</p>{}</section>",
            inline(schema["description"].as_str().unwrap_or("")),
            if schema["properties"].is_object() || schema["oneOf"].is_array() {
                fields_table(&doc, schema)
            } else {
                format!("<p>{} {}</p>", type_of(schema), constraints(schema).join("; "))
            }
        ));
    }
    nav.push_str("</ul>");
    format!(
        "<!doctype html><html lang=en><head><meta charset=\"utf-8\"><meta name=viewport content=\"width=device-width\">\
         <title>berth API reference</title><style>\
         body{{font:15px/1.5 system-ui,sans-serif;margin:0;display:flex;color:#222}}\
         nav{{width:19rem;flex:none;height:100vh;overflow:auto;position:sticky;top:0;background:#f6f6f4;padding:0 1rem;font-size:13px}}\
         nav ul{{list-style:none;padding:0;margin:0}} nav a{{text-decoration:none;color:#333}}\
         main{{padding:0 2rem 4rem;max-width:64rem}} section{{border-top:1px solid #ddd;margin-top:1.5rem}}\
         table{{border-collapse:collapse;width:100%;font-size:14px}} td,th{{border-bottom:1px solid #eee;text-align:left;padding:.25rem .5rem;vertical-align:top}}\
         code{{background:#f1f1ee;padding:0 .2rem;border-radius:3px}} .req{{color:#b00;font-size:12px}} .auth{{color:#555;font-size:13px}}\
         .m{{display:inline-block;width:3.6rem;font-weight:600;font-size:11px}} .get{{color:#1a7f37}} .post{{color:#0550ae}} .patch{{color:#8250df}} .delete{{color:#cf222e}}\
         </style></head><body><nav><h3>berth API</h3>{nav}</nav><main><h1>berth hosting API</h1>\
         <p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI 3.1). Every route below needs \
         <code>Authorization: Bearer sk_…</code>; <code>/healthz</code>, <code>/metrics</code>, <code>/openapi.json</code> and \
         <code>/docs</code> do not. Errors are <code>{{\"error\": {{\"code\", \"message\", \"details\"}}}}</code> \
         (<a href=\"#schema-ErrorBody\">ErrorBody</a>).</p>{body}</main></body></html>",
        inline(doc["info"]["description"].as_str().unwrap_or(""))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_documents_the_shared_statuses() {
        let doc = document_value(DocSettings { min_idle_timeout_secs: 60 });
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                for status in ["401", "403", "429", "503"] {
                    assert!(responses.contains_key(status), "{method} {path} lacks {status}");
                }
                if path.contains('{') {
                    assert!(responses.contains_key("404"), "{method} {path} lacks 404");
                }
            }
        }
        assert_eq!(doc["components"]["schemas"]["CreateInstance"]["properties"]["name"]["maxLength"], 100);
        assert_eq!(
            doc["components"]["schemas"]["Lifecycle"]["oneOf"][1]["properties"]["idle_timeout_secs"]["minimum"],
            60
        );
    }
}
