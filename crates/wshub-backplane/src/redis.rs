//! The Redis backplane (feature `redis`): any number of nodes sharing one Redis server.
//!
//! # Data layout (every key and channel starts with [`BackplaneConfig::prefix`], then `:`)
//!
//! | key or channel | type | what |
//! |---|---|---|
//! | `meta:<room>` | hash `e`, `s`, `r` | the room's epoch and latest offset, and the `run_id`:`master_replid` of the Redis server that wrote them; expires `meta_ttl` after its last use |
//! | `stream:<room>` | stream | retained publications, entry id `<offset>-0`, fields `t` (ms) and `d` (payload); at most `max_messages`, expires `ttl` after the last publish |
//! | `pz:<room>`, `ph:<room>` | sorted set, hash | presence: client → expiry (ms), client → user |
//! | channel `room:<room>` | pub/sub | `P <offset> <epoch> <payload>`, or `E <origin node> <payload>` (room event) |
//! | channel `node:<12 hex digits>` | pub/sub | requests to one node: `Q <asking node> <request id> S <client> <payload>` (send) or `Q <asking node> <request id> D <client>` (disconnect); answers to the asking node: `A <request id> <ok, none or refused>` |
//! | channel `broadcast` | pub/sub | `<origin node, 12 hex digits> <payload>` |
//!
//! # Why it keeps the promises of [`Backplane`]
//!
//! A publish is one Lua script (as centrifuge's Redis broker does): `HINCRBY` of the
//! offset, `XADD` to the stream, `PUBLISH` to the room's channel. Redis runs scripts one at a
//! time, so offsets are gap-free and the channel carries them in offset order. A room whose
//! `meta` hash is gone (expired, or Redis lost its data) gets a new epoch, chosen by the
//! caller and written by the script that finds it missing, and its stale stream is dropped.
//! So does a room whose `meta` was written under another Redis process or replication
//! history (its `run_id` and `master_replid`): Redis restarted from a snapshot, a replica
//! took over, or the server resynchronised from a lagging master and was promoted again;
//! each may hold less than was numbered before, and numbering on from there would give two
//! publications one offset. The price: after any Redis restart or failover, rooms start
//! new epochs, and clients resuming across it are told `recovered: false`.
//! Times come from Redis (`TIME`), so node clocks do not matter.
//!
//! Delivery uses RESP3 push messages on one multiplexed connection (redis-rs's
//! `ConnectionManager`), which reconnects with backoff and resubscribes every channel by
//! itself. What was published while the connection was down is lost from the channel:
//! [`Event::Resumed`] tells the node, which catches up from the streams.
//!
//! Presence entries carry an expiry; this node refreshes its own every third of
//! [`BackplaneConfig::presence_ttl`], so a dead node's entries are gone within that ttl.
//! Reading presence drops expired entries first.
//!
//! Offsets are Lua numbers inside the scripts: exact up to 2⁵³, far beyond any room's life.
//!
//! # Send and disconnect: a request and its answer over the node channels
//!
//! Redis pub/sub has no replies, so a send is a request published on the holding node's
//! channel, and the answer a message published back on the asking node's own channel: both
//! channels exist anyway, so no subscription is made per request. The asking node numbers
//! its requests and keeps, per pending request, the [`oneshot`] its caller waits on; the
//! holding node hands the [`Event::Send`] or [`Event::Disconnect`] to its server, and once
//! the server answers through the event's [`Reply`] publishes
//! `A <request id> <answer>` to `node:<asking node>`. `PUBLISH` tells how many subscribers
//! got the request, so a node that is gone (its connection closed, whether it stopped or
//! was killed: Redis drops its subscriptions with the connection) is known at once:
//! [`Routed::NoSuchNode`]. A node that got the request and does not answer within
//! [`BackplaneConfig::answer_timeout`] (hung, or overloaded) makes it [`Routed::Unanswered`];
//! its late answer is dropped. A node that does not know `Q` (wshub before answers) ignores
//! it, so during a rolling upgrade a send from a new node to an old one is unanswered (and
//! not delivered); an old node's `S <client> <payload>` and `D <client>` are still served,
//! without an answer.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::{StreamExt, stream::FuturesUnordered};
use redis::{
    AsyncTypedCommands, Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Script,
    Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};
use tokio::{
    sync::{Notify, mpsc, oneshot},
    task::JoinHandle,
};
use wshub_protocol::{ConnectionId, Epoch, Offset, RoomName, StreamPosition};

use crate::{
    Answer, Backplane, BackplaneConfig, BoxFuture, Error, Event, Events, Health, HistoryPage,
    HistoryRange, PresenceMember, Publication, Reply, Routed, answer_within, answer_word,
    history::new_epoch, node_hex, parse_answer,
};

