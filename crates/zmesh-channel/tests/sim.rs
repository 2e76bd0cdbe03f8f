//! The channel's two state machines over a simulated network that loses,
//! duplicates, reorders and delays messages, with either side crashing: the
//! application must see 0..n exactly once, in order. Seeded, so a failure
//! replays exactly.

use std::collections::VecDeque;

use proptest::prelude::*;
use zmesh_channel::receiver::{ReceiverCore, Verdict};
use zmesh_channel::sender::{SenderConfig, SenderCore};

/// A moment at `ms` on both clocks.
fn at(ms: u64) -> zmesh::clock::Now {
    zmesh::clock::Now {
        mono_ms: ms,
        wall_ms: ms,
    }
}

#[derive(Clone, Debug)]
enum Packet {
    Data(u64),
    Ack {
        committed: u64,
        received: u64,
        window: u64,
    },
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn run(seed: u64, n: u64, loss: u64, crash: u64) -> Result<(), String> {
    let mut rng = Rng(seed | 1);
    let config = SenderConfig {
        window_max: 16,
        rto_ms: 30,
        ping_ms: 20,
        dead_ms: 200,
    };
    let mut now = 0u64;
    // The outbox: everything is "written" up front; the sender's view of it.
    let mut sender = SenderCore::new(config.clone(), 0, n, at(now));
    // Persisted receiver state survives crashes; `received` does not.
    let mut committed_on_disk = 0u64;
    let mut receiver = ReceiverCore::new(0, 8);
    let mut app: Vec<u64> = Vec::new();
    let mut to_receiver: VecDeque<(u64, Packet)> = VecDeque::new();
    let mut to_sender: VecDeque<(u64, Packet)> = VecDeque::new();
    let net = |q: &mut VecDeque<(u64, Packet)>, p: Packet, now: u64, rng: &mut Rng| {
        if rng.chance(loss) {
            return;
        }
        let at = now + 1 + rng.next() % 5; // reordering by delay
        q.push_back((at, p.clone()));
        if rng.chance(5) {
            q.push_back((at + 3, p)); // duplicated
        }
    };
    for _ in 0..200_000 {
        now += 1;
        // Sender side.
        if sender.tick(at(now)) {
            // A ping: answered by an ACK (modelled as the receiver's next ACK).
            let a = Packet::Ack {
                committed: receiver.committed,
                received: receiver.received,
                window: receiver.window_left(),
            };
            net(&mut to_sender, a, now, &mut rng);
        }
        for seq in sender.transmit(at(now)) {
            net(&mut to_receiver, Packet::Data(seq), now, &mut rng);
        }
        // Deliveries due now, in arrival-time order.
        let mut due: Vec<(u64, Packet)> = Vec::new();
        to_receiver.retain(|(at, p)| {
            if *at <= now {
                due.push((*at, p.clone()));
                false
            } else {
                true
            }
        });
        due.sort_by_key(|d| d.0);
        for (_, p) in due {
            if let Packet::Data(seq) = p {
                if receiver.on_data(seq) == Verdict::Deliver {
                    app.push(seq);
                    // The application processes and commits at once here.
                    receiver.commit(seq + 1);
                    committed_on_disk = receiver.committed;
                }
                let a = Packet::Ack {
                    committed: receiver.committed,
                    received: receiver.received,
                    window: receiver.window_left(),
                };
                net(&mut to_sender, a, now, &mut rng);
            }
        }
        let mut acks: Vec<(u64, Packet)> = Vec::new();
        to_sender.retain(|(at, p)| {
            if *at <= now {
                acks.push((*at, p.clone()));
                false
            } else {
                true
            }
        });
        acks.sort_by_key(|d| d.0);
        for (_, p) in acks {
            if let Packet::Ack {
                committed,
                received,
                window,
            } = p
            {
                sender.on_ack(at(now), committed, received, window);
            }
        }
        // Crashes: the receiver restarts from its persisted position, the
        // sender from its outbox (which keeps everything not yet committed).
        if rng.chance(crash) && rng.chance(10) {
            receiver = ReceiverCore::new(committed_on_disk, 8);
            to_receiver.clear();
        }
        if rng.chance(crash) && rng.chance(10) {
            sender = SenderCore::new(config.clone(), sender.committed(), n, at(now));
            to_sender.clear();
        }
        if app.len() as u64 == n && sender.committed() == n {
            break;
        }
    }
    let want: Vec<u64> = (0..n).collect();
    if app != want {
        let first_bad = app.iter().zip(&want).position(|(a, b)| a != b);
        return Err(format!(
            "delivered {} of {n}; first difference at {first_bad:?}",
            app.len()
        ));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn exactly_once_in_order_whatever_the_network(seed in any::<u64>(), n in 1u64..300, loss in 0u64..40, crash in 0u64..5) {
        prop_assert_eq!(run(seed, n, loss, crash), Ok(()));
    }
}
