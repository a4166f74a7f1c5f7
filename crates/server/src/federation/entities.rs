//! The directory and the Entity Index (SPEC 8.4): ENTITIES for any peer, BOOK for an
//! authenticated session, and the scheduled pull of peers' entries, keeping an entry only
//! when the peer is the home server of the mailbox's domain.

use std::collections::HashMap;
use std::net::IpAddr;

use vouchmail_proto::messenger::entities::parse_entities_reply;
use vouchmail_proto::messenger::{replies, DirectoryEntry, EntityChange, EntityOp, PublishedId};
use vouchmail_proto::smtp::address::Address;
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_store::{MessengerPeer, PeerPull};

use super::{now, Messenger};
use crate::net::discovery::home_addresses;
use crate::net::federation::LARGE_REPLY;
use crate::rules::entity_index::MAX_ENTRIES_PER_PEER;
use crate::rules::recipient::store_reply;
use crate::support::error::Error;
use vouchmail_proto::messenger::ServerReply;

/// Most change lines one ENTITIES answer holds; the peer asks again from the last serial.
pub const MAX_ENTITIES: usize = 10_000;

/// What one pull of a peer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullOutcome {
    pub added: usize,
    pub removed: usize,
    /// Entries the peer may not publish (it is not their domain's home server).
    pub dropped: usize,
    pub highest: i64,
}

