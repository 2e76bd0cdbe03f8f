//! `zmesh queue`: declare, publish, consume, ack, stats, purge, delete and
//! read the dead letters of the broker's durable queues.

use std::io::BufRead;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use zmesh_broker::queue::QueueOptions;
use zmesh_client::queue::{QueueClient, QueueClientConfig, QueueError};

use crate::socket_args::SocketArgs;

/// Options of `zmesh queue`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  zmesh queue declare jobs --max-length 100000 --ack-timeout-ms 10000
  zmesh queue publish jobs 'resize 42'
  zmesh queue publish jobs --count 100000 --size 128     # bulk, with a progress bar
  zmesh queue consume jobs --count 10                    # print and ack
  zmesh queue stats
  zmesh queue dead-letters jobs")]
pub struct QueueCmd {
    #[command(subcommand)]
    pub action: QueueAction,
    /// Broker endpoint; in a cluster, any nodes' (comma-separated): the
    /// client moves between them, and follows a queue's consumers and
    /// purge to the node serving it.
    #[arg(
        long,
        global = true,
        default_value = "tcp://127.0.0.1:5555",
        value_delimiter = ','
    )]
    pub broker: Vec<String>,
    /// Seconds to wait for each reply before retrying.
    #[arg(long, global = true, default_value_t = 5.0)]
    pub timeout: f64,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum QueueAction {
    /// Create a queue (or check it exists with these options).
    Declare(DeclareArgs),
    /// Publish messages: the arguments, stdin lines (--stdin) or generated ones (--count).
    Publish(PublishArgs),
    /// Receive messages, print them and acknowledge them.
    Consume(ConsumeArgs),
    /// Acknowledge (or --nack) messages by tag.
    Ack(AckArgs),
    /// Show queue counters.
    Stats(StatsArgs),
    /// Drop a queue's ready messages.
    Purge(NameArg),
    /// Delete a queue and its messages.
    Delete(NameArg),
    /// Show a queue's dead letters; --drain removes them, --replay sends them back.
    DeadLetters(DeadLettersArgs),
}

#[derive(Args, Debug)]
pub struct NameArg {
    /// Queue name.
    pub queue: String,
}

#[derive(Args, Debug)]
pub struct DeclareArgs {
    /// Queue name.
    pub queue: String,
    /// always | group | os: when a publish is confirmed.
    #[arg(long)]
    pub durability: Option<String>,
    #[arg(long)]
    pub max_length: Option<u64>,
    #[arg(long)]
    pub max_bytes: Option<u64>,
    #[arg(long)]
    pub message_ttl_ms: Option<u64>,
    #[arg(long)]
    pub ack_timeout_ms: Option<u64>,
    #[arg(long)]
    pub max_deliveries: Option<u32>,
    /// Dead-letter queue ("" for none; default QUEUE.dlq).
    #[arg(long)]
    pub dead_letter: Option<String>,
    #[arg(long)]
    pub dedup_window: Option<u32>,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// Queue name.
    pub queue: String,
    /// Message bodies.
    pub bodies: Vec<String>,
    /// Publish each stdin line.
    #[arg(long)]
    pub stdin: bool,
    /// Publish this many generated messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Size of generated messages in bytes.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Publishes in flight at once.
    #[arg(long, default_value_t = 1000)]
    pub window: usize,
    /// Message id (single message only), for deduplication.
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// Queue name.
    pub queue: String,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Unacknowledged messages at once.
    #[arg(long, default_value_t = 100)]
    pub prefetch: u32,
    /// Stop when nothing arrives for this many seconds.
    #[arg(long, default_value_t = 2.0)]
    pub idle: f64,
    /// Leave messages unacknowledged (they come back after the ack timeout;
    /// `zmesh queue ack` settles them by tag).
    #[arg(long)]
    pub no_ack: bool,
    /// Print TAG, DELIVERIES and body, tab-separated.
    #[arg(short, long)]
    pub verbose: bool,
    /// Print nothing per message (bulk runs).
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct AckArgs {
    /// Queue name.
    pub queue: String,
    /// Tags.
    #[arg(required = true)]
    pub tags: Vec<u64>,
    /// Give the messages back instead.
    #[arg(long)]
    pub nack: bool,
    /// With --nack: back to the queue (default: to the dead letters).
    #[arg(long)]
    pub requeue: bool,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// One queue (default: all).
    pub queue: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DeadLettersArgs {
    /// The queue whose dead letters to read (reads QUEUE.dlq).
    pub queue: String,
    /// Remove them after printing.
    #[arg(long)]
    pub drain: bool,
    /// Publish them to QUEUE again, then remove them.
    #[arg(long, conflicts_with = "drain")]
    pub replay: bool,
    /// At most this many.
    #[arg(long, default_value_t = 1000)]
    pub count: u64,
}

fn progress(total: u64, what: &str) -> ProgressBar {
    // Drawn on stderr only when it is a terminal.
    let pb = ProgressBar::new(total);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {what} [{{bar:40}}] {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)"
        ))
        .expect("template is valid"),
    );
    pb
}

