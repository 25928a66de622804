//! A system running its roles as tasks of this process: what `byok run`,
//! `byok demo`, the benchmarks and the test harnesses start.

use std::net::SocketAddr;

use byok_config::Settings;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{AppError, System};

/// Which roles a [`Running`] system takes in this process.
#[derive(Debug, Default)]
pub struct Roles {
    /// Serve the API on this listener.
    pub api: Option<TcpListener>,
    /// Run a worker; the string names its role in the consumer's name.
    pub worker: Option<String>,
}

impl Roles {
    /// The API on `listener` and a worker: the embedded shape's one process.
    pub fn both(listener: TcpListener) -> Roles {
        Roles {
            api: Some(listener),
            worker: Some("run".to_owned()),
        }
    }

    /// The API alone.
    pub fn api(listener: TcpListener) -> Roles {
        Roles {
            api: Some(listener),
            worker: None,
        }
    }

    /// A worker alone.
    pub fn worker(role: &str) -> Roles {
        Roles {
            api: None,
            worker: Some(role.to_owned()),
        }
    }
}

/// A system with its roles running as tasks. [`Running::stop`] ends them.
pub struct Running {
    system: std::sync::Arc<System>,
    api_address: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    api: Option<JoinHandle<Result<(), AppError>>>,
    worker: Option<JoinHandle<Result<(), AppError>>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("system", &self.system)
            .field("api_address", &self.api_address)
            .field("worker", &self.worker.is_some())
            .finish_non_exhaustive()
    }
}

/// Opens a [`System`] from `settings` and starts `roles` on it. The roles
/// share every part: in the embedded shape that is what keeps one SQLite
/// file's writers in one queue and the rate limits in one memory.
pub async fn start(settings: Settings, roles: Roles) -> Result<Running, AppError> {
    let system = std::sync::Arc::new(System::open(settings).await?);
    // One signal stops every role.
    let (stop, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let worker = match roles.worker {
        Some(role) => Some(tokio::spawn(
            system.worker(&role, stopped(stop_rx.clone())).await?,
        )),
        None => None,
    };
    let (api, api_address) = match roles.api {
        Some(listener) => {
            let address = listener.local_addr().ok();
            let system = std::sync::Arc::clone(&system);
            let shutdown = stopped(stop_rx);
            let task = tokio::spawn(async move { system.serve_api(listener, shutdown).await });
            (Some(task), address)
        }
        None => (None, None),
    };
    Ok(Running {
        system,
        api_address,
        stop,
        api,
        worker,
    })
}

impl Running {
    /// Where the API listens, when it runs here.
    pub fn api_address(&self) -> Option<SocketAddr> {
        self.api_address
    }

    /// The parts the roles run on.
    pub fn system(&self) -> &System {
        &self.system
    }

    /// Stops fetching and serving, lets work in flight finish within
    /// `worker.shutdown_grace`, and closes the store.
    pub async fn stop(self) -> Result<(), AppError> {
        let _ = self.stop.send(true);
        let served = match self.api {
            Some(task) => task.await.map_err(AppError::Task)?,
            None => Ok(()),
        };
        let worked = match self.worker {
            Some(task) => task.await.map_err(AppError::Task)?,
            None => Ok(()),
        };
        self.system.close().await;
        served.and(worked)
    }
}