impl Messenger {
    /// SPEC 8.4: `250-<serial> ADD|DEL <id> <mailbox>` lines after `since`, then the
    /// highest serial.
    pub(super) async fn entities(&self, since: u64) -> Reply {
        let since = i64::try_from(since).unwrap_or(i64::MAX);
        let (rows, highest) = match self.store.entity_changes_since(since, MAX_ENTITIES).await {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(error = %e, "ENTITIES: cannot read the entity changes");
                return store_reply(&e);
            }
        };
        let mut changes = Vec::with_capacity(rows.len());
        for row in rows {
            let id = PublishedId::parse(&row.published_id);
            let mailbox = Address::parse(&row.mailbox);
            let (Some(id), Ok(mailbox)) = (id, mailbox) else {
                tracing::warn!(serial = row.serial, id = %row.published_id, mailbox = %row.mailbox, "ENTITIES: a stored change does not parse; left out");
                continue;
            };
            changes.push(EntityChange { serial: row.serial.max(0) as u64, op: row.op, id, mailbox });
        }
        replies::entities(&changes, highest.max(0) as u64)
    }

    /// SPEC 8.4: the published entries matching `query`, at most 50.
    pub(super) async fn book(&self, query: &str) -> Reply {
        let records = match self.store.list_directory().await {
            Ok(records) => records,
            Err(e) => {
                tracing::error!(error = %e, "BOOK: cannot read the directory");
                return store_reply(&e);
            }
        };
        let entries: Vec<DirectoryEntry> = records
            .into_iter()
            .filter(|r| r.published)
            .map(|r| DirectoryEntry {
                mailbox: r.address,
                name: r.name,
                organisation: r.organisation,
                role: r.role,
                ids: r.ids,
            })
            .filter(|e| e.matches(query))
            .take(vouchmail_proto::messenger::directory::BOOK_LIMIT)
            .collect();
        replies::book(&entries)
    }

    /// Pulls `ENTITIES <last serial>` from one peer and applies what it may publish.
    pub async fn pull_peer(&self, peer: &MessengerPeer) -> Result<PullOutcome, Error> {
        let line = format!("ENTITIES {}", peer.last_serial.max(0));
        let (reply, ip) = self.client.call(&peer.domain, &line, LARGE_REPLY).await?;
        if reply.code != 250 {
            return Err(Error::refused(&peer.domain, "ENTITIES", reply.to_reply()));
        }
        let parse = |reply: &ServerReply| {
            parse_entities_reply(&reply.texts()).map_err(|e| Error::protocol(&peer.domain, format!("ENTITIES: {e}")))
        };
        let (mut changes, mut highest) = parse(&reply)?;
        // A peer whose serials went back started again (a new store): learn it anew.
        let reset = (highest as i64) < peer.last_serial;
        if reset {
            tracing::warn!(peer = %peer.domain, highest, last = peer.last_serial, "Messenger peer's serials went back; pulling all its entries again");
            let (again, _) = self.client.call(&peer.domain, "ENTITIES 0", LARGE_REPLY).await?;
            (changes, highest) = parse(&again)?;
        }
        let mut outcome = PullOutcome { highest: highest as i64, ..PullOutcome::default() };
        // The last change of each entry wins.
        let mut latest: HashMap<(String, String), EntityOp> = HashMap::new();
        for change in changes {
            latest.insert((change.id.to_string(), change.mailbox.to_string().to_lowercase()), change.op);
        }
        let mut homes: HashMap<String, Vec<IpAddr>> = HashMap::new();
        let mut pull =
            PeerPull { peer: peer.domain.clone(), reset, last_serial: highest as i64, at: now(), ..Default::default() };
        // SPEC 8.4: at most MAX_ENTRIES_PER_PEER entries from one peer.
        let held = if reset { 0 } else { self.store.count_learnt_for_peer(&peer.domain).await? };
        let mut room = MAX_ENTRIES_PER_PEER.saturating_sub(held);
        for ((id, mailbox), op) in latest {
            if op == EntityOp::Del {
                pull.remove.push((id, mailbox));
                outcome.removed += 1;
                continue;
            }
            let domain = mailbox.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default();
            if room == 0 {
                tracing::warn!(peer = %peer.domain, %id, %mailbox, "Entity Index entry dropped: the peer holds the most entries one peer may");
                outcome.dropped += 1;
                continue;
            }
            if self.may_publish(&domain, ip, &mut homes).await {
                room -= 1;
                pull.add.push((id, mailbox));
                outcome.added += 1;
            } else {
                // SPEC 8.4: other entries are dropped and logged; an earlier copy goes too.
                tracing::warn!(peer = %peer.domain, %ip, %id, %mailbox, "Entity Index entry dropped: the peer is not the home server of the mailbox's domain");
                pull.remove.push((id, mailbox));
                outcome.dropped += 1;
            }
        }
        self.store.apply_peer_pull(pull).await?;
        Ok(outcome)
    }

    /// Whether the peer at `ip` is the home server of `domain` (SPEC 8.4, by DNS). Never
    /// for a domain of this server: its entries are ours to publish.
    async fn may_publish(&self, domain: &str, ip: IpAddr, homes: &mut HashMap<String, Vec<IpAddr>>) -> bool {
        match self.store.get_domain(domain).await {
            Ok(None) => {}
            Ok(Some(_)) => return false,
            Err(e) => {
                tracing::warn!(%domain, error = %e, "cannot read the domain; entry not kept");
                return false;
            }
        }
        if !homes.contains_key(domain) {
            let found = match home_addresses(self.client.dns(), domain, self.client.options().port).await {
                Ok(addresses) => addresses,
                Err(e) => {
                    tracing::info!(%domain, error = %e, "no home server address for the domain; its entries not kept");
                    Vec::new()
                }
            };
            homes.insert(domain.to_string(), found);
        }
        homes.get(domain).is_some_and(|addresses| addresses.contains(&ip))
    }

    /// The peers to pull: the configured ones and every home server talked to. A learnt
    /// peer that has not answered for [`PEER_UNREACHABLE_SECS`] is dropped first, with its
    /// entries (SPEC 8.4); a configured one is the operator's to remove.
    pub async fn peers_to_pull(&self) -> Vec<MessengerPeer> {
        let peers = match self.store.list_messenger_peers().await {
            Ok(peers) => peers,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the Messenger peers");
                return Vec::new();
            }
        };
        let now = now();
        let mut kept = Vec::with_capacity(peers.len());
        for peer in peers {
            if !is_abandoned(&peer, now) {
                kept.push(peer);
                continue;
            }
            match self.store.forget_messenger_peer(&peer.domain).await {
                Ok(entries) => tracing::info!(
                    peer = %peer.domain,
                    entries,
                    last_success = ?peer.last_success,
                    "Messenger peer unreachable for 30 days: dropped with its Entity Index entries"
                ),
                Err(e) => tracing::warn!(peer = %peer.domain, error = %e, "cannot drop the unreachable peer"),
            }
        }
        kept
    }

    /// Pulls one peer and records a failure against it.
    pub async fn pull_and_record(&self, peer: &MessengerPeer) {
        match self.pull_peer(peer).await {
            Ok(outcome) => tracing::debug!(peer = %peer.domain, ?outcome, "Entity Index pulled"),
            Err(error) => {
                tracing::info!(peer = %peer.domain, %error, "Entity Index pull failed");
                if let Err(e) = self.store.record_peer_error(&peer.domain, now(), &error.to_string()).await {
                    tracing::warn!(error = %e, "cannot record the failed pull");
                }
            }
        }
    }

    /// Records the configured peers (SPEC 8.4: pulled whether or not they ever called).
    pub async fn note_configured_peers(&self, configured: &[String]) {
        for domain in configured {
            if let Err(e) = self.store.note_messenger_peer(&domain.to_ascii_lowercase(), true, None).await {
                tracing::warn!(%domain, error = %e, "cannot record the configured Messenger peer");
            }
        }
    }
}

/// SPEC 8.4: a peer not reachable for 30 days is dropped with its entries.
pub const PEER_UNREACHABLE_SECS: i64 = 30 * 86_400;

/// Whether `peer` is a learnt one that has not answered for [`PEER_UNREACHABLE_SECS`]. A
/// learnt peer was noted when it answered a verified call, so it always has a time.
fn is_abandoned(peer: &MessengerPeer, now: i64) -> bool {
    !peer.configured && peer.last_success.is_some_and(|at| now - at > PEER_UNREACHABLE_SECS)
}
