//! tune-proto: rung's wire contract.
//!
//! The services of package `rung.v1` (see `proto/rung/v1/rung.proto`): `Trials` for trial
//! processes and external workers, `Agents` for worker agents, `Experiments` for the CLI. This
//! crate holds only the generated code and a few conversions; the server lives in `tune-server`, the
//! agent in `tune-worker-agent`.

#![allow(missing_docs)] // generated code

/// Package `rung.v1`.
pub mod v1 {
    tonic::include_proto!("rung.v1");
}

/// The bearer-token metadata key every call carries when the server has a token.
pub const AUTHORIZATION: &str = "authorization";

/// An endpoint for `url` (`http://` or `https://`), trusting the PEM CA certificate at
/// `ca_cert` for https; connecting gives up after 5 s. The error names the offending setting.
pub fn endpoint(url: &str, ca_cert: Option<&std::path::Path>) -> Result<tonic::transport::Endpoint, String> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "invalid URL {url:?}: expected http://host:port, or https://host:port with TLS"
        ));
    }
    let mut endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_timeout(std::time::Duration::from_secs(10));
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(path) = ca_cert {
            let pem = std::fs::read(path).map_err(|e| format!("cannot read --ca-cert {}: {e}", path.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| format!("TLS for {url}: {e}"))?;
    }
    Ok(endpoint)
}
