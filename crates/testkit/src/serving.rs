//! A loopback listener's serving task, for the test servers an outage is played on: it goes
//! down (the listener and every open connection closed, so connections are refused) and
//! comes back on the same port with whatever state its server keeps.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The port and the task serving it; going down when dropped.
#[derive(Debug)]
pub(crate) struct Serving {
    addr: SocketAddr,
    tasks: Mutex<Option<JoinSet<()>>>,
}

impl Serving {
    /// A free port of 127.0.0.1, not served yet.
    pub(crate) async fn bind() -> (Serving, TcpListener) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let serving = Serving {
            addr: listener.local_addr().expect("local address"),
            tasks: Mutex::new(None),
        };
        (serving, listener)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves with `accept_loop`, which must keep its connections in a set of its own so
    /// that aborting it cuts them.
    pub(crate) fn run(&self, accept_loop: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop);
        *self.tasks.lock().unwrap() = Some(tasks);
    }

    /// Closes the listener and every open connection.
    pub(crate) fn go_down(&self) {
        if let Some(mut tasks) = self.tasks.lock().unwrap().take() {
            tasks.abort_all();
        }
    }

    /// The same port again, to serve once more.
    pub(crate) async fn rebind(&self) -> TcpListener {
        TcpListener::bind(self.addr)
            .await
            .expect("bind the same port again")
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.go_down();
    }
}