/// How often the connection is checked (a `PING`), which is also how fast a lost
/// connection is noticed when no command is running.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);

/// The start of every script that reads or writes a room's record: `room_epoch(meta,
/// stream, fresh)` is the room's epoch, made `fresh` (its stale stream dropped, offsets from
/// 0) when the room has no record, or when its record (field `r`: `<run_id>:<replid>` of
/// `INFO server` and `INFO replication`) was written by another dataset's history than
/// this one: another process (Redis restarted, from a snapshot that may be older than what
/// was numbered since, or a replica took over, which may lag), or this process under
/// another replication id after a promotion (`master_replid2` set: it took a dataset from
/// a master that may have lagged, by a full resynchronisation, and was made primary again).
/// What it holds may not continue what was numbered before, so the room's history starts
/// again in a new epoch rather than numbering offsets twice. A replication id that changed
/// without a promotion (Redis does so when it creates or frees its replication backlog: the
/// first replica attaching, the last one gone for `repl-backlog-ttl`) keeps the dataset:
/// the record takes the new id and keeps its epoch. (A Redis-compatible server without
/// these fields gets empty ones: no such detection.)
const ROOM_EPOCH: &str = r"
local function room_epoch(meta, stream, fresh)
  local run = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') or ''
  local replication = redis.call('INFO', 'replication')
  local replid = string.match(replication, 'master_replid:(%x+)') or ''
  local replid2 = string.match(replication, 'master_replid2:(%x+)') or ''
  local promoted = string.find(replid2, '[^0]') ~= nil
  local identity = run .. ':' .. replid
  local record = redis.call('HMGET', meta, 'e', 'r')
  if record[1] and record[2] then
    local written_run, written_replid = string.match(record[2], '^(%x*):(%x*)$')
    if written_run == run and (written_replid == replid or not promoted) then
      if written_replid ~= replid then
        redis.call('HSET', meta, 'r', identity)
      end
      return record[1]
    end
  end
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', fresh, 's', 0, 'r', identity)
  return fresh
end
";

/// Numbers, stores and publishes one publication. KEYS: meta, stream. ARGV: payload, new
/// epoch, max messages, ttl ms, meta ttl ms, channel.
const PUBLISH: &str = r"
local epoch = room_epoch(KEYS[1], KEYS[2], ARGV[2])
local offset = redis.call('HINCRBY', KEYS[1], 's', 1)
local id = string.format('%d', offset)
local size = tonumber(ARGV[3])
if size > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XADD', KEYS[2], 'MAXLEN', size, id .. '-0', 't', now, 'd', ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PUBLISH', ARGV[6], 'P ' .. id .. ' ' .. epoch .. ' ' .. ARGV[1])
return {id, epoch}
";

/// Gives a room a new epoch when its latest offset in the epoch a node saw is below the
/// offset it saw ([`Backplane::renew_epoch`]). KEYS: meta, stream. ARGV: the seen epoch,
/// the seen offset, new epoch, meta ttl ms. Returns `{epoch, offset}` afterwards.
const RENEW: &str = r"
local epoch = room_epoch(KEYS[1], KEYS[2], ARGV[3])
local offset = tonumber(redis.call('HGET', KEYS[1], 's'))
if epoch == ARGV[1] and offset < tonumber(ARGV[2]) then
  epoch = ARGV[3]
  offset = 0
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', epoch, 's', 0)
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {epoch, string.format('%d', offset)}
";

/// Reads a room's position and history. KEYS: meta, stream. ARGV: new epoch, ttl ms, meta
/// ttl ms, mode (`s` since, `l` latest), the reader's epoch, first id wanted, limit, and
/// `1` to create the room's record when it has none (`0`: answer `{}` and keep nothing).
/// Returns `{epoch, offset, oldest id or '', id1, payload1, id2, payload2, ...}`.
const READ: &str = r"
if ARGV[8] == '0' and redis.call('EXISTS', KEYS[1]) == 0 then
  return {}
end
local epoch = room_epoch(KEYS[1], KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local offset = redis.call('HGET', KEYS[1], 's')
local t = redis.call('TIME')
local horizon = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[2])
while true do
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #first == 0 or tonumber(first[1][2][2]) > horizon then break end
  redis.call('XDEL', KEYS[2], first[1][1])
