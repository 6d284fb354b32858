//! The Redis/Valkey counter store, shared by every gateway replica that points at it.
//!
//! One Lua script per call checks and counts all of the call's counters at once (Redis runs a
//! script atomically), with the same rules as `window.rs`, on Redis's own clock (`TIME`), so
//! replicas whose clocks disagree still count one window. A counter is a hash: `c:<bucket>` →
//! calls, `l:<bucket>` → time of the newest call; old buckets are pruned as the script runs
//! and idle counters expire. Keys carry the server in a hash tag (`toolgate:{server}:...`), so
//! one call's counters share a cluster slot.
//!
//! When Redis cannot be reached the store answers an error at once (short timeouts, and a
//! connection that is re-established in the background), and `on_error` decides.

use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

use super::window::BUCKETS;
use super::{
    CounterKey, CounterStore, Limited, Need, Reservation, ReserveResult, StoreError, window_ms,
};

/// How long one Redis round trip may take before the call is decided by `on_error`.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

const RESERVE: &str = r#"
-- KEYS[1]: this call's id key; KEYS[2..]: the call's counters.
-- ARGV: buckets per window, then window_ms and max per counter.
-- A call id already present means the gateway gave up on this call (see CANCEL): do nothing.
if redis.call('EXISTS', KEYS[1]) == 1 then return {2} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local B = tonumber(ARGV[1])
local seen = {}
for i = 2, #KEYS do
  local key = KEYS[i]
  local w = tonumber(ARGV[2 * (i - 1)])
  local max = tonumber(ARGV[2 * (i - 1) + 1])
  local flat = redis.call('HGETALL', key)
  local counts, lasts = {}, {}
  for j = 1, #flat, 2 do
    local kind, b = string.sub(flat[j], 1, 1), tonumber(string.sub(flat[j], 3))
    if kind == 'c' then counts[b] = tonumber(flat[j + 1]) else lasts[b] = tonumber(flat[j + 1]) end
  end
  local used, counted = 0, {}
  for b, c in pairs(counts) do
    local l = lasts[b] or 0
    if c > 0 and now < l + w then
      used = used + c
      table.insert(counted, {l, c})
    end
  end
  if used >= max then
    table.sort(counted, function(x, y) return x[1] < y[1] end)
    local retry = w
    for _, e in ipairs(counted) do
      used = used - e[2]
      if used < max then retry = e[1] + w - now break end
    end
    return {0, i - 1, retry}
  end
  seen[i] = {w, counts}
end
local out = {1}
for i = 2, #KEYS do
  local key = KEYS[i]
  local w, counts = seen[i][1], seen[i][2]
  local g = math.floor(w / B)
  local b = math.floor(now / g)
  redis.call('HINCRBY', key, 'c:' .. b, 1)
  local l = tonumber(redis.call('HGET', key, 'l:' .. b) or '0')
  if now > l then redis.call('HSET', key, 'l:' .. b, now) end
  for old, _ in pairs(counts) do
    if old < b - B then redis.call('HDEL', key, 'c:' .. old, 'l:' .. old) end
  end
  redis.call('PEXPIRE', key, 2 * w)
  redis.call('HSET', KEYS[1], key, b)
  out[i] = b
end
redis.call('PEXPIRE', KEYS[1], 120000)
return out
"#;

/// Sent when a reservation's answer did not come in time: the script may run later (Redis
/// was slow or paused), and a call the agent was told is refused must not count. Releases
/// what the call took if it ran; otherwise leaves a mark so that it never will.
const CANCEL: &str = r#"
-- KEYS[1]: the call's id key; KEYS[2..]: its counters (declared for cluster routing).
local m = redis.call('HGETALL', KEYS[1])
for j = 1, #m, 2 do
  if m[j] ~= '_' then
    local f = 'c:' .. m[j + 1]
    local c = tonumber(redis.call('HGET', m[j], f) or '0')
    if c > 0 then redis.call('HINCRBY', m[j], f, -1) end
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_', 'cancelled')
redis.call('PEXPIRE', KEYS[1], 120000)
return 1
"#;

const RELEASE: &str = r#"
-- KEYS: counters; ARGV: the bucket each was counted in.
for i, key in ipairs(KEYS) do
  local f = 'c:' .. ARGV[i]
  local c = tonumber(redis.call('HGET', key, f) or '0')
  if c > 0 then redis.call('HINCRBY', key, f, -1) end
end
return 1
"#;

pub struct RedisStore {
    client: redis::Client,
    connection: OnceCell<ConnectionManager>,
    reserve: redis::Script,
    release: redis::Script,
    cancel: redis::Script,
}

