//! Placing one order: the ACME account (loaded from the state directory or created),
//! then order, challenge, CSR and download for one host, the certificate and key saved
//! beside the account. When to order, and what to do with the outcome, is the manager's
//! business ([`super`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

use super::{cert_paths, client, AcmeError};
use crate::config::{AcmeChallenge, AcmeConfig};
use crate::tls::certs::{self, CertError, LoadedCert};
use crate::tls::TlsRuntime;

/// The account in `state_dir/account.json`, or a new one (saved there) when absent.
pub(super) async fn load_or_create_account(
    acme: &AcmeConfig,
    state_dir: &Path,
    runtime: &Arc<TlsRuntime>,
) -> Result<Account, AcmeError> {
    let path = state_dir.join("account.json");
    let builder = || -> Result<_, AcmeError> {
        let client = client::CountingClient::new(acme.ca_root.as_deref(), runtime.clone())?;
        Ok(Account::builder_with_http(Box::new(client)))
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let credentials: AccountCredentials =
                serde_json::from_slice(&bytes).map_err(|err| AcmeError::Account {
                    path: path.clone(),
                    reason: err.to_string(),
                })?;
            Ok(builder()?.from_credentials(credentials).await?)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let contact = acme.email.as_ref().map(|email| format!("mailto:{email}"));
            let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
            let (account, credentials) = builder()?
                .create(
                    &NewAccount {
                        contact: &contacts,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    acme.directory.clone(),
                    None,
                )
                .await?;
            let json = serde_json::to_vec(&credentials).map_err(|err| AcmeError::Account {
                path: path.clone(),
                reason: err.to_string(),
            })?;
            certs::write_private(&path, &json)?;
            tracing::info!(path = %path.display(), "ACME account created");
            Ok(account)
        }
        Err(source) => Err(CertError::Io { path, source }.into()),
    }
}

/// Orders, validates and downloads a certificate for `host`, and saves it.
pub(super) async fn issue(
    account: &Account,
    runtime: &TlsRuntime,
    host: &str,
    challenge: AcmeChallenge,
    state_dir: &Path,
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<LoadedCert, AcmeError> {
    let identifiers = [Identifier::Dns(host.to_owned())];
    let mut new_order = NewOrder::new(&identifiers);
    if let Some(replaces) = replaces.clone() {
        new_order = new_order.replaces(replaces);
    }
    let mut order = match account.new_order(&new_order).await {
        Ok(order) => order,
        // A CA without ARI (or one that refuses the replacement): a plain order.
        Err(_) if replaces.is_some() => account.new_order(&NewOrder::new(&identifiers)).await?,
        Err(err) => return Err(err.into()),
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(AcmeError::Protocol(format!("authorization is {other:?}"))),
        }
        let kind = match challenge {
            AcmeChallenge::Http01 => ChallengeType::Http01,
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut handle = authorization
            .challenge(kind.clone())
            .ok_or_else(|| AcmeError::Protocol(format!("the CA offers no {kind:?} challenge")))?;
        let key_authorization = handle.key_authorization();
        match challenge {
            AcmeChallenge::Http01 => runtime.set_http01(
                host,
                handle.token.clone(),
                key_authorization.as_str().to_owned(),
            ),
            AcmeChallenge::TlsAlpn01 => {
                let digest = key_authorization.digest();
                runtime.set_alpn01(host, alpn_challenge_cert(host, digest.as_ref())?);
            }
        }
        handle.set_ready().await?;
    }
    let retries = RetryPolicy::new().timeout(Duration::from_secs(60));
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        return Err(AcmeError::Protocol(format!(
            "order is {status:?}, not ready"
        )));
    }
    let key_pair = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key_pair)?;
    order.finalize_csr(csr.der()).await?;
    let chain_pem = order.poll_certificate(&retries).await?;
    let key_pem = key_pair.serialize_pem();
    let (cert_path, key_path) = cert_paths(state_dir, host);
    let loaded = certs::parse_pair(
        chain_pem.as_bytes(),
        key_pem.as_bytes(),
        &cert_path,
        &key_path,
    )?;
    // The key first: a certificate on disk always has its key beside it.
    certs::write_private(&key_path, key_pem.as_bytes())?;
    certs::write_private(&cert_path, chain_pem.as_bytes())?;
    Ok(loaded)
}

/// The self-signed certificate answering a TLS-ALPN-01 challenge: `host` as its only
/// name and the key authorization's digest in the critical acmeIdentifier extension.
fn alpn_challenge_cert(
    host: &str,
    digest: &[u8],
) -> Result<Arc<rustls::sign::CertifiedKey>, AcmeError> {
    let key_pair = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key_pair)?;
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key_pair.serialize_der())
        .map_err(|err| AcmeError::Protocol(err.to_string()))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|err| AcmeError::Protocol(err.to_string()))?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(
        vec![cert.der().clone()],
        signing_key,
    )))
}