end
local oldest = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local out = {epoch, offset, ''}
if #oldest > 0 then out[3] = oldest[1][1] end
local limit = tonumber(ARGV[7])
if limit > 0 then
  local entries
  if ARGV[4] == 's' then
    local from = ARGV[6]
    if ARGV[5] ~= epoch then from = '-' end
    entries = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', limit)
  else
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', limit)
  end
  for _, e in ipairs(entries) do
    out[#out + 1] = e[1]
    out[#out + 1] = e[2][4]
  end
end
return out
";

/// Adds or refreshes presence entries. KEYS: zset, hash. ARGV: ttl ms, then client, user
/// pairs.
const PRESENCE_ADD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
";

/// Lists presence after dropping expired entries. KEYS: zset, hash.
const PRESENCE_LIST: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  redis.call('HDEL', KEYS[2], unpack(expired))
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
end
return redis.call('HGETALL', KEYS[2])
";

/// The Redis backplane. See the [module docs](self). Dropping it stops its background
/// tasks.
#[derive(Debug)]
pub struct RedisBackplane {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

struct Inner {
    conn: ConnectionManager,
    config: BackplaneConfig,
    health: Mutex<Health>,
    events_tx: mpsc::UnboundedSender<Event>,
    events_rx: Mutex<Option<Events>>,
    /// This node's presence entries, refreshed periodically: room → client → user.
    own_presence: Mutex<HashMap<RoomName, HashMap<ConnectionId, Option<String>>>>,
    /// Woken when Redis is reachable again: presence is written again at once (a
    /// restarted Redis may have lost it).
    reconnected: Notify,
    /// Woken when the connection to Redis closes (the client's disconnection push): the
    /// health check treats it as an outage at once, however short.
    disconnected: Arc<Notify>,
    /// This node's sends and disconnects waiting for their answer, by request id.
    awaiting: Awaiting,
    /// The next request id.
    next_request: AtomicU64,
    publish: Script,
    read: Script,
    renew: Script,
    presence_add: Script,
    presence_list: Script,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackplane")
            .field("prefix", &self.config.prefix)
            .field("node", &node_hex(self.config.node_id))
            .field("health", &*lock(&self.health))
            .finish_non_exhaustive()
    }
}

/// Requests of this node waiting for their answer, by request id: shared by the requests and
/// the push handler that receives the answers.
type Awaiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>;

/// A request another node made to this one, whose answer is to be published when the server
/// gives it.
struct Asked {
    /// The asking node, as its channel names it.
    node: String,
    /// The asking node's request id.
    id: u64,
    /// The server's answer.
    answer: oneshot::Receiver<Answer>,
}

/// Drops a request from [`Inner::awaiting`] however its wait ends (answered, timed out, or
/// the caller's future dropped).
struct Forget<'a> {
    awaiting: &'a Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        lock(self.awaiting).remove(&self.id);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unavailable(error: redis::RedisError) -> Error {
    Error::Unavailable(error.to_string())
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

impl RedisBackplane {
    /// Connects to Redis and subscribes to this node's channels. Needs a Tokio runtime (it
    /// spawns the health check and the presence refresh).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a malformed URL, [`Error::Unavailable`] when Redis
    /// cannot be reached now (later outages are survived: see [`Health`]).
    pub async fn connect(mut config: BackplaneConfig) -> Result<RedisBackplane, Error> {
        // Names are `<prefix>:<kind>:<room>`; a prefix given with its `:` keeps it.
        if !config.prefix.ends_with(':') {
            config.prefix.push(':');
        }
        let info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|error| Error::InvalidConfig(format!("{}: {error}", config.url)))?;
        // RESP3: pub/sub pushes share the multiplexed connection, and the manager
        // resubscribes after a reconnect.
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(redis_settings);
        let client = Client::open(info).map_err(|error| Error::InvalidConfig(error.to_string()))?;

        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let (asked_tx, asked_rx) = mpsc::unbounded_channel();
        let awaiting = Awaiting::default();
        let disconnected = Arc::new(Notify::new());
        let forward = Forwarder {
            disconnected: Arc::clone(&disconnected),
            prefix: config.prefix.clone(),
            node_hex: node_hex(config.node_id),
            own_channel: format!("{}node:{}", config.prefix, node_hex(config.node_id)),
            events: events_tx.clone(),
            awaiting: Arc::clone(&awaiting),
            asked: asked_tx,
        };
        let manager_config = ConnectionManagerConfig::new()
            .set_push_sender(move |info: PushInfo| forward.push(info))
            .set_automatic_resubscription()
            .set_response_timeout(Some(config.response_timeout))
            .set_connection_timeout(Some(config.response_timeout))
            .set_max_delay(Duration::from_secs(2));
        let conn = tokio::time::timeout(
            config.response_timeout,
            ConnectionManager::new_with_config(client, manager_config),
        )
        .await
        .map_err(|_| Error::Unavailable(format!("{}: connection timed out", config.url)))?
        .map_err(unavailable)?;

        let inner = Arc::new(Inner {
            conn,
            health: Mutex::new(Health::Connected),
            events_tx,
            events_rx: Mutex::new(Some(events_rx)),
            own_presence: Mutex::new(HashMap::new()),
            reconnected: Notify::new(),
            disconnected,
            awaiting,
            next_request: AtomicU64::new(1),
            publish: Script::new(&format!("{ROOM_EPOCH}{PUBLISH}")),
            read: Script::new(&format!("{ROOM_EPOCH}{READ}")),
            renew: Script::new(&format!("{ROOM_EPOCH}{RENEW}")),
            presence_add: Script::new(PRESENCE_ADD),
            presence_list: Script::new(PRESENCE_LIST),
            config,
        });
        let mut conn = inner.conn.clone();
        conn.subscribe(&[
            inner.node_channel(inner.config.node_id),
            inner.broadcast_channel(),
        ])
        .await
        .map_err(unavailable)?;
        let tasks = vec![
            tokio::spawn(health_check(Arc::clone(&inner))),
            tokio::spawn(refresh_presence(Arc::clone(&inner))),
            tokio::spawn(answer_requests(Arc::clone(&inner), asked_rx)),
        ];
        Ok(RedisBackplane { inner, tasks })
    }

    /// The settings it runs with.
    pub fn config(&self) -> &BackplaneConfig {
        &self.inner.config
    }
}

impl Drop for RedisBackplane {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Inner {
    fn key(&self, kind: &str, room: &RoomName) -> String {
        format!("{}{kind}:{room}", self.config.prefix)
    }

    fn room_channel(&self, room: &RoomName) -> String {
        self.key("room", room)
    }

    fn node_channel(&self, node: u64) -> String {
        format!("{}node:{}", self.config.prefix, node_hex(node))
    }

    fn broadcast_channel(&self) -> String {
        format!("{}broadcast", self.config.prefix)
    }

    /// Records the outcome of a command in the health state.
    fn observe<T>(&self, result: Result<T, redis::RedisError>) -> Result<T, Error> {
        match result {
            Ok(value) => Ok(value),
            Err(error) => {
                if error.is_io_error() || error.is_timeout() || error.is_connection_dropped() {
                    let mut health = lock(&self.health);
                    if health.is_connected() {
                        tracing::warn!(%error, "redis backplane unreachable");
                    }
                    *health = Health::Degraded(error.to_string());
                }
                Err(unavailable(error))
            }
        }
    }

    async fn publish(&self, room: &RoomName, payload: Bytes) -> Result<Publication, Error> {
        let mut conn = self.conn.clone();
        let result: Result<(String, String), _> = self
            .publish
            .key(self.key("meta", room))
            .key(self.key("stream", room))
            .arg(payload.as_ref())
            .arg(new_epoch().as_str())
            .arg(self.config.history.max_messages)
            .arg(millis(self.config.history.ttl))
            .arg(millis(self.meta_ttl()))
            .arg(self.room_channel(room))
            .invoke_async(&mut conn)
            .await;
        let (offset, epoch) = self.observe(result)?;
        let offset = offset
            .parse::<u64>()
            .map_err(|_| Error::Protocol(format!("offset {offset:?}")))?;
        Ok(Publication {
            room: room.clone(),
            position: StreamPosition::new(Epoch::from(epoch), Offset(offset)),
            payload,
        })
    }

    fn meta_ttl(&self) -> Duration {
        self.config.history.meta_ttl.max(self.config.history.ttl)
    }

    /// Reads a room's history; a room without a record gets one when `create`, and reads
    /// as [`HistoryPage::of_unused_room`] otherwise.
    async fn history(
        &self,
        room: &RoomName,
        query: HistoryRange,
        create: bool,
    ) -> Result<HistoryPage, Error> {
        let (mode, reader_epoch, from, limit) = match &query {
            HistoryRange::Since { position, limit } => (
                "s",
                position.epoch.as_str().to_owned(),
                format!("{}-0", position.offset.get().saturating_add(1)),
                *limit,
            ),
            HistoryRange::Latest { limit } => ("l", String::new(), String::new(), *limit),
        };
        let limit = limit.min(self.config.history.max_messages);
        let mut conn = self.conn.clone();
        let result: Result<Vec<Vec<u8>>, _> = self
            .read
            .key(self.key("meta", room))
            .key(self.key("stream", room))
            .arg(new_epoch().as_str())
            .arg(millis(self.config.history.ttl))
            .arg(millis(self.meta_ttl()))
            .arg(mode)
            .arg(reader_epoch)
            .arg(from)
            .arg(limit)
            .arg(if create { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await;
        let reply = self.observe(result)?;
        if reply.is_empty() {
            return Ok(HistoryPage::of_unused_room(&query));
        }
        let mut fields = reply.into_iter();
        let mut text = |what: &str| {
            fields
                .next()
                .and_then(|field| String::from_utf8(field).ok())
                .ok_or_else(|| Error::Protocol(format!("history reply without {what}")))
        };
        let epoch = Epoch::from(text("epoch")?);
        let latest = Offset(parse_u64(&text("offset")?)?);
        let oldest = text("oldest id")?;
        let oldest = if oldest.is_empty() {
            latest.get().saturating_add(1)
        } else {
            parse_id(&oldest)?
        };
        let mut publications = Vec::new();
        while let Some(id) = fields.next() {
            let payload = fields
                .next()
                .ok_or_else(|| Error::Protocol("history entry without payload".to_owned()))?;
            let id = String::from_utf8(id).map_err(|_| Error::Protocol("entry id".to_owned()))?;
            publications.push(Publication {
                room: room.clone(),
                position: StreamPosition::new(epoch.clone(), Offset(parse_id(&id)?)),
                payload: Bytes::from(payload),
            });
        }
        let recovered = match &query {
            HistoryRange::Latest { .. } => {
                publications.reverse();
                true
            }
            HistoryRange::Since { position, .. } => {
                position.epoch == epoch
                    && position.offset <= latest
                    && oldest <= position.offset.get().saturating_add(1)
            }
        };
        Ok(HistoryPage {
            publications,
            position: StreamPosition::new(epoch, latest),
            recovered,
        })
    }

    async fn renew_epoch(
        &self,
        room: &RoomName,
        seen: &StreamPosition,
    ) -> Result<StreamPosition, Error> {
        let mut conn = self.conn.clone();
        let result: Result<(String, String), _> = self
            .renew
            .key(self.key("meta", room))
            .key(self.key("stream", room))
            .arg(seen.epoch.as_str())
            .arg(seen.offset.get())
            .arg(new_epoch().as_str())
            .arg(millis(self.meta_ttl()))
            .invoke_async(&mut conn)
            .await;
        let (epoch, offset) = self.observe(result)?;
        Ok(StreamPosition::new(
            Epoch::from(epoch),
            Offset(parse_u64(&offset)?),
        ))
    }

    async fn publish_raw(&self, channel: String, message: Vec<u8>) -> Result<usize, Error> {
        let mut conn = self.conn.clone();
        let result = conn.publish(channel, message).await;
        self.observe(result)
    }

    /// Asks the node holding `client` to take a send (`S`, with `payload`) or a disconnect
    /// (`D`), and waits for its answer (see the [module docs](self)).
    async fn ask(&self, kind: &str, client: ConnectionId, payload: &[u8]) -> Result<Routed, Error> {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, answer) = oneshot::channel();
        lock(&self.awaiting).insert(id, tx);
        let _forget = Forget {
            awaiting: &self.awaiting,
            id,
        };
        let own = node_hex(self.config.node_id);
        let mut message = format!("Q {own} {id} {kind} {client}").into_bytes();
        if kind == "S" {
            message.push(b' ');
            message.extend_from_slice(payload);
        }
        let receivers = self
            .publish_raw(self.node_channel(client.node()), message)
            .await?;
        if receivers == 0 {
            return Ok(Routed::NoSuchNode);
        }
        Ok(answer_within(answer, self.config.answer_timeout)
            .await
            .map_or(Routed::Unanswered, Routed::from))
    }

    async fn add_presence(
        &self,
        room: &RoomName,
        members: &HashMap<ConnectionId, Option<String>>,
    ) -> Result<(), Error> {
        if members.is_empty() {
            return Ok(());
        }
        let mut invocation = self.presence_add.key(self.key("pz", room));
        invocation
            .key(self.key("ph", room))
            .arg(millis(self.config.presence_ttl));
        for (client, user) in members {
            invocation
                .arg(client.to_string())
                .arg(encode_user(user.as_deref()));
        }
        let mut conn = self.conn.clone();
        let result: Result<i64, _> = invocation.invoke_async(&mut conn).await;
        self.observe(result).map(drop)
    }
}

fn encode_user(user: Option<&str>) -> String {
    match user {
        Some(user) => format!("u{user}"),
        None => "-".to_owned(),
    }
}

fn decode_user(value: &str) -> Option<String> {
    value.strip_prefix('u').map(str::to_owned)
}

fn parse_u64(text: &str) -> Result<u64, Error> {
    text.parse()
        .map_err(|_| Error::Protocol(format!("not a number: {text:?}")))
}

/// The offset of a stream entry id `<offset>-0`.
fn parse_id(id: &str) -> Result<u64, Error> {
    parse_u64(id.split_once('-').map_or(id, |(offset, _)| offset))
}

/// Turns RESP3 pushes into [`Event`]s, and answers into the waiting requests. Runs on the
/// connection's reader: never blocks.
struct Forwarder {
    /// Woken when the connection closes; see [`Inner::disconnected`].
    disconnected: Arc<Notify>,
    prefix: String,
    node_hex: String,
    /// This node's own channel, where answers come.
    own_channel: String,
    events: mpsc::UnboundedSender<Event>,
    /// This node's requests waiting for their answer.
    awaiting: Awaiting,
    /// Requests of other nodes to answer, for [`answer_requests`].
    asked: mpsc::UnboundedSender<Asked>,
}

impl Forwarder {
    fn push(&self, info: PushInfo) -> Result<(), mpsc::error::SendError<Event>> {
        if info.kind == PushKind::Disconnection {
            // The client reconnects (and resubscribes) by itself, often before the next
            // health check: without this, what was published meanwhile would be noticed
            // only when a later publication exposed the gap.
            self.disconnected.notify_one();
            return Ok(());
        }
        if info.kind != PushKind::Message {
            return Ok(());
        }
        let mut data = info.data.into_iter();
        let (Some(Value::BulkString(channel)), Some(Value::BulkString(message))) =
            (data.next(), data.next())
        else {
            return Ok(());
        };
        // An answer to one of this node's requests: no event.
        if channel == self.own_channel.as_bytes()
            && let Some(answer) = message.strip_prefix(b"A ")
        {
            self.answered(answer);
            return Ok(());
        }
        match self.event(&channel, Bytes::from(message)) {
            Some(event) => self.events.send(event),
            None => {
                tracing::debug!("ignored an unreadable backplane message");
                Ok(())
            }
        }
    }

    fn event(&self, channel: &[u8], message: Bytes) -> Option<Event> {
        let channel = std::str::from_utf8(channel)
            .ok()?
            .strip_prefix(&self.prefix)?;
        let (word, rest) = split_word(&message)?;
        if let Some(room) = channel.strip_prefix("room:") {
            let room = RoomName::parse(room).ok()?;
            return match word {
                b"P" => {
                    let rest = message.slice_ref(rest);
                    let (offset, rest) = split_word(&rest)?;
                    let offset = std::str::from_utf8(offset).ok()?.parse().ok()?;
                    let (epoch, payload) = split_word(rest)?;
                    let epoch = Epoch::from(std::str::from_utf8(epoch).ok()?);
                    Some(Event::Publication(Publication {
                        room,
                        position: StreamPosition::new(epoch, Offset(offset)),
                        payload: message.slice_ref(payload),
                    }))
                }
                b"E" => {
                    // `E <origin node> <payload>`: a node does not receive its own.
                    let (origin, payload) = split_word(rest)?;
                    (origin != self.node_hex.as_bytes()).then(|| Event::RoomEvent {
                        room,
                        payload: message.slice_ref(payload),
                    })
                }
                _ => None,
            };
        }
        if channel == "broadcast" {
            // A node does not receive its own broadcasts: it delivered them itself.
            return (word != self.node_hex.as_bytes()).then(|| Event::Broadcast {
                payload: message.slice_ref(rest),
            });
        }
        if channel.strip_prefix("node:")? == self.node_hex {
            return match word {
                b"Q" => self.asked(&message, rest),
                // Nodes that do not wait for answers.
                b"S" => {
                    let (to, payload) = split_word(rest)?;
                    Some(Event::Send {
                        to: parse_client(to)?,
                        payload: message.slice_ref(payload),
                        reply: Reply::none(),
                    })
                }
                b"D" => Some(Event::Disconnect {
                    client: parse_client(rest)?,
                    reply: Reply::none(),
                }),
                _ => None,
            };
        }
        None
    }

    /// `<asking node> <request id> S <client> <payload>` or `... D <client>`: the event,
    /// with its answer queued for [`answer_requests`].
    fn asked(&self, message: &Bytes, rest: &[u8]) -> Option<Event> {
        let (node, rest) = split_word(rest)?;
        let (id, rest) = split_word(rest)?;
        let node = std::str::from_utf8(node).ok()?;
        // A node id, so that the answer goes to a node channel and nowhere else.
        if node.len() != 12 || !node.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let id = std::str::from_utf8(id).ok()?.parse().ok()?;
        let (kind, rest) = split_word(rest).unwrap_or((rest, &[]));
        let (reply, answer) = Reply::channel();
        let event = match kind {
            b"S" => {
                let (to, payload) = split_word(rest)?;
                Event::Send {
                    to: parse_client(to)?,
                    payload: message.slice_ref(payload),
                    reply,
                }
            }
            b"D" => Event::Disconnect {
                client: parse_client(rest)?,
                reply,
            },
            _ => return None,
        };
        let _ = self.asked.send(Asked {
            node: node.to_owned(),
            id,
            answer,
        });
        Some(event)
    }

    /// `<request id> <answer>`: hands the answer to the request waiting for it, if any (one
    /// that timed out is gone).
    fn answered(&self, rest: &[u8]) {
        let Some((id, word)) = split_word(rest) else {
            return;
        };
        let (Some(id), Some(answer)) = (
            std::str::from_utf8(id).ok().and_then(|id| id.parse().ok()),
            parse_answer(word),
        ) else {
            tracing::debug!("ignored an unreadable answer");
            return;
        };
        if let Some(waiting) = lock(&self.awaiting).remove(&id) {
            let _ = waiting.send(answer);
        }
    }
}

fn parse_client(text: &[u8]) -> Option<ConnectionId> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Publishes the server's answer to each request of another node (see the
/// [module docs](self)), as the answers come, in any order; an answer that does not come
/// within the answer timeout is never sent (the asker has stopped waiting).
async fn answer_requests(inner: Arc<Inner>, mut asked: mpsc::UnboundedReceiver<Asked>) {
    let mut answering = FuturesUnordered::new();
    loop {
        tokio::select! {
            request = asked.recv() => {
                let Some(request) = request else { return };
                let inner = Arc::clone(&inner);
                answering.push(async move {
                    let answer =
                        answer_within(request.answer, inner.config.answer_timeout).await;
                    if let Some(answer) = answer {
                        let channel = format!("{}node:{}", inner.config.prefix, request.node);
                        let message = format!("A {} {}", request.id, answer_word(answer));
                        // Unreachable Redis: the asker times out.
                        let _ = inner.publish_raw(channel, message.into_bytes()).await;
                    }
                });
            }
            Some(()) = answering.next() => {}
        }
    }
}

/// Splits at the first space: the word before, the rest after.
fn split_word(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let space = bytes.iter().position(|b| *b == b' ')?;
    Some((&bytes[..space], &bytes[space + 1..]))
}

/// Checks the connection every [`HEALTH_INTERVAL`], and at once when it closed; a failure or a
/// closed connection marks the backplane degraded, the first success after one marks it
/// connected and tells the node ([`Event::Resumed`]: catch up from history).
async fn health_check(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(HEALTH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = inner.disconnected.notified() => {
                let mut health = lock(&inner.health);
                if health.is_connected() {
                    tracing::warn!("redis backplane connection lost; reconnecting");
                }
                *health = Health::Degraded("connection lost".to_owned());
            }
        }
        let mut conn = inner.conn.clone();
        let result = tokio::time::timeout(inner.config.response_timeout, conn.ping()).await;
        let was_connected = lock(&inner.health).is_connected();
        match result {
            Ok(Ok(_)) if !was_connected => {
                tracing::info!("redis backplane reachable again");
                *lock(&inner.health) = Health::Connected;
                let _ = inner.events_tx.send(Event::Resumed);
                inner.reconnected.notify_one();
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                let _ = inner.observe::<()>(Err(error));
            }
            Err(_) => {
                if was_connected {
                    tracing::warn!("redis backplane does not answer");
                }
                *lock(&inner.health) = Health::Degraded("ping timed out".to_owned());
            }
        }
    }
}

/// Refreshes this node's presence entries every third of the presence ttl, and as soon as
/// Redis is reachable again after an outage.
async fn refresh_presence(inner: Arc<Inner>) {
    let period = (inner.config.presence_ttl / 3).max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = inner.reconnected.notified() => {}
        }
        let rooms: Vec<(RoomName, HashMap<ConnectionId, Option<String>>)> =
            lock(&inner.own_presence)
                .iter()
                .map(|(room, members)| (room.clone(), members.clone()))
                .collect();
        for (room, members) in rooms {
            if inner.add_presence(&room, &members).await.is_err() {
                // Degraded: the next tick tries again.
                break;
            }
        }
    }
}

