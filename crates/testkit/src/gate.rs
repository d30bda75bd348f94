//! A TCP forwarder in front of a real server that can go down and come back on the same port,
//! for outages of servers that keep their state in memory (OpenBao dev mode, moto): killing
//! and restarting them would lose every secret, token and IAM user the test made.
//!
//! ```no_run
//! # async fn demo() {
//! use secretsync_testkit::gate::Gate;
//!
//! let gate = Gate::start(8200).await; // forwards 127.0.0.1:<gate.port()> to 127.0.0.1:8200
//! gate.go_down(); // connections refused, open ones cut
//! gate.come_back().await;
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A forwarder to `127.0.0.1:<target>`, stopped when dropped.
#[derive(Debug)]
pub struct Gate {
    addr: SocketAddr,
    target: u16,
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl Gate {
    /// Forwards a free port of 127.0.0.1 to `127.0.0.1:<target>`.
    pub async fn start(target: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let gate = Gate {
            addr: listener.local_addr().expect("local address"),
            target,
            tasks: Mutex::new(None),
        };
        gate.serve(listener);
        gate
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Connections live in this task's set: aborting it cuts them all.
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                connections.spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        *self.tasks.lock().unwrap() = Some(tasks);
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Goes down: open connections are cut and new ones refused until [`Gate::come_back`].
    pub fn go_down(&self) {
        if let Some(mut tasks) = self.tasks.lock().unwrap().take() {
            tasks.abort_all();
        }
    }

    /// Comes back on the same port.
    pub async fn come_back(&self) {
        let listener = TcpListener::bind(self.addr)
            .await
            .expect("bind the gate's port again");
        self.serve(listener);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.go_down();
    }
}
