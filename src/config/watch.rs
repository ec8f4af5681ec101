//! Reload: file watch, SIGHUP and the admin call all end here. Parse, validate,
//! then swap the snapshot atomically; a bad file keeps the running config.

use super::compile;
use super::error::ConfigError;
use super::source;
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
    lock: Mutex<Attempts>,
}

/// What a reload remembers between attempts (behind the reload lock).
struct Attempts {
    bound: BoundSettings,
    /// Hash of the file content the last refused reload read: the watcher does
    /// not try the same broken content again (an explicit reload does).
    refused: Option<String>,
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

/// Who asked for a reload. The file watcher's attempts are deduplicated by
/// content; an operator's (SIGHUP, admin) always get an answer.
fn explicit(source: &str) -> bool {
    source != "file"
}

impl Reloader {
    pub fn new(path: PathBuf, live: Arc<ArcSwap<Gateway>>, state: Arc<State>) -> Reloader {
        let bound = match source::read_file(&path) {
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
            lock: Mutex::new(Attempts {
                bound,
                refused: None,
            }),
        }
    }

    pub fn live(&self) -> &Arc<ArcSwap<Gateway>> {
        &self.live
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Re-read the file and swap it in when valid. Blocking: call it from a
    /// blocking context. `source` is `file`, `sighup` or `admin`.
    ///
    /// The same content is never compiled twice by the watcher: an unchanged
    /// file is a no-op, and a content that was refused is refused again
    /// silently (not logged, not counted) until the file changes.
    pub fn reload(&self, source: &str) -> Result<ReloadOutcome, Vec<ConfigError>> {
        let mut attempts = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let unchanged = |hash: &str| {
            if explicit(source) {
                tracing::info!(source, hash, "configuration unchanged; nothing to reload");
            } else {
                tracing::debug!(source, hash, "configuration unchanged");
            }
            Ok(ReloadOutcome {
                version: self.live.load().version.clone(),
                changed: false,
                changes: vec![],
            })
        };
        let (text, hash) = match source::read_text(&self.path) {
            Ok(x) => x,
            Err(errors) => return self.refuse(source, &mut attempts, None, errors),
        };
        if hash == self.live.load().version.hash {
            attempts.refused = None;
            return unchanged(&hash);
        }
        if !explicit(source) && attempts.refused.as_deref() == Some(hash.as_str()) {
            tracing::debug!(
                source,
                hash,
                "file content already refused; waiting for a change"
            );
            return Err(vec![ConfigError {
                location: self.path.display().to_string(),
                message: "this content was refused already".into(),
            }]);
        }
        let result = source::parse_file(&self.path, &text).and_then(|raw| {
            compile::compile(&raw, hash.clone(), &self.state)
                .map(|g| (g, raw))
                .map_err(|errors| super::locate::with_lines(&text, errors))
        });
        let (gw, raw) = match result {
            Ok(x) => x,
            Err(errors) => return self.refuse(source, &mut attempts, Some(hash), errors),
        };
        attempts.refused = None;
        let changes = gw.inventory.diff(&self.live.load().inventory);
        if crate::cluster::fingerprint(raw.cluster.as_ref()) != self.state.cluster_settings {
            tracing::warn!("[cluster] changed in the file; it takes effect on restart only");
        }
        if bound_of(&raw) != attempts.bound {
            tracing::warn!(
                "listener addresses changed in the file; they take effect on restart only"
            );
        }
        let version = gw.version.clone();
        self.live.store(Arc::new(gw));
        self.state.note_reload(Some(&version));
        if changes.is_empty() {
            tracing::info!(source, hash = %version.hash, "configuration reloaded (no routes, keys, plugins or usage plans changed)");
        } else {
            tracing::info!(source, hash = %version.hash, changes = %changes.join("; "), "configuration reloaded");
        }
        Ok(ReloadOutcome {
            version,
            changed: true,
            changes,
        })
    }

    /// Count and log a refused reload: one ERROR line with every problem.
    fn refuse(
        &self,
        source: &str,
        attempts: &mut Attempts,
        hash: Option<String>,
        errors: Vec<ConfigError>,
    ) -> Result<ReloadOutcome, Vec<ConfigError>> {
        self.state.note_reload(None);
        attempts.refused = hash;
        let problems = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        tracing::error!(
            source,
            count = errors.len(),
            problems = %problems,
            "reload refused; the running configuration stays"
        );
        Err(errors)
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

/// The file must have been quiet this long before the watcher reads it: a file
/// rewritten in place in several writes is never loaded half-written (as long
/// as the writer pauses less than this between writes; an atomic rename is
/// always safe).
pub const DEBOUNCE: Duration = Duration::from_millis(400);

/// Events that can change what the file holds. Opening and reading it (which
/// the reload itself does) are not among them.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    matches!(
        kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
    )
}

pub fn spawn_file_watch(reloader: Arc<Reloader>, mut stop: watch::Receiver<bool>) {
    let (tx, mut rx) = mpsc::channel::<()>(16);
    let path = reloader.path.clone();
    let file_name = path.file_name().map(|f| f.to_os_string());
    let dir = source::base_dir(&path);
    let handler = move |res: notify::Result<notify::Event>| {
        if let Ok(ev) = res {
            if changes_content(&ev.kind)
                && ev
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
                    // Wait until the file has been quiet for DEBOUNCE: every new
                    // event restarts the wait.
                    loop {
                        match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                            Ok(Some(())) => continue,
                            Ok(None) => return,
                            Err(_) => break,
                        }
                    }
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