/// Exit 0 on success, 1 when the broker does not answer, 3 when it refuses.
pub async fn run(cmd: QueueCmd) -> anyhow::Result<i32> {
    let cfg = QueueClientConfig {
        attempt_timeout: Duration::from_secs_f64(cmd.timeout.max(0.01)),
        retries: 2,
        ..QueueClientConfig::default()
    };
    let client =
        QueueClient::connect_any_with(&cmd.broker, cfg, cmd.socket.options()?.name("queue-cli"))
            .await?;
    let result = match cmd.action {
        QueueAction::Declare(a) => declare(&client, a).await,
        QueueAction::Publish(a) => publish(&client, a).await,
        QueueAction::Consume(a) => consume(&client, a).await,
        QueueAction::Ack(a) => {
            if a.nack {
                client.nack(&a.queue, &a.tags, a.requeue).await?;
            } else {
                client.ack(&a.queue, &a.tags).await?;
            }
            // Acks are one-way: a STATS round trip makes sure they arrived before we exit.
            client.stats(Some(&a.queue)).await.map(|_| ())
        }
        QueueAction::Stats(a) => stats(&client, a).await,
        QueueAction::Purge(a) => client.purge(&a.queue).await.map(|n| {
            println!("purged {n} messages from {}", a.queue);
        }),
        QueueAction::Delete(a) => client.delete(&a.queue).await.map(|n| {
            println!("deleted {} with {n} messages", a.queue);
        }),
        QueueAction::DeadLetters(a) => dead_letters(&client, a).await,
    };
    exit_code(result, &cmd.broker.join(","))
}

