//! Reservation cost per call for each counter store (issue 4): one limit and two limits per
//! call, embedded and Redis. Redis is a real `redis-server` this bench starts on a free port
//! (skipped, with a message, when none is installed). Run: `cargo bench -p toolgate --bench counters`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use toolgate::counters::embedded::EmbeddedStore;
use toolgate::counters::redis::RedisStore;
use toolgate::counters::{CounterKey, CounterStore, Need, SystemClock};
use toolgate_policy::{Scope, Window};

fn need(name: &str, scope: Scope, owner: &str) -> Need {
    Need {
        key: CounterKey {
            server: "bench".into(),
            scope,
            owner: owner.into(),
            name: name.into(),
        },
        window: Window::Minute,
        // High enough never to refuse: the bench measures admission.
        max: u64::MAX / 2,
        rule: format!("/tools/t/limits/{name}").into(),
    }
}

fn needs() -> (Vec<Need>, Vec<Need>) {
    let one = vec![need("calls", Scope::Grant, "g1")];
    let two = vec![
        need("calls", Scope::Grant, "g1"),
        need("writes", Scope::Session, "s1"),
    ];
    (one, two)
}

struct RedisServer(Child, u16);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<RedisServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let server = RedisServer(child, port);
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(server);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (one, two) = needs();

    let embedded = Arc::new(EmbeddedStore::in_memory(Arc::new(SystemClock)));
    c.bench_function("reserve/embedded/1-limit", |b| {
        b.to_async(&rt)
            .iter(|| async { embedded.reserve(&one).await.unwrap().unwrap() })
    });
    c.bench_function("reserve/embedded/2-limits", |b| {
        b.to_async(&rt)
            .iter(|| async { embedded.reserve(&two).await.unwrap().unwrap() })
    });

    match start_redis() {
        Some(server) => {
            let store = RedisStore::new(&format!("redis://127.0.0.1:{}", server.1)).unwrap();
            rt.block_on(async { store.reserve(&one).await.unwrap().unwrap() });
            c.bench_function("reserve/redis/1-limit", |b| {
                b.to_async(&rt)
                    .iter(|| async { store.reserve(&one).await.unwrap().unwrap() })
            });
            c.bench_function("reserve/redis/2-limits", |b| {
                b.to_async(&rt)
                    .iter(|| async { store.reserve(&two).await.unwrap().unwrap() })
            });
        }
        None => eprintln!(
            "redis-server not found or not starting: Redis benches skipped (apt-get install redis-server)"
        ),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
