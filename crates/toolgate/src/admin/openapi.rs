//! The OpenAPI 3.1 document of the admin API, served at `/admin/api/v1/openapi.json`.
//! Written by hand next to the handlers (`api.rs`) it describes; the schemathesis run in CI
//! checks that every response matches it.

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn r(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn list_of(name: &str) -> Value {
    json!({"type": "array", "items": r(name)})
}

pub fn document() -> Value {
    let unauthorized = error_response("No or wrong admin token");
    let forbidden = error_response("Host or Origin not allowed");
    let not_found = error_response("No such server, grant or version");
    let server_param =
        json!({"name": "server", "in": "path", "required": true, "schema": {"type": "string"}});
    let id_param =
        json!({"name": "id", "in": "path", "required": true, "schema": {"type": "string"}});
    let grant_query = json!({"name": "grant", "in": "query", "required": false, "schema": {"type": "string"},
        "description": "A grant id: the grant's own policy instead of the server's"});
    let common = |mut responses: serde_json::Map<String, Value>| {
        responses.insert("401".into(), unauthorized.clone());
        responses.insert("403".into(), forbidden.clone());
        responses
            .entry("400")
            .or_insert_with(|| error_response("Bad request (parameters, path or body)"));
        Value::Object(responses)
    };
    let m = |pairs: Vec<(&str, Value)>| {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect::<serde_json::Map<_, _>>()
    };
    json!({
        "openapi": "3.1.0",
        "info": {"title": "toolgate admin API", "version": "1", "description": "Grants, policies and servers of a toolgate MCP gateway."},
        "servers": [{"url": "/admin/api/v1"}],
        "security": [{"adminToken": []}],
        "paths": {
            "/servers": {"get": {"operationId": "listServers", "summary": "Configured servers",
                "responses": common(m(vec![("200", ok("Servers", list_of("Server")))]))}},
            "/servers/{server}": {"get": {"operationId": "getServer", "parameters": [server_param],
                "responses": common(m(vec![("200", ok("The server", r("Server"))), ("404", not_found.clone())]))}},
            "/servers/{server}/tools": {"get": {"operationId": "listServerTools", "summary": "The server's tools, listed live from the upstream",
                "parameters": [server_param],
                "responses": common(m(vec![
                    ("200", ok("Tool names", json!({"type": "object", "required": ["server", "tools"], "properties": {
                        "server": {"type": "string"}, "tools": {"type": "array", "items": {"type": "string"}}}}))),
                    ("404", not_found.clone()),
                    ("502", error_response("The upstream could not be reached")),
                ]))}},
            "/servers/{server}/policy": {
                "get": {"operationId": "getPolicy", "summary": "The newest stored policy version",
                    "parameters": [server_param, grant_query],
                    "responses": common(m(vec![("200", ok("The policy", r("PolicyVersion"))), ("400", error_response("Bad request")), ("404", not_found.clone())]))},
                "put": {"operationId": "applyPolicy", "summary": "Store a new version (validated first; refused with every error if invalid)",
                    "parameters": [server_param, grant_query],
                    "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object"}}}},
                    "responses": common(m(vec![
                        ("201", ok("The stored version", r("PolicyVersion"))),
                        ("400", error_response("Bad request")),
                        ("404", not_found.clone()),
                        ("422", error_response("The policy is invalid; its problems are listed")),
                    ]))}
            },
            "/servers/{server}/policy/versions": {"get": {"operationId": "listPolicyVersions",
                "parameters": [server_param, grant_query],
                "responses": common(m(vec![("200", ok("Versions, oldest first", list_of("VersionInfo"))), ("400", error_response("Bad request")), ("404", not_found.clone())]))}},
            "/servers/{server}/policy/versions/{version}": {"get": {"operationId": "getPolicyVersion",
                "parameters": [server_param, {"name": "version", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0}}, grant_query],
                "responses": common(m(vec![("200", ok("The version", r("PolicyVersion"))), ("400", error_response("Bad request")), ("404", not_found.clone())]))}},
            "/grants": {
                "get": {"operationId": "listGrants", "summary": "Every grant (never tokens)",
                    "responses": common(m(vec![("200", ok("Grants", list_of("Grant")))]))},
                "post": {"operationId": "createGrant", "summary": "Issue a grant; its token is in this answer only",
                    "requestBody": {"required": true, "content": {"application/json": {"schema": r("NewGrant")}}},
                    "responses": common(m(vec![
                        ("201", ok("The grant and its token", r("IssuedGrant"))),
                        ("400", error_response("Bad request")),
                        ("404", not_found.clone()),
                        ("422", error_response("The policy is invalid")),
                    ]))}
            },
            "/grants/{id}": {"get": {"operationId": "getGrant", "parameters": [id_param],
                "responses": common(m(vec![("200", ok("The grant", r("Grant"))), ("404", not_found.clone())]))}},
            "/grants/{id}/rotate": {"post": {"operationId": "rotateGrant", "summary": "A new token; the old one is dead at once",
                "parameters": [id_param],
                "responses": common(m(vec![("200", ok("The grant and its new token", r("IssuedGrant"))), ("404", not_found.clone()),
                    ("409", error_response("A config grant, or revoked"))]))}},
            "/grants/{id}/revoke": {"post": {"operationId": "revokeGrant", "summary": "Revoke; its token and sessions are dead at once",
                "parameters": [id_param],
                "responses": common(m(vec![("200", ok("The revoked grant", r("Grant"))), ("404", not_found.clone()),
                    ("409", error_response("A config grant, or already revoked"))]))}},
            "/audit": {"get": {"operationId": "queryAudit", "summary": "Audit records, oldest first (the newest `limit`)",
                "parameters": [
                    {"name": "grant", "in": "query", "required": false, "schema": {"type": "string"}, "description": "A grant id or label"},
                    {"name": "tool", "in": "query", "required": false, "schema": {"type": "string"}},
                    {"name": "outcome", "in": "query", "required": false, "schema": {"type": "string"}},
                    {"name": "since", "in": "query", "required": false, "schema": {"type": "string"}, "description": "RFC 3339, inclusive"},
                    {"name": "until", "in": "query", "required": false, "schema": {"type": "string"}, "description": "RFC 3339, exclusive"},
                    {"name": "after_seq", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0}}
                ],
                "responses": common(m(vec![("200", ok("Records", list_of("AuditRecord"))), ("400", error_response("Bad request"))]))}},
            "/policies/validate": {"post": {"operationId": "validatePolicy", "summary": "Check a document without storing it",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {}}}},
                "responses": common(m(vec![("200", ok("Errors and warnings", r("Validation")))]))}},
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
                    "required": ["code", "message"], "properties": {
                        "code": {"type": "string"}, "message": {"type": "string"},
                        "problems": {"type": "array", "items": r("Problem")}}}}},
                "Problem": {"type": "object", "required": ["pointer", "message"], "properties": {
                    "pointer": {"type": "string"}, "message": {"type": "string"}}},
                "Server": {"type": "object", "required": ["name", "transport", "policy_file"], "properties": {
                    "name": {"type": "string"}, "transport": {"enum": ["stdio", "http"]},
                    "policy_file": {"type": ["string", "null"]}}},
                "Grant": {"type": "object", "required": ["id", "label", "server", "source", "status", "created_at", "rotated_at", "revoked_at"],
                    "properties": {
                        "id": {"type": "string"}, "label": {"type": "string"}, "server": {"type": "string"},
                        "source": {"enum": ["config", "store"]}, "status": {"enum": ["active", "revoked"]},
                        "created_at": {"type": ["integer", "null"]}, "rotated_at": {"type": ["integer", "null"]},
                        "revoked_at": {"type": ["integer", "null"]}}},
                "NewGrant": {"type": "object", "required": ["server", "label"], "additionalProperties": false, "properties": {
                    "server": {"type": "string"}, "label": {"type": "string", "minLength": 1, "maxLength": 64},
                    "policy": {"type": ["object", "null"], "description": "The grant's own policy document"}}},
                "IssuedGrant": {"type": "object", "required": ["grant", "token"], "properties": {
                    "grant": r("Grant"), "token": {"type": "string", "pattern": "^tg_"}}},
                "PolicyVersion": {"type": "object", "required": ["server", "grant", "version", "created_at", "document"], "properties": {
                    "server": {"type": "string"}, "grant": {"type": ["string", "null"]},
                    "version": {"type": "integer", "minimum": 1}, "created_at": {"type": "integer"},
                    "document": {"type": "object"}}},
                "VersionInfo": {"type": "object", "required": ["version", "created_at"], "properties": {
                    "version": {"type": "integer", "minimum": 1}, "created_at": {"type": "integer"}}},
                "AuditRecord": {"type": "object", "required": ["seq", "time", "request_id", "server", "argument_keys", "http_status", "decision_us"],
                    "properties": {
                        "seq": {"type": "integer"}, "time": {"type": "string"}, "request_id": {"type": "string"},
                        "grant_id": {"type": ["string", "null"]}, "grant_label": {"type": ["string", "null"]},
                        "session": {"type": ["string", "null"]}, "server": {"type": "string"},
                        "method": {"type": ["string", "null"]}, "tool": {"type": ["string", "null"]},
                        "argument_keys": {"type": "array", "items": {"type": "string"}},
                        "arguments": {}, "outcome": {"type": ["string", "null"]},
                        "rule": {"type": ["string", "null"]}, "policy_version": {"type": ["integer", "null"]},
                        "http_status": {"type": "integer"}, "upstream_status": {"type": ["string", "null"]},
                        "decision_us": {"type": "integer"}, "upstream_us": {"type": ["integer", "null"]},
                        "message": {"type": ["string", "null"]}}},
                "Validation": {"type": "object", "required": ["valid", "errors", "warnings"], "properties": {
                    "valid": {"type": "boolean"}, "errors": {"type": "array", "items": r("Problem")},
                    "warnings": {"type": "array", "items": r("Problem")}}}
            }
        }
    })
}