impl Backplane for RedisBackplane {
    fn node_id(&self) -> u64 {
        self.inner.config.node_id
    }

    fn take_events(&self) -> Option<Events> {
        lock(&self.inner.events_rx).take()
    }

    fn publish<'a>(
        &'a self,
        room: &'a RoomName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<Publication, Error>> {
        Box::pin(self.inner.publish(room, payload))
    }

    fn history<'a>(
        &'a self,
        room: &'a RoomName,
        query: HistoryRange,
    ) -> BoxFuture<'a, Result<HistoryPage, Error>> {
        Box::pin(self.inner.history(room, query, true))
    }

    fn read_history<'a>(
        &'a self,
        room: &'a RoomName,
        query: HistoryRange,
    ) -> BoxFuture<'a, Result<HistoryPage, Error>> {
        Box::pin(self.inner.history(room, query, false))
    }

    fn renew_epoch<'a>(
        &'a self,
        room: &'a RoomName,
        seen: &'a StreamPosition,
    ) -> BoxFuture<'a, Result<StreamPosition, Error>> {
        Box::pin(self.inner.renew_epoch(room, seen))
    }

    fn subscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut conn = self.inner.conn.clone();
            let result = conn.subscribe(self.inner.room_channel(room)).await;
            self.inner.observe(result)
        })
    }

    fn unsubscribe<'a>(&'a self, room: &'a RoomName) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut conn = self.inner.conn.clone();
            let result = conn.unsubscribe(self.inner.room_channel(room)).await;
            self.inner.observe(result)
        })
    }

    fn broadcast(&self, payload: Bytes) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(async move {
            let mut message = node_hex(self.inner.config.node_id).into_bytes();
            message.push(b' ');
            message.extend_from_slice(&payload);
            self.inner
                .publish_raw(self.inner.broadcast_channel(), message)
                .await
                .map(drop)
        })
    }

    fn send(&self, to: ConnectionId, payload: Bytes) -> BoxFuture<'_, Result<Routed, Error>> {
        Box::pin(async move { self.inner.ask("S", to, &payload).await })
    }

    fn disconnect(&self, client: ConnectionId) -> BoxFuture<'_, Result<Routed, Error>> {
        Box::pin(async move { self.inner.ask("D", client, &[]).await })
    }

    fn room_event<'a>(
        &'a self,
        room: &'a RoomName,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), Error>> {
        Box::pin(async move {
            let mut message = format!("E {} ", node_hex(self.inner.config.node_id)).into_bytes();
            message.extend_from_slice(&payload);
            self.inner
                .publish_raw(self.inner.room_channel(room), message)
                .await
                .map(drop)
        })
    }

    fn presence_add<'a>(
        &'a self,
        room: &'a RoomName,
        member: PresenceMember,
    ) -> BoxFuture<'a, Result<(), Error>> {
        lock(&self.inner.own_presence)
            .entry(room.clone())
            .or_default()
            .insert(member.client, member.user.clone());
        Box::pin(async move {
            let one = HashMap::from([(member.client, member.user)]);
            self.inner.add_presence(room, &one).await
        })
    }

    fn presence_remove<'a>(
        &'a self,
        room: &'a RoomName,
        client: ConnectionId,
    ) -> BoxFuture<'a, Result<(), Error>> {
        {
            let mut own = lock(&self.inner.own_presence);
            if let Some(members) = own.get_mut(room) {
                members.remove(&client);
                if members.is_empty() {
                    own.remove(room);
                }
            }
        }
        Box::pin(async move {
            let mut conn = self.inner.conn.clone();
            let client = client.to_string();
            let mut pipe = redis::pipe();
            pipe.zrem(self.inner.key("pz", room), &client)
                .ignore()
                .hdel(self.inner.key("ph", room), &client)
                .ignore();
            let result: Result<(), _> = pipe.query_async(&mut conn).await;
            self.inner.observe(result)
        })
    }

    fn presence<'a>(
        &'a self,
        room: &'a RoomName,
    ) -> BoxFuture<'a, Result<Vec<PresenceMember>, Error>> {
        Box::pin(async move {
            let mut conn = self.inner.conn.clone();
            let result: Result<Vec<String>, _> = self
                .inner
                .presence_list
                .key(self.inner.key("pz", room))
                .key(self.inner.key("ph", room))
                .invoke_async(&mut conn)
                .await;
            let flat = self.inner.observe(result)?;
            let mut members = Vec::with_capacity(flat.len() / 2);
            let mut fields = flat.iter();
            while let (Some(client), Some(user)) = (fields.next(), fields.next()) {
                if let Ok(client) = client.parse() {
                    members.push(PresenceMember {
                        client,
                        user: decode_user(user),
                    });
                }
            }
            Ok(members)
        })
    }

    fn health(&self) -> Health {
        lock(&self.inner.health).clone()
    }

    fn clamp_limit(&self, requested: Option<usize>) -> usize {
        let max = self.inner.config.history.max_messages;
        requested.map_or(max, |limit| limit.min(max))
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