impl RedisStore {
    /// A store for `url`. Nothing is connected yet: the first call connects, so a gateway
    /// whose Redis is down starts, and answers per `on_error` until Redis is back.
    pub fn new(url: &str) -> Result<RedisStore, String> {
        let client = redis::Client::open(url).map_err(|e| format!("counters.url: {e}"))?;
        Ok(RedisStore {
            client,
            connection: OnceCell::new(),
            reserve: redis::Script::new(RESERVE),
            release: redis::Script::new(RELEASE),
            cancel: redis::Script::new(CANCEL),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let manager = self
            .connection
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(manager.clone())
    }

    /// Whether Redis answers a PING.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.connection().await?;
        let pong: Result<String, _> = tokio::time::timeout(
            RESPONSE_TIMEOUT * 2,
            redis::cmd("PING").query_async(&mut conn),
        )
        .await
        .map_err(|_| StoreError("Redis did not answer in time".into()))?;
        pong.map(|_| ()).map_err(|e| StoreError(e.to_string()))
    }

    /// Cancels a reservation whose answer never came, retrying until Redis answers (for at
    /// most the two minutes the call's id key lives).
    fn cancel_later(
        &self,
        mut conn: ConnectionManager,
        call_key: String,
        counter_keys: Vec<String>,
    ) {
        let script = self.cancel.clone();
        tokio::spawn(async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(110);
            while std::time::Instant::now() < deadline {
                let mut invocation = script.prepare_invoke();
                invocation.key(&call_key);
                for k in &counter_keys {
                    invocation.key(k);
                }
                let done: Result<Result<i64, _>, _> =
                    tokio::time::timeout(RESPONSE_TIMEOUT * 4, invocation.invoke_async(&mut conn))
                        .await;
                if matches!(done, Ok(Ok(_))) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tracing::error!("could not cancel a timed-out counter reservation; it may count once");
        });
    }

    fn key(k: &CounterKey) -> String {
        format!("toolgate:{{{}}}:{}", k.server, k.text())
    }
}

impl CounterStore for RedisStore {
    async fn reserve(&self, needs: &[Need]) -> ReserveResult {
        let mut needs: Vec<&Need> = needs.iter().collect();
        needs.sort_by(|a, b| a.key.cmp(&b.key).then(a.max.cmp(&b.max)));
        needs.dedup_by(|a, b| a.key == b.key);
        let Some(first) = needs.first() else {
            return Ok(Ok(Reservation::default()));
        };
        let call_key = format!(
            "toolgate:{{{}}}:call:{:016x}",
            first.key.server,
            rand::random::<u64>()
        );
        let counter_keys: Vec<String> = needs.iter().map(|n| Self::key(&n.key)).collect();
        let mut conn = self.connection().await?;
        let mut invocation = self.reserve.prepare_invoke();
        invocation.key(&call_key).arg(BUCKETS);
        for (n, key) in needs.iter().zip(&counter_keys) {
            invocation.key(key).arg(window_ms(n.window)).arg(n.max);
        }
        let answer: Result<Vec<i64>, StoreError> =
            match tokio::time::timeout(RESPONSE_TIMEOUT * 2, invocation.invoke_async(&mut conn))
                .await
            {
                Ok(result) => result.map_err(|e| StoreError(e.to_string())),
                Err(_) => Err(StoreError("Redis did not answer in time".into())),
            };
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                // Whatever went wrong (a timeout, a dropped connection), the script may have
                // reached Redis and may still run: cancel it, in the background, so that a
                // call refused here never counts there. Cancelling is harmless if it never ran.
                self.cancel_later(conn, call_key, counter_keys);
                return Err(e);
            }
        };
        match answer.as_slice() {
            [1, buckets @ ..] if buckets.len() == needs.len() => Ok(Ok(Reservation {
                taken: needs
                    .iter()
                    .zip(buckets)
                    .map(|(n, b)| (n.key.clone(), n.window, *b))
                    .collect(),
            })),
            [0, i, retry_ms] => {
                let n = needs
                    .get((*i as usize).wrapping_sub(1))
                    .ok_or_else(|| StoreError("bad script answer".into()))?;
                Ok(Err(Limited {
                    counter: n.key.name.to_string(),
                    max: n.max,
                    window: n.window,
                    rule: n.rule.clone(),
                    retry_after_s: ((*retry_ms).max(1) as u64).div_ceil(1000),
                }))
            }
            other => Err(StoreError(format!("unexpected script answer {other:?}"))),
        }
    }

    async fn release(&self, reservation: Reservation) {
        let Ok(mut conn) = self.connection().await else {
            tracing::warn!("cannot release counters: Redis unavailable");
            return;
        };
        // One script per server, as keys of one script must share a cluster slot.
        let mut by_server: std::collections::BTreeMap<
            &str,
            Vec<&(CounterKey, toolgate_policy::Window, i64)>,
        > = Default::default();
        for t in &reservation.taken {
            by_server.entry(&t.0.server).or_default().push(t);
        }
        for taken in by_server.values() {
            let mut invocation = self.release.prepare_invoke();
            for (key, _, bucket) in taken {
                invocation.key(Self::key(key)).arg(*bucket);
            }
            let result: Result<i64, _> = invocation.invoke_async(&mut conn).await;
            if let Err(e) = result {
                tracing::warn!("cannot release counters: {e}");
            }
        }
    }
}
