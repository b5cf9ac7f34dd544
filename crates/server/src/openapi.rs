//! The OpenAPI 3.1 document of the hosting API, generated from the handlers'
//! annotations and the `api-types` schemas, and a plain HTML reference of it.

use crate::routes::{instances, operate, shares, shell, templates, workspaces};
use berth_api_types as t;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "berth hosting API", description = "Create and manage instances: persistent, isolated computers running an AI agent."),
    paths(
        instances::create, instances::list, instances::retrieve, instances::update, instances::delete,
        instances::lifecycle,
        operate::exec_command, operate::logs, operate::health, operate::events, shell::shell,
        shares::create_share, shares::list_shares, shares::revoke_share, shares::hold,
        templates::list, templates::retrieve,
        workspaces::create_workspace, workspaces::list_workspaces,
        workspaces::create_key, workspaces::list_keys, workspaces::delete_key,
    ),
    components(schemas(
        t::Instance, t::CreateInstance, t::UpdateInstance, t::BudgetInput, t::Budget, t::Lifecycle, t::TemplateRef,
        t::SizeInfo, t::Port, t::Purged, t::Workspace, t::CreateWorkspace, t::ApiKey, t::CreateKey, t::ErrorBody,
        t::ErrorDetail, t::Healthz, t::ExecRequest, t::ExecResult, t::Command, t::Logs, t::LogEntry,
        t::InstanceHealth, t::GatewayHealth, t::Event, t::Template, t::TemplatePort, t::CreateShare, t::Share,
        t::ShareRevoked, t::Hold,
    )),
    modifiers(&BearerAuth),
    tags((name = "instances"), (name = "operate"), (name = "shares"), (name = "templates"), (name = "workspaces"), (name = "keys"))
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

/// The document as a value.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as JSON text.
pub fn document_json() -> String {
    document().to_pretty_json().unwrap_or_else(|_| "{}".into())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A self-contained HTML reference (no CDN: berth often runs offline).
pub fn render_html() -> String {
    let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap_or_default();
    let mut body = String::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, ops) in paths {
            for (method, op) in ops.as_object().into_iter().flatten() {
                let summary = op["summary"].as_str().or(op["description"].as_str()).unwrap_or("");
                body.push_str(&format!(
                    "<section><h3><code>{} {}</code></h3><p>{}</p>",
                    method.to_uppercase(),
                    escape(path),
                    escape(summary)
                ));
                if let Some(schema) = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].as_str() {
                    let name = schema.rsplit('/').next().unwrap_or(schema);
                    body.push_str(&format!("<p>Body: <a href=\"#{name}\">{name}</a></p>"));
                }
                body.push_str("<ul>");
                for (status, resp) in op["responses"].as_object().into_iter().flatten() {
                    body.push_str(&format!(
                        "<li>{status}: {}</li>",
                        escape(resp["description"].as_str().unwrap_or(""))
                    ));
                }
                body.push_str("</ul></section>");
            }
        }
    }
    body.push_str("<h2>Schemas</h2>");
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for (name, schema) in schemas {
            let pretty = serde_json::to_string_pretty(schema).unwrap_or_default();
            body.push_str(&format!("<h3 id=\"{name}\">{name}</h3><pre>{}</pre>", escape(&pretty)));
        }
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>berth API reference</title>\
         <style>body{{font-family:sans-serif;max-width:60rem;margin:auto;padding:1rem}}pre{{background:#f4f4f4;padding:.5rem;overflow:auto}}</style>\
         </head><body><h1>berth hosting API</h1><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a>. \
         Every route but /healthz, /metrics, /openapi.json and /docs needs <code>Authorization: Bearer sk_...</code>.</p>{body}</body></html>"
    )
}
