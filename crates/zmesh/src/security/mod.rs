//! Security: CURVE and PLAIN, key files, authentication policies, signed messages.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use zmesh::security::{AuthPolicy, KeyPair, Security};
//! use zmesh::{Socket, SocketOptions, SocketType};
//! let server_keys = KeyPair::load("keys/server.key_secret")?;
//! let policy = AuthPolicy::new().allowed_keys_dir("keys/clients")?;
//! let rep = Socket::new(
//!     SocketType::Rep,
//!     SocketOptions::default().security(Security::CurveServer { keys: server_keys, policy }),
//! )?;
//! rep.bind("tcp://0.0.0.0:5555").await?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod keys;
pub mod signing;
pub mod z85;

pub use auth::{AuthPolicy, Decision, Mechanism, PeerAuth, PeerCredentials, Refusal};
pub use keys::{Certificate, KeyError, KeyPair, PublicKey, SecretKey};
pub use signing::{SignatureError, Signer, SigningKey, Verifier, VerifyingKey};

/// How a socket secures its connections.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub enum Security {
    /// No encryption or authentication (NULL). The default, as in ZeroMQ.
    #[default]
    Null,
    /// NULL, but only peers the policy admits (address filtering).
    NullServer {
        /// Who may connect.
        policy: AuthPolicy,
    },
    /// CURVE server: encrypts every connection; admits clients per the policy.
    CurveServer {
        /// The server's long-term keys (clients need the public half).
        keys: KeyPair,
        /// Who may connect.
        policy: AuthPolicy,
    },
    /// CURVE client of a server whose public key we know.
    CurveClient {
        /// Our long-term keys (the server may check the public half).
        keys: KeyPair,
        /// The server's public key.
        server: PublicKey,
    },
    /// PLAIN server: user name and password, in clear; for trusted networks.
    PlainServer {
        /// Checks the credentials (needs a password file).
        policy: AuthPolicy,
    },
    /// PLAIN client.
    PlainClient {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}
