//! `zmesh stream`: create, publish, subscribe, snapshot and inspect streams.

use std::io::BufRead;
use std::time::Duration;

use clap::{Args, Subcommand};
use zmesh_broker::stream::StreamOptions;
use zmesh_client::stream::StreamError;
use zmesh_client::stream::{StreamClient, StreamClientConfig};
use zmesh_wire::stream::proto::Start;

use crate::socket_args::SocketArgs;

/// Options of `zmesh stream`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:
  zmesh stream create orders --max-age-ms 86400000
  zmesh stream publish orders orders.eu '{\"id\": 7}' --msg-id order-7
  zmesh stream subscribe orders 'orders.>' --start first --durable audit
  zmesh stream snapshot orders 'orders.*'
  zmesh stream info")]
pub struct StreamCmd {
    #[command(subcommand)]
    pub action: StreamAction,
    /// Broker endpoint.
    #[arg(long, global = true, default_value = "tcp://127.0.0.1:5555")]
    pub broker: String,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// What to do.
#[derive(Subcommand, Debug)]
pub enum StreamAction {
    /// Create a stream.
    Create(CreateArgs),
    /// Publish messages (the arguments, or stdin lines with --stdin).
    Publish(PublishArgs),
    /// Print messages as they come: from the start, new ones, a sequence or a time.
    Subscribe(SubscribeArgs),
    /// Print the last message of every matching subject.
    Snapshot(SnapshotArgs),
    /// Show streams.
    Info(InfoArgs),
    /// Delete a stream.
    Delete(InfoArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    pub stream: String,
    #[arg(long)]
    pub max_age_ms: Option<u64>,
    #[arg(long)]
    pub max_bytes: Option<u64>,
    #[arg(long)]
    pub max_msgs: Option<u64>,
    /// always | group | os
    #[arg(long)]
    pub durability: Option<String>,
}

#[derive(Args, Debug)]
pub struct PublishArgs {
    pub stream: String,
    pub subject: String,
    pub bodies: Vec<String>,
    #[arg(long)]
    pub stdin: bool,
    /// Message id for deduplication (several messages: ID-0, ID-1, ...):
    /// running the same command again stores nothing new and prints the
    /// first sequence numbers.
    #[arg(long)]
    pub msg_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct SubscribeArgs {
    pub stream: String,
    /// Subject filter (`*` one token, `>` the rest).
    #[arg(default_value = ">")]
    pub filter: String,
    /// first | new | seq:N | time:MS
    #[arg(long, default_value = "new")]
    pub start: String,
    /// Keep the position on the broker under this name.
    #[arg(long)]
    pub durable: Option<String>,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop when nothing arrives for this many seconds (default: never).
    #[arg(long)]
    pub idle: Option<f64>,
    /// Print SEQ, SUBJECT and body, tab-separated.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    pub stream: String,
    #[arg(default_value = ">")]
    pub filter: String,
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    pub stream: Option<String>,
}

/// Exit 0 on success, 1 when the broker does not answer, 3 when it refuses.
pub async fn run(cmd: StreamCmd) -> anyhow::Result<i32> {
    let client = StreamClient::connect_with(
        &cmd.broker,
        StreamClientConfig::default(),
        cmd.socket.options()?.name("stream-cli"),
    )
    .await?;
    let result = match cmd.action {
        StreamAction::Create(a) => create(&client, a).await,
        StreamAction::Publish(a) => publish(&client, a).await,
        StreamAction::Subscribe(a) => subscribe(&client, a).await,
        StreamAction::Snapshot(a) => client.snapshot(&a.stream, &a.filter).await.map(|s| {
            for m in &s.messages {
                println!(
                    "{}\t{}\t{}",
                    m.seq,
                    m.subject,
                    String::from_utf8_lossy(&m.body)
                );
            }
            eprintln!("follow with --start seq:{}", s.next_seq);
        }),
        StreamAction::Info(a) => client.info(a.stream.as_deref()).await.map(|v| {
            println!("{}", serde_json::to_string_pretty(&v).expect("json"));
        }),
        StreamAction::Delete(a) => match a.stream {
            Some(s) => client.delete(&s).await,
            None => Err(StreamError::Refused {
                code: 400,
                reason: "name the stream to delete".into(),
            }),
        },
    };
    super::queue::exit_code(result, &cmd.broker)
}

async fn create(c: &StreamClient, a: CreateArgs) -> Result<(), StreamError> {
    let mut o = StreamOptions {
        max_age_ms: a.max_age_ms,
        max_msgs: a.max_msgs,
        ..StreamOptions::default()
    };
    if a.max_bytes.is_some() {
        o.max_bytes = a.max_bytes;
    }
    if let Some(d) = &a.durability {
        o.durability = zmesh_log::Durability::parse(d).map_err(|e| StreamError::Refused {
            code: 400,
            reason: e.to_string(),
        })?;
    }
    let spec = c.create(&a.stream, Some(&o)).await?;
    println!("{}", serde_json::to_string_pretty(&spec).expect("json"));
    Ok(())
}

async fn publish(c: &StreamClient, a: PublishArgs) -> Result<(), StreamError> {
    let bodies: Vec<String> = if a.stdin {
        std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .collect()
    } else {
        a.bodies
    };
    let several = bodies.len() > 1;
    for (i, b) in bodies.into_iter().enumerate() {
        let seq = match &a.msg_id {
            Some(id) if several => {
                c.publish_with_id(&a.stream, &a.subject, format!("{id}-{i}"), b)
                    .await?
            }
            Some(id) => {
                c.publish_with_id(&a.stream, &a.subject, id.clone(), b)
                    .await?
            }
            None => c.publish(&a.stream, &a.subject, b).await?,
        };
        println!("stored {seq}");
    }
    Ok(())
}

async fn subscribe(c: &StreamClient, a: SubscribeArgs) -> Result<(), StreamError> {
    let start =
        Start::parse(&a.start).map_err(|reason| StreamError::Refused { code: 400, reason })?;
    let mut sub = c
        .subscribe(&a.stream, &a.filter, start, a.durable.as_deref())
        .await?;
    let mut n = 0u64;
    while a.count.is_none_or(|c| n < c) {
        let next = match a.idle {
            Some(s) => match tokio::time::timeout(Duration::from_secs_f64(s), sub.next()).await {
                Ok(m) => m,
                Err(_) => break,
            },
            None => sub.next().await,
        };
        let Some(m) = next else { break };
        n += 1;
        if a.verbose {
            println!(
                "{}\t{}\t{}",
                m.seq,
                m.subject,
                String::from_utf8_lossy(&m.body)
            );
        } else {
            println!("{}", String::from_utf8_lossy(&m.body));
        }
        sub.ack(m.seq);
    }
    // Give the last ack a moment to leave before the process exits.
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}
