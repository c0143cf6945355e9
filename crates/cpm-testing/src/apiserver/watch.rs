//! Watch streams: initial ADDED events (when no resourceVersion is given), events after a
//! resourceVersion from the retained history, selector transitions as ADDED/DELETED, BOOKMARKs,
//! `sendInitialEvents`, `timeoutSeconds`, `410 Expired` as an ERROR event, and fault cuts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http::{Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::Shared;
use super::faults::CutMode;
use super::handler::Body;
use super::resources::ResourceDef;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{EventType, visible};

/// A parsed watch request.
pub(crate) struct WatchParams {
    def: ResourceDef,
    version: String,
    ns: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    /// None: start with the current state ("" or "0").
    rv: Option<u64>,
    bookmarks: bool,
    send_initial: bool,
    timeout: Option<Duration>,
}

impl WatchParams {
    pub(crate) fn from_query(
        def: &ResourceDef,
        version: &str,
        ns: Option<String>,
        q: &BTreeMap<String, String>,
    ) -> Result<Self, ApiError> {
        let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let truthy = |k: &str| matches!(get(k), Some("true" | "1"));
        let labels = LabelSelector::parse(get("labelSelector").unwrap_or_default())
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(get("fieldSelector").unwrap_or_default(), &def.kind)
            .map_err(ApiError::bad_request)?;
        let rv =
            match get("resourceVersion") {
                None | Some("0") => None,
                Some(rv) => Some(rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {rv:?}"))
                })?),
            };
        let timeout = match get("timeoutSeconds") {
            Some(t) => Some(Duration::from_secs(t.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid timeoutSeconds {t:?}"))
            })?)),
            None => None,
        };
        Ok(Self {
            def: def.clone(),
            version: version.to_string(),
            ns,
            labels,
            fields,
            rv,
            bookmarks: truthy("allowWatchBookmarks"),
            send_initial: truthy("sendInitialEvents"),
            timeout,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let ns_ok = self.ns.as_deref().is_none_or(|ns| {
            obj.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default()
                == ns
        });
        ns_ok && self.labels.matches(obj) && self.fields.matches(obj)
    }

    fn render(&self, mut obj: Value) -> Value {
        if let Value::Object(m) = &mut obj {
            m.insert(
                "apiVersion".into(),
                json!(self.def.api_version(&self.version)),
            );
            m.insert("kind".into(), json!(self.def.kind));
        }
        obj
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Value {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        json!({"apiVersion": self.def.api_version(&self.version), "kind": self.def.kind, "metadata": meta})
    }
}

type Chunk = Result<Bytes, std::io::Error>;

fn line(ty: &str, object: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": ty, "object": object})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Starts a watch: a 200 response whose body streams events until the client leaves, the
/// timeout fires, the history window passes it by (410 ERROR event) or a fault cuts it.
pub(crate) fn start(shared: Arc<Shared>, params: WatchParams) -> Response<Body> {
    let (tx, rx) = mpsc::channel::<Chunk>(64);
    tokio::spawn(run(shared, params, tx));
    let stream =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
            .map(|c| c.map(Frame::data));
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

async fn run(shared: Arc<Shared>, p: WatchParams, tx: mpsc::Sender<Chunk>) {
    let mut changed = shared.changed.subscribe();
    let mut cuts = shared.faults.subscribe_cuts();
    cuts.borrow_and_update();
    let deadline = p.timeout.map(|t| tokio::time::Instant::now() + t);

    let (mut cursor, initial) = {
        let store = shared.store();
        match p.rv {
            None => {
                let objs: Vec<Value> = store
                    .list(&p.def, p.ns.as_deref(), &p.labels, &p.fields)
                    .into_iter()
                    .map(|(_, v)| v)
                    .collect();
                (store.rv, Ok(objs))
            }
            Some(rv) if rv < store.compacted => {
                (rv, Err(ApiError::expired(rv, store.compacted + 1)))
            }
            Some(rv) => (rv, Ok(Vec::new())),
        }
    };
    changed.borrow_and_update();
    match initial {
        Err(e) => {
            shared
                .expired_watches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = tx.send(Ok(line("ERROR", &e.body()))).await;
            return;
        }
        Ok(objs) => {
            for obj in objs {
                if !send(&shared, &tx, &mut cuts, line("ADDED", &p.render(obj))).await {
                    return;
                }
            }
            if p.send_initial
                && !send(
                    &shared,
                    &tx,
                    &mut cuts,
                    line("BOOKMARK", &p.bookmark(cursor, true)),
                )
                .await
            {
                return;
            }
        }
    }
    let mut ticker = tokio::time::interval(shared.bookmark_interval);
    ticker.tick().await;
    loop {
        let batch = {
            let store = shared.store();
            if cursor < store.compacted {
                Err(ApiError::expired(cursor, store.compacted + 1))
            } else {
                let start = store.history.partition_point(|e| e.rv <= cursor);
                let evs: Vec<(EventType, Value)> = store
                    .history
                    .iter()
                    .skip(start)
                    .filter(|e| e.key.group == p.def.group && e.key.plural == p.def.plural)
                    .filter_map(|e| visible(e, |o| p.matches(o)).map(|ty| (ty, e.obj.clone())))
                    .collect();
                cursor = cursor.max(store.rv);
                Ok(evs)
            }
        };
        match batch {
            Err(e) => {
                shared
                    .expired_watches
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = tx.send(Ok(line("ERROR", &e.body()))).await;
                return;
            }
            Ok(evs) => {
                for (ty, obj) in evs {
                    if !send(&shared, &tx, &mut cuts, line(ty.as_str(), &p.render(obj))).await {
                        return;
                    }
                }
            }
        }
        let sleep_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => futures::future::pending().await,
            }
        };
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            r = cuts.changed() => {
                if r.is_ok() {
                    let mode = cuts.borrow().1;
                    cut(&tx, mode).await;
                }
                return;
            }
            _ = ticker.tick(), if p.bookmarks => {
                if !send(&shared, &tx, &mut cuts, line("BOOKMARK", &p.bookmark(cursor, false))).await {
                    return;
                }
            }
            () = sleep_deadline => return,
            () = tx.closed() => return,
        }
    }
}

async fn cut(tx: &mpsc::Sender<Chunk>, mode: CutMode) {
    if mode == CutMode::Abort {
        let _ = tx
            .send(Err(std::io::Error::other(
                "watch stream cut by fault injection",
            )))
            .await;
    }
}

/// Sends one event unless a cut is pending; false when the stream is over.
async fn send(
    shared: &Shared,
    tx: &mpsc::Sender<Chunk>,
    cuts: &mut tokio::sync::watch::Receiver<(u64, CutMode)>,
    chunk: Bytes,
) -> bool {
    if cuts.has_changed().unwrap_or(true) {
        let mode = cuts.borrow_and_update().1;
        cut(tx, mode).await;
        return false;
    }
    if tx.send(Ok(chunk)).await.is_err() {
        return false;
    }
    shared.faults.count_watch_event();
    true
}
