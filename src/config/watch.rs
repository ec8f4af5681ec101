//! Reload: file watch, SIGHUP and the admin call all end here. Parse, validate,
//! then swap the snapshot atomically; a bad file keeps the running config.

use super::compile::{self, ConfigError};
use crate::gateway::{ConfigVersion, Gateway};
use crate::state::State;
use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub struct Reloader {
    path: PathBuf,
    live: Arc<ArcSwap<Gateway>>,
    state: Arc<State>,
    /// One reload at a time; the bound listeners they were started with.
    lock: Mutex<BoundSettings>,
}

/// Settings a reload cannot change (listeners are never re-bound).
#[derive(PartialEq, Eq, Clone)]
struct BoundSettings {
    listen: Vec<String>,
    tls_listen: Vec<String>,
    admin: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    pub version: ConfigVersion,
    pub changed: bool,
    pub changes: Vec<String>,
}

impl Reloader {
    pub fn new(path: PathBuf, live: Arc<ArcSwap<Gateway>>, state: Arc<State>) -> Reloader {
        let bound = match compile::read_file(&path) {
            Ok((raw, _)) => bound_of(&raw),
            Err(_) => BoundSettings {
                listen: vec![],
                tls_listen: vec![],
                admin: None,
            },
        };
        Reloader {
            path,
            live,
            state,
            lock: Mutex::new(bound),
        }
    }

    pub fn live(&self) -> &Arc<ArcSwap<Gateway>> {
        &self.live
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Re-read the file and swap it in when valid. Blocking: call it from a
    /// blocking context.
    pub fn reload(&self, source: &str) -> Result<ReloadOutcome, Vec<ConfigError>> {
        let bound = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let result = compile::read_file(&self.path).and_then(|(raw, hash)| {
            if hash == self.live.load().version.hash {
                return Ok((None, raw));
            }
            compile::compile(&raw, hash, &self.state).map(|g| (Some(g), raw))
        });
        match result {
            Ok((None, _)) => Ok(ReloadOutcome {
                version: self.live.load().version.clone(),
                changed: false,
                changes: vec![],
            }),
            Ok((Some(gw), raw)) => {
                let changes = gw.inventory.diff(&self.live.load().inventory);
                if crate::cluster::fingerprint(raw.cluster.as_ref()) != self.state.cluster_settings
                {
                    tracing::warn!(
                        "[cluster] changed in the file; it takes effect on restart only"
                    );
                }
                if bound_of(&raw) != *bound {
                    tracing::warn!(
                        "listener addresses changed in the file; they take effect on restart only"
                    );
                }
                let version = gw.version.clone();
                self.live.store(Arc::new(gw));
                self.state.note_reload(Some(&version));
                tracing::info!(source, hash = %version.hash, "configuration reloaded");
                for c in &changes {
                    tracing::info!(source, "config change: {c}");
                }
                Ok(ReloadOutcome {
                    version,
                    changed: true,
                    changes,
                })
            }
            Err(errors) => {
                self.state.note_reload(None);
                tracing::error!(
                    source,
                    problems = errors.len(),
                    "reload refused; the running configuration stays"
                );
                for e in &errors {
                    tracing::error!(source, "config problem: {e}");
                }
                Err(errors)
            }
        }
    }

    pub async fn reload_async(
        self: &Arc<Self>,
        source: &'static str,
    ) -> Result<ReloadOutcome, Vec<ConfigError>> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.reload(source))
            .await
            .unwrap_or_else(|e| {
                Err(vec![ConfigError {
                    location: "reload".into(),
                    message: format!("reload task failed: {e}"),
                }])
            })
    }
}

fn bound_of(raw: &super::raw::RawConfig) -> BoundSettings {
    BoundSettings {
        listen: raw.server.listen.clone(),
        tls_listen: raw
            .server
            .tls
            .as_ref()
            .map(|t| t.listen.clone())
            .unwrap_or_default(),
        admin: raw.server.admin.clone(),
    }
}

/// Watch the config file's directory (editors replace files by rename) and reload
/// on changes to the file, debounced. A Kubernetes ConfigMap or Secret volume
/// changes no file in place: kubelet writes a new timestamped directory and
/// renames the `..data` symlink over to it, so an event on `..data` counts too.
/// A reload that finds the same file hash is a no-op.
const KUBELET_DATA_LINK: &str = "..data";

pub fn spawn_file_watch(reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let path = reloader.path.clone();
    let file_name = path.file_name().map(|f| f.to_os_string());
    let dir = crate::server::base_dir(&path);
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if ev
                .paths
                .iter()
                .filter_map(|p| p.file_name())
                .any(|f| Some(f) == file_name.as_deref() || f == KUBELET_DATA_LINK)
            {
                let _ = tx.try_send(());
            }
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config file; use SIGHUP or the admin reload");
            return;
        }
    };
    if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(error = %e, dir = %dir.display(), "cannot watch the config directory");
        return;
    }
    tokio::spawn(async move {
        let _keep = watcher;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                got = rx.recv() => {
                    if got.is_none() { break; }
                    // Let the writer finish, then fold the burst of events into one reload.
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    while rx.try_recv().is_ok() {}
                    let _ = reloader.reload_async("file").await;
                }
            }
        }
    });
}

pub fn spawn_sighup(reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot install the SIGHUP handler");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                s = hup.recv() => {
                    if s.is_none() { break; }
                    let _ = reloader.reload_async("sighup").await;
                }
            }
        }
    });
}
