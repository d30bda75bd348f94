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

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::serving::Serving;

/// A forwarder to `127.0.0.1:<target>`, stopped when dropped.
#[derive(Debug)]
pub struct Gate {
    serving: Serving,
    target: u16,
}

impl Gate {
    /// Forwards a free port of 127.0.0.1 to `127.0.0.1:<target>`.
    pub async fn start(target: u16) -> Gate {
        let (serving, listener) = Serving::bind().await;
        let gate = Gate { serving, target };
        gate.serve(listener);
        gate
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        self.serving.run(async move {
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
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.serving.addr().port()
    }

    /// Goes down: open connections are cut and new ones refused until [`Gate::come_back`].
    pub fn go_down(&self) {
        self.serving.go_down();
    }

    /// Comes back on the same port.
    pub async fn come_back(&self) {
        self.serve(self.serving.rebind().await);
    }
}
