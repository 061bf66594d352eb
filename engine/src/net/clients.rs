//! The shard's clients: its open connections, and the directory of which shard each client
//! is connected to (every shard knows its own connections and learns the others' over the
//! mesh, `ClientUp` / `ClientDown`), so a reply finds its requester.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::conn::Conn;

/// The connections of one shard and where every client of the broker is connected.
#[derive(Default)]
pub(crate) struct Clients {
    conns: RefCell<HashMap<u64, Rc<Conn>>>,
    directory: RefCell<Directory>,
}

impl Clients {
    /// Records an accepted connection.
    pub fn add(&self, conn: Rc<Conn>) {
        self.conns.borrow_mut().insert(conn.id, conn);
    }

    /// Forgets a closed connection.
    pub fn remove(&self, conn_id: u64) {
        self.conns.borrow_mut().remove(&conn_id);
    }

    /// The open connection `conn_id`.
    pub fn get(&self, conn_id: u64) -> Option<Rc<Conn>> {
        self.conns.borrow().get(&conn_id).cloned()
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Every open connection accepted by `keep`.
    pub fn select(&self, keep: impl Fn(&Conn) -> bool) -> Vec<Rc<Conn>> {
        self.conns
            .borrow()
            .values()
            .filter(|c| keep(c))
            .cloned()
            .collect()
    }

    /// Records that connection `conn_id` belongs to `client_id`; true if it is the client's
    /// first connection to this shard (the peers are to be told).
    pub fn identified(&self, client_id: &str, conn_id: u64) -> bool {
        self.directory.borrow_mut().local_up(client_id, conn_id)
    }

    /// Forgets that connection `conn_id` belongs to `client_id`; true if the client has none
    /// left on this shard (the peers are to be told).
    pub fn departed(&self, client_id: &str, conn_id: u64) -> bool {
        self.directory.borrow_mut().local_down(client_id, conn_id)
    }

    /// Shard `shard` has a connection of `client_id`.
    pub fn remote_up(&self, client_id: String, shard: usize) {
        self.directory.borrow_mut().remote_up(client_id, shard);
    }

    /// Shard `shard` has no connection of `client_id` left.
    pub fn remote_down(&self, client_id: &str, shard: usize) {
        self.directory.borrow_mut().remote_down(client_id, shard);
    }

    /// Where to deliver to `client_id`: a local connection first, else the lowest shard.
    pub fn locate(&self, client_id: &str) -> Option<Location> {
        self.directory.borrow().locate(client_id)
    }

    /// The local connection a reply to `client_id` goes to, if the client has one here.
    pub fn local_conn_of(&self, client_id: &str) -> Option<Rc<Conn>> {
        match self.locate(client_id) {
            Some(Location::Local(conn_id)) => self.get(conn_id),
            _ => None,
        }
    }
}

/// Where clients are connected: local connections by client id, other shards as a bit set.
#[derive(Default)]
struct Directory {
    local: HashMap<String, Vec<u64>>,
    remote: HashMap<String, u64>,
}

/// Where a reply for a client goes.
pub(crate) enum Location {
    Local(u64),
    Shard(usize),
}

impl Directory {
    /// Records a local connection of `client_id`; true if it is the client's first here.
    fn local_up(&mut self, client_id: &str, conn_id: u64) -> bool {
        let conns = self.local.entry(client_id.to_owned()).or_default();
        if !conns.contains(&conn_id) {
            conns.push(conn_id);
        }
        conns.len() == 1
    }

    /// Forgets a local connection; true if the client has none left here.
    fn local_down(&mut self, client_id: &str, conn_id: u64) -> bool {
        let Some(conns) = self.local.get_mut(client_id) else {
            return false;
        };
        conns.retain(|&c| c != conn_id);
        if conns.is_empty() {
            self.local.remove(client_id);
            return true;
        }
        false
    }

    /// Another shard has the client.
    fn remote_up(&mut self, client_id: String, shard: usize) {
        *self.remote.entry(client_id).or_default() |= 1 << shard;
    }

    /// Another shard no longer has the client.
    fn remote_down(&mut self, client_id: &str, shard: usize) {
        if let Some(bits) = self.remote.get_mut(client_id) {
            *bits &= !(1 << shard);
            if *bits == 0 {
                self.remote.remove(client_id);
            }
        }
    }

    /// Where to deliver to `client_id`: a local connection first, else the lowest shard.
    fn locate(&self, client_id: &str) -> Option<Location> {
        if let Some(&conn) = self.local.get(client_id).and_then(|c| c.last()) {
            return Some(Location::Local(conn));
        }
        let bits = *self.remote.get(client_id)?;
        Some(Location::Shard(bits.trailing_zeros() as usize))
    }
}
