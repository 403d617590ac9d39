//! A hand-written fake endpoint for the one fault no emulator can stage: it accepts TCP
//! connections and never answers them.
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub struct Hang {
    pub port: u16,
    accepted: Arc<AtomicUsize>,
}

impl Hang {
    pub fn start() -> Hang {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        std::thread::spawn(move || {
            // Connections are kept open (never read, never answered) until the test exits.
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                held.push(stream);
                counter.fetch_add(1, Ordering::SeqCst);
            }
        });
        Hang { port, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    pub fn queue_url(&self) -> String {
        format!("http://127.0.0.1:{}/000000000000/hang", self.port)
    }
}
