//! Micro-benchmarks of the request path's pieces besides policy evaluation (in
//! `toolgate-policy`) and counter reservation (`counters`): JSON-RPC framing (envelope read,
//! id splice, the tools/call params the policy needs), tools/list filtering, and handing an
//! audit record to the journal. Run: `cargo bench -p toolgate --bench request_path`.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use toolgate::audit::journal::Options;
use toolgate::audit::{ArgumentsMode, Audit, AuditRecord};
use toolgate::jsonrpc::{self, CallParams, Envelope};

const CALL: &[u8] = br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"create_refund","arguments":{"charge_id":"ch_1","amount":50,"reason":"duplicate","meta":{"ticket":"T-1"}},"_meta":{"progressToken":"p1"}}}"#;

fn tools_list(n: usize) -> Bytes {
    let tools: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"name":"tool_{i:02}","description":"Does thing {i}.","inputSchema":{{"type":"object","properties":{{"id":{{"type":"string"}}}},"required":["id"]}}}}"#))
        .collect();
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":7,"result":{{"tools":[{}]}}}}"#,
        tools.join(",")
    ))
}

fn bench(c: &mut Criterion) {
    c.bench_function("jsonrpc/envelope+kind", |b| {
        b.iter(|| {
            let env = Envelope::parse(black_box(CALL)).unwrap();
            black_box(env.kind().unwrap());
        })
    });
    c.bench_function("jsonrpc/envelope+params+strict-arguments", |b| {
        b.iter(|| {
            let env = Envelope::parse(black_box(CALL)).unwrap();
            let p: CallParams = serde_json::from_str(env.params.unwrap().get()).unwrap();
            black_box(p.arguments.unwrap().0);
        })
    });
    c.bench_function("jsonrpc/id-splice", |b| {
        b.iter(|| {
            let env = Envelope::parse(black_box(CALL)).unwrap();
            let range = jsonrpc::span_in(CALL, env.id.unwrap().get()).unwrap();
            black_box(jsonrpc::splice(CALL, range, b"1234"));
        })
    });
    let list = tools_list(60);
    let hiding = toolgate_policy::Policy::parse(
        r#"{"version":"1","default":"allow","hide":["tool_07","tool_33"]}"#,
    )
    .unwrap();
    c.bench_function("tools-list/filter-60-tools-hide-2", |b| {
        b.iter(|| {
            black_box(toolgate::answers::filter_tools_list(
                &hiding,
                black_box(list.clone()),
                toolgate::answers::Revision::Sessions,
            ))
        })
    });

    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open(Options {
        enabled: true,
        dir: dir.path().to_path_buf(),
        arguments: ArgumentsMode::Redacted,
        secret_patterns: vec![],
        retention_days: 1,
        max_bytes: 1 << 30,
        segment_bytes: 64 << 20,
        shared: false,
    })
    .unwrap();
    let record = AuditRecord {
        time: "2026-11-26T00:00:00.000Z".into(),
        request_id: "0123456789abcdef".into(),
        server: "s".into(),
        tool: Some("create_refund".into()),
        argument_keys: vec!["charge_id".into(), "amount".into()],
        ..Default::default()
    };
    // Serialise the record and copy it into the mapped segment: all a call waits for.
    c.bench_function("audit/write", |b| b.iter(|| audit.write(record.clone())));
}

criterion_group!(benches, bench);
criterion_main!(benches);