/// The CLI's exit codes for a queue or stream operation: 0 done, 1 the broker
/// did not answer, 3 the broker refused (its reason printed).
pub fn exit_code(result: Result<(), QueueError>, broker: &str) -> anyhow::Result<i32> {
    match result {
        Ok(()) => Ok(0),
        Err(QueueError::Refused { code, reason }) => {
            eprintln!("zmesh: broker refused ({code}): {reason}");
            Ok(3)
        }
        Err(e @ QueueError::Timeout(_)) => {
            eprintln!("zmesh: {e} at {broker}");
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}

async fn declare(client: &QueueClient, a: DeclareArgs) -> Result<(), QueueError> {
    let mut o = QueueOptions::default();
    if let Some(d) = &a.durability {
        o.durability = zmesh_log::Durability::parse(d).map_err(|e| QueueError::Refused {
            code: 400,
            reason: e.to_string(),
        })?;
    }
    o.max_length = a.max_length.unwrap_or(o.max_length);
    o.max_bytes = a.max_bytes.unwrap_or(o.max_bytes);
    o.message_ttl_ms = a.message_ttl_ms.or(o.message_ttl_ms);
    o.ack_timeout_ms = a.ack_timeout_ms.unwrap_or(o.ack_timeout_ms);
    o.max_deliveries = a.max_deliveries.unwrap_or(o.max_deliveries);
    o.dead_letter = a.dead_letter.clone();
    o.dedup_window = a.dedup_window.unwrap_or(o.dedup_window);
    let spec = client.declare(&a.queue, Some(&o)).await?;
    println!(
        "{}",
        serde_json::to_string_pretty(&spec).expect("spec serializes")
    );
    Ok(())
}

async fn publish(client: &QueueClient, a: PublishArgs) -> Result<(), QueueError> {
    if let Some(id) = &a.id {
        let [body] = &a.bodies[..] else {
            return Err(QueueError::Refused {
                code: 400,
                reason: "--id takes exactly one body".into(),
            });
        };
        let c = client
            .publish_with_id(&a.queue, id.clone(), body.clone())
            .await?;
        println!(
            "confirmed {}{}",
            c.tag,
            if c.duplicate { " (duplicate)" } else { "" }
        );
        return Ok(());
    }
    let bodies: Box<dyn Iterator<Item = Bytes> + Send> = if let Some(n) = a.count {
        let size = a.size;
        Box::new((0..n).map(move |i| {
            let mut b = format!("{i:012} ").into_bytes();
            b.resize(size.max(b.len()), b'x');
            Bytes::from(b)
        }))
    } else if a.stdin {
        let lines: Vec<Bytes> = std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .map(Bytes::from)
            .collect();
        Box::new(lines.into_iter())
    } else {
        Box::new(a.bodies.clone().into_iter().map(Bytes::from))
    };
    let total = a.count.unwrap_or(0);
    let pb = progress(total, "publishing");
    let started = Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    let (mut confirmed, mut duplicates) = (0u64, 0u64);
    let mut first_error = None;
    let mut collect = |r: Result<Result<_, QueueError>, _>, pb: &ProgressBar| match r {
        Ok(Ok(c)) => {
            let c: zmesh_client::queue::Confirm = c;
            confirmed += 1;
            duplicates += u64::from(c.duplicate);
            pb.inc(1);
        }
        Ok(Err(e)) => {
            first_error.get_or_insert(e);
        }
        Err(_) => {}
    };
    for body in bodies {
        if in_flight.len() >= a.window.max(1)
            && let Some(r) = in_flight.join_next().await
        {
            collect(r, &pb);
        }
        let (c, q) = (client.clone(), a.queue.clone());
        in_flight.spawn(async move { c.publish(&q, body).await });
    }
    while let Some(r) = in_flight.join_next().await {
        collect(r, &pb);
    }
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "confirmed {confirmed} messages in {secs:.2} s ({:.0}/s){}",
        confirmed as f64 / secs.max(1e-9),
        if duplicates > 0 {
            format!(", {duplicates} duplicates")
        } else {
            String::new()
        }
    );
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn consume(client: &QueueClient, a: ConsumeArgs) -> Result<(), QueueError> {
    // No more in hand than asked for: extra deliveries would come back counted as redelivered.
    let prefetch = a.count.map_or(a.prefetch, |c| {
        a.prefetch.min(c.clamp(1, u64::from(u32::MAX)) as u32)
    });
    let mut consumer = client.consume(&a.queue, prefetch).await?;
    let pb = progress(a.count.unwrap_or(0), "consuming");
    let idle = Duration::from_secs_f64(a.idle.max(0.01));
    let started = Instant::now();
    let mut n = 0u64;
    let mut to_ack = Vec::new();
    while a.count.is_none_or(|c| n < c) {
        let Ok(Some(d)) = tokio::time::timeout(idle, consumer.next()).await else {
            break;
        };
        n += 1;
        pb.inc(1);
        if a.verbose {
            println!(
                "{}\t{}\t{}",
                d.tag,
                d.deliveries,
                String::from_utf8_lossy(&d.body)
            );
        } else if !a.quiet {
            println!("{}", String::from_utf8_lossy(&d.body));
        }
        if !a.no_ack {
            to_ack.push(d.tag);
            if to_ack.len() >= (prefetch as usize / 2).max(1) {
                consumer.ack_many(&std::mem::take(&mut to_ack)).await?;
            }
        }
    }
    if !to_ack.is_empty() {
        consumer.ack_many(&to_ack).await?;
    }
    pb.finish_and_clear();
    if a.no_ack {
        // The messages stay held for `zmesh queue ack` until their ack timeout.
        consumer.detach().await?;
    } else {
        consumer.cancel().await?;
    }
    if a.quiet || a.count.is_some_and(|c| c > 1000) {
        let secs = started.elapsed().as_secs_f64();
        eprintln!("consumed {n} messages in {secs:.2} s");
    }
    Ok(())
}

async fn stats(client: &QueueClient, a: StatsArgs) -> Result<(), QueueError> {
    let stats = client.stats(a.queue.as_deref()).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&stats).expect("json"));
        return Ok(());
    }
    println!(
        "{:<24} {:>9} {:>8} {:>9} {:>9} {:>9} {:>10} {:>6}",
        "QUEUE", "READY", "UNACKED", "PUBLISHED", "ACKED", "REDELIV", "DEADLETTER", "CONS"
    );
    for s in stats {
        let n = |k: &str| s.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        println!(
            "{:<24} {:>9} {:>8} {:>9} {:>9} {:>9} {:>10} {:>6}",
            s.get("name").and_then(|v| v.as_str()).unwrap_or("?"),
            n("ready"),
            n("unacked"),
            n("published"),
            n("acked"),
            n("redelivered"),
            n("dead_lettered"),
            n("consumers"),
        );
    }
    Ok(())
}

async fn dead_letters(client: &QueueClient, a: DeadLettersArgs) -> Result<(), QueueError> {
    let dlq = format!("{}.dlq", a.queue);
    let mut consumer = client
        .consume(&dlq, a.count.clamp(1, 10_000) as u32)
        .await?;
    let mut seen = Vec::new();
    while (seen.len() as u64) < a.count {
        let Ok(Some(d)) = tokio::time::timeout(Duration::from_millis(500), consumer.next()).await
        else {
            break;
        };
        println!(
            "{}\t{}\t{}",
            d.tag,
            String::from_utf8_lossy(&d.msg_id),
            String::from_utf8_lossy(&d.body)
        );
        if a.replay {
            // A fresh message id: the original may still be in the queue's
            // dedup window, which would confirm it as a duplicate and store nothing.
            client.publish(&a.queue, d.body.clone()).await?;
        }
        seen.push(d.tag);
    }
    if a.drain || a.replay {
        consumer.ack_many(&seen).await?;
    } else if !seen.is_empty() {
        client.nack(&dlq, &seen, true).await?;
    }
    consumer.cancel().await?;
    eprintln!(
        "{} dead letters{}",
        seen.len(),
        if a.replay {
            " sent back"
        } else if a.drain {
            " removed"
        } else {
            ""
        }
    );
    Ok(())
}
